"""Sampled General MIDI instruments: note events -> mono audio through a SoundFont.

The synthesizer is ``tinysoundfont`` (its wheel contains the C synthesizer; no system
library), and the default SoundFont is ``TimGM6mb.sf2``, which ships inside ``pretty_midi``.
Each channel plays one GM program; the song's tuning offset is a per-channel tuning; the dry
mix goes through a room (:func:`chordkd.synth.render.room_reverb`, a convolution with a
synthetic impulse response) and is peak-normalised. A fresh synthesizer renders each song, so
a song's audio depends on nothing but its events (byte-identical in any order or process).

>>> audio = render_events(events, {0: Channel(0), 1: Channel(33)}, n_samples=22050 * 10,
...                       tuning_cents=0.0, rng=np.random.default_rng(0))
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordkd.errors import ChordkdError
from chordkd.synth.gm import DRUM_BANK
from chordkd.synth.render import SR, room_reverb

TINYSOUNDFONT_MISSING = ("tinysoundfont is not installed: pip install --no-deps tinysoundfont "
                         "(its pyaudio dependency is for playback only)")
DRUM_CHANNEL = 9
MAX_VOICES = 96


@dataclass(frozen=True)
class Channel:
    """One MIDI channel: a GM ``program`` (0-based; the kit number when ``drums``) and its
    volume ``gain`` (0..1, MIDI controller 7)."""

    program: int
    drums: bool = False
    gain: float = 0.8


def default_soundfont() -> Path:
    """``TimGM6mb.sf2`` inside the installed ``pretty_midi`` package."""
    try:
        import pretty_midi
    except ImportError:
        raise ChordkdError("pretty_midi is not installed (it carries the default soundfont): "
                           "pip install pretty_midi, or pass --soundfont FILE.sf2") from None
    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def require_tinysoundfont():
    """Import tinysoundfont or raise ChordkdError with the one-line install hint."""
    try:
        import tinysoundfont
    except ImportError:
        raise ChordkdError(TINYSOUNDFONT_MISSING) from None
    return tinysoundfont


def check_soundfont(path: str | os.PathLike | None) -> Path:
    """The SoundFont to use (``None``: the default); ChordkdError naming the file if it is
    missing or cannot be loaded (corrupt, truncated, not SoundFont 2)."""
    p = default_soundfont() if path is None else Path(path)
    if not p.is_file():
        raise ChordkdError(f"{p}: no such soundfont file")
    _soundfont_bytes(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
    return p


@functools.lru_cache(maxsize=4)
def _soundfont_bytes(path: str, size: int, mtime_ns: int) -> bytes:
    """The file's bytes, once per process, after a trial load (size and mtime key the cache)."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ChordkdError(f"{path}: not a SoundFont 2 file (no RIFF sfbk header)")
    synth = require_tinysoundfont().Synth(samplerate=SR)
    try:
        synth.sfload(data)
    except Exception as e:  # tinysoundfont raises RuntimeError for any unreadable file
        raise ChordkdError(f"{path}: corrupt soundfont, tinysoundfont cannot load it ({e})") from None
    return data


def _load(path: str | os.PathLike | None):
    p = check_soundfont(path)
    st = p.stat()
    data = _soundfont_bytes(str(p.resolve()), st.st_size, st.st_mtime_ns)
    synth = require_tinysoundfont().Synth(samplerate=SR)
    return synth, synth.sfload(data, max_voices=MAX_VOICES)


def humanise(rng: np.random.Generator, events: dict[str, np.ndarray], timing_ms: float = 8.0,
             velocity_spread: float = 0.12) -> dict[str, np.ndarray]:
    """Jitter onsets (Gaussian, ``timing_ms`` standard deviation, clipped at 2.5 sigma, never
    before 0) and velocities (log-normal, ``velocity_spread``); durations keep their ends."""
    n = len(events["onset"])
    jitter = np.clip(rng.standard_normal(n), -2.5, 2.5) * timing_ms / 1000
    onset = np.maximum(0.0, events["onset"] + jitter)
    end = events["onset"] + events["duration"]
    velocity = np.clip(events["velocity"] * np.exp(velocity_spread * rng.standard_normal(n)),
                       0.05, 1.0)
    return dict(events, onset=onset, duration=np.maximum(0.02, end - onset), velocity=velocity)


