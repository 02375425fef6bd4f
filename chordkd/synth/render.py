"""The built-in synthesizer: note events -> mono float32 audio at 22,050 Hz, numpy only.

Each timbre renders one template per distinct pitch in a song (vectorised over samples and
partials), and every note is a slice of its pitch's template scaled by velocity and faded out
at note-off; so the cost grows with the number of distinct pitches, not of notes, and there is
no per-sample Python loop. Timbres:

- ``piano``: decaying inharmonic partials (stiff-string stretch ``f_k = k f sqrt(1 + B k^2)``),
  upper partials dying faster;
- ``pluck``: a plucked string as decaying partials with a pluck-position comb;
- ``organ``: additive drawbars (sub, 8', quint, 4', ...) read from a wavetable, slow tremolo;
- ``pad``: three detuned band-limited saws through a low-pass, slow attack;
- ``lead``: a low-passed square-ish wave with delayed vibrato (melody);
- ``synth_bass``: a low-passed saw with a decaying envelope;
- ``fm_ep``, ``brass``, ``mallet``: kept for the ``shifted`` preset (FM electric piano,
  brass whose brightness follows its envelope, marimba-like inharmonic bars).

Drums are noise and swept sines. The mix gets a random global tuning offset (the caller
passes it), part levels, a noise-decay reverb, a tone (brightness) tilt and a noise floor, and
is peak-normalised to a random level below full scale.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from scipy import signal

from chordkd.synth.patterns import DRUMS, PARTS

SR = 22050
TABLE = 2048  # wavetable length (one period)
TWO_PI = 2 * np.pi


def midi_to_hz(pitch: np.ndarray | int, cents: float = 0.0) -> np.ndarray:
    """Frequency in Hz of MIDI ``pitch`` with a tuning offset in cents (A4 = 440 Hz at 0)."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69 + cents / 100) / 12)