def _midi_events(events: dict[str, np.ndarray]) -> list[tuple[int, int, int, int, int]]:
    """(sample, on?, channel, key, velocity) sorted by time, note-offs first at equal times.

    A note is cut where the same key restarts on its channel: MIDI cannot hold one key twice.
    """
    out = []
    onsets = np.round(events["onset"] * SR).astype(np.int64)
    offsets = np.round((events["onset"] + events["duration"]) * SR).astype(np.int64)
    for ch in np.unique(events["channel"]):
        sel = np.flatnonzero(events["channel"] == ch)
        for key in np.unique(events["pitch"][sel]):
            idx = sel[events["pitch"][sel] == key]
            idx = idx[np.argsort(onsets[idx], kind="stable")]
            on = onsets[idx]
            off = np.maximum(on + 1, np.minimum(offsets[idx], np.append(on[1:], np.iinfo(np.int64).max)))
            vel = np.clip(np.round(events["velocity"][idx] * 127), 1, 127).astype(int)
            for a, b, v in zip(on.tolist(), off.tolist(), vel.tolist()):
                out.append((a, 1, int(ch), int(key), v))
                out.append((b, 0, int(ch), int(key), 0))
    out.sort()
    return out


def render_events(
    events: dict[str, np.ndarray],
    channels: dict[int, Channel],
    n_samples: int,
    tuning_cents: float,
    rng: np.random.Generator,
    soundfont: str | os.PathLike | None = None,
    reverb_seconds: tuple[float, float] = (0.4, 1.6),
    reverb_wet: tuple[float, float] = (0.08, 0.35),
    peak: tuple[float, float] = (0.4, 0.9),
) -> np.ndarray:
    """Play note events through a SoundFont. Returns float32 ``[n_samples]`` mono at 22,050 Hz.

    Args:
        events: columns ``onset`` and ``duration`` (seconds), ``pitch`` (MIDI key),
            ``velocity`` (0..1], ``channel`` (a key of ``channels``), one entry per note.
        channels: MIDI channel (0-15) -> its :class:`Channel`; drums belong on channel 9.
        tuning_cents: global tuning offset of every pitched channel.
        rng: draws the room (RT60 and wet level in the given ranges) and the final peak.
    """
    synth, sfid = _load(soundfont)
    for ch, spec in sorted(channels.items()):
        if spec.drums:
            synth.program_select(ch, sfid, DRUM_BANK, spec.program, is_drums=True)
        else:
            synth.program_select(ch, sfid, 0, spec.program)
            synth.set_tuning(ch, tuning_cents / 100)
        synth.control_change(ch, 7, int(np.clip(round(spec.gain * 127), 0, 127)))
    stereo = np.zeros((n_samples, 2), dtype=np.float32)
    flat = stereo.reshape(-1)
    pos = 0
    for sample, on, ch, key, vel in _midi_events(events):
        sample = min(sample, n_samples)
        if sample > pos:
            flat[2 * pos:2 * sample] = np.frombuffer(synth.generate(sample - pos), np.float32)
            pos = sample
        if on:
            synth.noteon(ch, key, vel)
        else:
            synth.noteoff(ch, key)
    if n_samples > pos:
        flat[2 * pos:] = np.frombuffer(synth.generate(n_samples - pos), np.float32)
    mono = stereo.mean(axis=1)
    mono = room_reverb(rng, mono, float(rng.uniform(*reverb_seconds)),
                       float(rng.uniform(*reverb_wet)))
    top = float(np.abs(mono).max())
    level = float(rng.uniform(*peak))
    if top > 0:
        mono *= np.float32(level / top)
    return np.clip(mono, -0.999, 0.999).astype(np.float32)