def _time(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / np.float32(SR)


def _partials(freqs: np.ndarray, amps: np.ndarray, decays: np.ndarray, n: int) -> np.ndarray:
    """Sum of decaying sines: ``sum_k a_k exp(-t / tau_k) sin(2 pi f_k t)``, float32 ``[n]``."""
    keep = (freqs < 0.45 * SR) & (amps > 1e-4)
    f, a, tau = freqs[keep], amps[keep], decays[keep]
    t = _time(n)
    phase = (TWO_PI * f).astype(np.float32)[:, None] * t[None, :]
    env = np.exp(-(1.0 / tau).astype(np.float32)[:, None] * t[None, :])
    return (a.astype(np.float32)[:, None] * env * np.sin(phase)).sum(axis=0)


def _table(amps: np.ndarray) -> np.ndarray:
    """One period of ``sum_k amps[k-1] sin(2 pi k x)`` (``TABLE + 1`` samples, wrapped)."""
    spec = np.zeros(TABLE // 2 + 1, dtype=np.complex128)
    k = min(len(amps), TABLE // 2 - 1)
    spec[1:k + 1] = -0.5j * TABLE * amps[:k]
    table = np.fft.irfft(spec, n=TABLE).astype(np.float32)
    return np.append(table, table[0])


def _read(table: np.ndarray, freq: float | np.ndarray, n: int, phase0: float = 0.0) -> np.ndarray:
    """Read a wavetable at ``freq`` Hz (a scalar, or ``[n]`` for vibrato), linear interpolation."""
    if np.ndim(freq) == 0:
        cycles = np.arange(n, dtype=np.float64) * (float(freq) / SR) + phase0
    else:
        cycles = np.cumsum(np.asarray(freq, dtype=np.float64) / SR) + phase0
    pos = (cycles % 1.0) * TABLE
    i = pos.astype(np.int32)
    frac = (pos - i).astype(np.float32)
    lo = table[i]
    return lo + frac * (table[i + 1] - lo)


def _attack(n: int, seconds: float) -> np.ndarray:
    a = max(1, int(seconds * SR))
    env = np.ones(n, dtype=np.float32)
    env[: min(a, n)] = np.linspace(0.0, 1.0, a, dtype=np.float32)[: min(a, n)]
    return env


def _lowpass_gains(freqs: np.ndarray, cutoff: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (freqs / cutoff) ** (2 * order))


class Timbre(abc.ABC):
    """A synthesised instrument (abstract: each subclass defines ``note``). ``note(freq, n)`` -> float32 ``[n]`` template (peak ~1).

    ``sustained`` timbres hold until note-off; others decay by themselves and are
    rendered only until inaudible (``max_seconds``). ``release`` is the note-off fade (s).
    """

    sustained = False
    release = 0.08

    def __init__(self, rng: np.random.Generator, brightness: float) -> None:
        self.brightness = brightness

    def max_seconds(self, freq: float) -> float:
        return 4.0

    @abc.abstractmethod
    def note(self, freq: float, n: int) -> np.ndarray:
        """The note's waveform template, float32 ``[n]``."""


class Piano(Timbre):
    release = 0.12

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.stiffness = rng.uniform(0.5e-4, 3e-4)
        self.tilt = 1.6 - 0.9 * brightness  # spectral slope: amplitude ~ k^-tilt
        self.sustain = rng.uniform(0.8, 1.6)

    def max_seconds(self, freq):
        return min(6.0, 5.0 * self._tau(freq))

    def _tau(self, freq):
        return float(np.clip(self.sustain * 2.0 * (261.6 / freq) ** 0.6, 0.3, 5.0))

    def note(self, freq, n):
        k = np.arange(1, 17, dtype=np.float64)
        freqs = k * freq * np.sqrt(1 + self.stiffness * k**2)
        amps = k ** -self.tilt
        decays = self._tau(freq) / (1 + 0.35 * (k - 1))
        return _partials(freqs, amps, decays, n) * _attack(n, 0.002)


class Pluck(Timbre):
    release = 0.06

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.position = rng.uniform(0.1, 0.3)  # pluck point along the string
        self.sustain = rng.uniform(0.6, 1.4)

    def max_seconds(self, freq):
        return min(4.0, 5.0 * self._tau(freq))

    def _tau(self, freq):
        return float(np.clip(self.sustain * 1.2 * (261.6 / freq) ** 0.5, 0.2, 3.0))

    def note(self, freq, n):
        k = np.arange(1, 15, dtype=np.float64)
        freqs = k * freq * np.sqrt(1 + 1e-5 * k**2)
        amps = np.abs(np.sin(np.pi * k * self.position)) / k ** (1.6 - 0.6 * self.brightness)
        decays = self._tau(freq) / (1 + 0.6 * (k - 1) ** 1.3)
        return _partials(freqs, amps, decays, n) * _attack(n, 0.001)


class Organ(Timbre):
    sustained = True
    release = 0.05
    # Drawbar pitches as multiples of half the fundamental: 16', 8', 5 1/3', 4', 2 2/3', 2', 1'.
    HARMONICS_OF_SUB = (1, 2, 3, 4, 6, 8, 16)

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        bars = rng.integers(0, 9, size=len(self.HARMONICS_OF_SUB)).astype(np.float64)
        bars[1] = max(bars[1], 6)  # the 8' (fundamental) always speaks
        bars[0] = min(bars[0], 5)
        bars[4:] *= 0.4 + 0.6 * brightness
        self.amps = np.zeros(16)
        for h, level in zip(self.HARMONICS_OF_SUB, bars):
            self.amps[h - 1] = level / 8.0
        self.tremolo = rng.uniform(0.0, 0.15), rng.uniform(4.5, 7.0)

    def note(self, freq, n):
        amps = self.amps * (np.arange(1, 17) * freq / 2 < 0.45 * SR)
        wave = _read(_table(amps), freq / 2, n)
        depth, rate = self.tremolo
        t = _time(n)
        return wave * _attack(n, 0.01) * (1 - depth + depth * np.sin(TWO_PI * rate * t))


class Pad(Timbre):
    sustained = True
    release = 0.3

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.cutoff = 600 + 2400 * brightness * rng.uniform(0.7, 1.0)
        self.detune = rng.uniform(5, 14)  # cents between voices
        self.attack = rng.uniform(0.05, 0.25)
        self.phases = rng.random(3)

    def note(self, freq, n):
        k = np.arange(1, 41)
        amps = (1.0 / k) * _lowpass_gains(k * freq, self.cutoff) * (k * freq < 0.45 * SR)
        table = _table(amps)
        out = np.zeros(n, dtype=np.float32)
        for v, cents in enumerate((-self.detune, 0.0, self.detune)):
            out += _read(table, freq * 2 ** (cents / 1200), n, self.phases[v])
        return out * _attack(n, self.attack)


class Lead(Timbre):
    sustained = True
    release = 0.05

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.cutoff = 1500 + 3000 * brightness
        self.vibrato = rng.uniform(0.0, 0.004), rng.uniform(4.5, 6.0)  # depth (ratio), Hz

    def note(self, freq, n):
        k = np.arange(1, 24)
        odd = np.where(k % 2 == 1, 1.0, 0.25)
        amps = odd / k * _lowpass_gains(k * freq, self.cutoff) * (k * freq < 0.45 * SR)
        t = _time(n)
        depth, rate = self.vibrato
        onset = np.clip((t - 0.2) / 0.3, 0, 1)  # vibrato sets in after the attack
        f = freq * (1 + depth * onset * np.sin(TWO_PI * rate * t))
        return _read(_table(amps), f, n) * _attack(n, 0.015)


class SynthBass(Timbre):
    release = 0.05

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.cutoff = rng.uniform(250, 500) + 500 * brightness
        self.decay = rng.uniform(0.6, 2.0)

    def max_seconds(self, freq):
        return 5 * self.decay

    def note(self, freq, n):
        k = np.arange(1, 40)
        amps = (1.0 / k) * _lowpass_gains(k * freq, self.cutoff) * (k * freq < 0.45 * SR)
        t = _time(n)
        return _read(_table(amps), freq, n) * np.exp(-t / self.decay) * _attack(n, 0.004)


class FMElectricPiano(Timbre):
    release = 0.1

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.index = rng.uniform(1.0, 2.5) * (0.6 + 0.6 * brightness)
        self.sustain = rng.uniform(0.8, 1.5)

    def max_seconds(self, freq):
        return min(5.0, 5.0 * self._tau(freq))

    def _tau(self, freq):
        return float(np.clip(self.sustain * 1.5 * (261.6 / freq) ** 0.5, 0.3, 4.0))

    def note(self, freq, n):
        t = _time(n)
        w = np.float32(TWO_PI * freq)
        index = self.index * np.exp(-t / 0.35)
        body = np.sin(w * t + index * np.sin(w * t))
        if 15 * freq < 0.45 * SR:  # the metallic tine, a 14:1 modulator, dies quickly
            body += 0.25 * np.exp(-t / 0.05) * np.sin(np.float32(14) * w * t)
        return body * np.exp(-t / self._tau(freq)) * _attack(n, 0.002)


class Brass(Timbre):
    sustained = True
    release = 0.08

    def __init__(self, rng, brightness):
        super().__init__(rng, brightness)
        self.attack = rng.uniform(0.03, 0.08)
        self.bright = 3 + 5 * brightness  # cutoff in harmonics at full breath

    def note(self, freq, n):
        k = np.arange(1, 30)
        ok = k * freq < 0.45 * SR
        dark = _table((1.0 / k) * _lowpass_gains(k, 1.5) * ok)
        bright = _table((1.0 / k) * _lowpass_gains(k, self.bright) * ok)
        env = _attack(n, self.attack)
        env[: int(0.15 * SR)] *= 1.0 + 0.3 * np.exp(-_time(min(n, int(0.15 * SR))) / 0.05)
        b = np.minimum(env, 1.0) ** 2  # brighter as the breath builds
        return env * ((1 - b) * _read(dark, freq, n) + b * _read(bright, freq, n))


class Mallet(Timbre):
    release = 0.1

    def max_seconds(self, freq):
        return min(3.0, 5.0 * self._tau(freq))

    def _tau(self, freq):
        return float(np.clip(0.8 * (261.6 / freq) ** 0.7, 0.15, 2.0))

    def note(self, freq, n):
        ratios = np.array([1.0, 3.98, 9.85])  # a tuned bar's modes
        amps = np.array([1.0, 0.35 * self.brightness + 0.1, 0.1])
        tau = self._tau(freq)
        return _partials(ratios * freq, amps, np.array([tau, tau / 4, tau / 10]), n) * _attack(n, 0.001)


TIMBRES: dict[str, type[Timbre]] = {
    "piano": Piano, "pluck": Pluck, "organ": Organ, "pad": Pad, "lead": Lead,
    "synth_bass": SynthBass, "fm_ep": FMElectricPiano, "brass": Brass, "mallet": Mallet,
}


# ----------------------------------------------------------------------------- drums

def _drum_samples(rng: np.random.Generator) -> list[np.ndarray]:
    """Kick (swept sine), snare (noise + body tone), closed hi-hat (high-passed noise)."""
    t = _time(int(0.4 * SR))
    f_end = rng.uniform(45, 60)
    sweep = f_end + rng.uniform(80, 140) * np.exp(-t / 0.035)
    kick = np.sin(TWO_PI * np.cumsum(sweep) / SR) * np.exp(-t / rng.uniform(0.07, 0.15))
    t = _time(int(0.3 * SR))
    noise = rng.standard_normal(len(t)).astype(np.float32)
    snare = (0.7 * np.diff(noise, prepend=0) * np.exp(-t / rng.uniform(0.06, 0.14))
             + 0.3 * np.sin(TWO_PI * rng.uniform(170, 220) * t) * np.exp(-t / 0.05))
    t = _time(int(0.12 * SR))
    noise = rng.standard_normal(len(t) + 2).astype(np.float32)
    hat = np.diff(noise, n=2)[: len(t)] * np.exp(-t / rng.uniform(0.015, 0.04))
    return [(x / np.abs(x).max()).astype(np.float32) for x in (kick, snare, hat)]


# ----------------------------------------------------------------------------- the mix

@dataclass(frozen=True)
class Mix:
    """Per-song mix settings (all drawn by :func:`draw_mix`)."""

    part_gain: tuple[float, float, float]  # bass, chords (per note), melody (per note)
    drum_gain: float
    brightness: float  # 0 dark .. 1 bright: timbre spectra and the final tone tilt
    reverb_seconds: float  # RT60
    reverb_wet: float
    noise_db: float  # noise floor relative to the peak
    peak: float  # final peak level (full scale 1.0)


def draw_mix(rng: np.random.Generator, melody_loud: bool) -> Mix:
    return Mix(
        part_gain=(rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.4),
                   rng.uniform(0.45, 0.7) if melody_loud else rng.uniform(0.25, 0.4)),
        drum_gain=rng.uniform(0.1, 0.3),
        brightness=rng.uniform(0.15, 0.95),
        reverb_seconds=rng.uniform(0.3, 1.2),
        reverb_wet=rng.uniform(0.05, 0.3),
        noise_db=rng.uniform(-70, -50),
        peak=rng.uniform(0.4, 0.95),
    )


def render_builtin(rng: np.random.Generator, notes: dict[str, np.ndarray],
                   drum_hits: dict[str, np.ndarray], n_samples: int,
                   timbres: dict[str, str], tuning_cents: float, mix: Mix) -> np.ndarray:
    """Render a song. Returns float32 ``[n_samples]``, peak ``mix.peak``.

    Args:
        notes: columns of :class:`~chordkd.synth.patterns.NoteEvents` (``arrays()``).
        drum_hits: ``onset`` (s), ``kind`` (index into DRUMS), ``velocity``.
        timbres: part name (``bass``, ``chords``, ``melody``) -> timbre name.
        tuning_cents: global tuning offset in cents.
    """
    out = np.zeros(n_samples, dtype=np.float32)
    for p, part in enumerate(PARTS):
        sel = notes["part"] == p
        if not sel.any():
            continue
        timbre = TIMBRES[timbres[part]](rng, mix.brightness)
        _render_part(out, timbre, notes["onset"][sel], notes["duration"][sel],
                     notes["pitch"][sel], notes["velocity"][sel] * mix.part_gain[p], tuning_cents)
    if len(drum_hits["onset"]):
        kit = _drum_samples(rng)
        for onset, kind, vel in zip(drum_hits["onset"], drum_hits["kind"], drum_hits["velocity"]):
            _add(out, kit[int(kind)] * np.float32(vel * mix.drum_gain), int(round(onset * SR)))
    out = room_reverb(rng, out, mix.reverb_seconds, mix.reverb_wet)
    # Tone: blend with a one-pole low-passed copy (dark songs lose their top octave).
    a = 0.75
    dark = signal.lfilter([1 - a], [1, -a], out).astype(np.float32)
    out = mix.brightness * out + (1 - mix.brightness) * dark
    peak = float(np.abs(out).max()) or 1.0
    out *= np.float32(mix.peak / peak)
    noise = signal.lfilter([1.0], [1, -0.9], rng.standard_normal(n_samples)).astype(np.float32)
    out += noise * np.float32(mix.peak * 10 ** (mix.noise_db / 20) / (noise.std() + 1e-12))
    # The noise floor may push a sample over the chosen peak, never over full scale.
    return np.clip(out, -0.999, 0.999).astype(np.float32)


def _render_part(out: np.ndarray, timbre: Timbre, onset: np.ndarray, duration: np.ndarray,
                 pitch: np.ndarray, gain: np.ndarray, tuning_cents: float) -> None:
    release = int(timbre.release * SR)
    fade = np.linspace(1.0, 0.0, release, dtype=np.float32) ** 2
    starts = np.round(onset * SR).astype(np.int64)
    lengths = np.maximum(1, np.round(duration * SR).astype(np.int64))
    for p in np.unique(pitch):
        idx = np.flatnonzero(pitch == p)
        freq = float(midi_to_hz(p, tuning_cents))
        need = int(lengths[idx].max()) + release
        n = need if timbre.sustained else min(need, int(timbre.max_seconds(freq) * SR))
        template = timbre.note(freq, n)
        template /= np.abs(template[: int(0.5 * SR)]).max() + 1e-9
        for j in idx:
            d = int(lengths[j])
            seg = template[: min(d + release, n)] * np.float32(gain[j])
            if d < len(seg):
                seg[d:] *= fade[: len(seg) - d]
            _add(out, seg, int(starts[j]))


def _add(out: np.ndarray, seg: np.ndarray, start: int) -> None:
    if start < 0:
        seg, start = seg[-start:], 0
    end = min(len(out), start + len(seg))
    if end > start:
        out[start:end] += seg[: end - start]


def room_reverb(rng: np.random.Generator, dry: np.ndarray, rt60: float, wet: float) -> np.ndarray:
    """A room: exponentially decaying noise, darkened, as an impulse response (unit energy)."""
    n = int(rt60 * SR)
    t = _time(n)
    ir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60)
    ir = signal.lfilter([0.3], [1, -0.7], ir).astype(np.float32)
    ir[: int(0.01 * SR)] = 0.0  # pre-delay
    ir /= np.sqrt((ir**2).sum()) + 1e-12
    tail = signal.oaconvolve(dry, ir)[: len(dry)].astype(np.float32)
    return dry + np.float32(wet) * tail


__all__ = ["DRUMS", "SR", "TIMBRES", "Mix", "Timbre", "draw_mix", "midi_to_hz", "render_builtin",
           "room_reverb"]
