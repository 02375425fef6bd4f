"""Optional rendering of the same note events through FluidSynth and a SoundFont.

Needs pyfluidsynth (``import fluidsynth``) and the libfluidsynth shared library; neither is a
chordkd dependency. Each part plays on its own MIDI channel with a General MIDI program chosen
from its built-in timbre; drums play on channel 10 (index 9). The song's tuning offset is a
pitch bend on every melodic channel (default bend range +-2 semitones: 4096 per semitone).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from chordkd.errors import ChordkdError
from chordkd.synth.patterns import PARTS

FLUIDSYNTH_MISSING = "pyfluidsynth is not installed: pip install pyfluidsynth (needs libfluidsynth)"

# Built-in timbre -> General MIDI program (0-based).
GM_PROGRAMS = {
    "piano": 0, "pluck": 24, "organ": 16, "pad": 89, "lead": 80, "synth_bass": 38,
    "fm_ep": 5, "brass": 61, "mallet": 12,
}
GM_DRUM_KEYS = (36, 38, 42)  # kick, snare, closed hi-hat (order of patterns.DRUMS)
DRUM_CHANNEL = 9
BEND_PER_SEMITONE = 4096


def require_fluidsynth():
    """Import pyfluidsynth or raise ChordkdError with the one-line install hint."""
    try:
        import fluidsynth
    except (ImportError, OSError):  # OSError: the module is there but libfluidsynth is not
        raise ChordkdError(FLUIDSYNTH_MISSING) from None
    return fluidsynth


def check_soundfont(path: str | os.PathLike | None) -> Path:
    if path is None:
        raise ChordkdError("--renderer fluidsynth needs --soundfont PATH (an .sf2 file)")
    p = Path(path)
    if not p.is_file():
        raise ChordkdError(f"{p}: no such soundfont file")
    return p


def _midi_events(notes: dict[str, np.ndarray], drum_hits: dict[str, np.ndarray],
                 sr: int) -> list[tuple[int, int, int, int, int]]:
    """(sample, on?, channel, key, velocity) sorted by time, note-offs first at equal times.

    A note is cut where the same key restarts on its channel: MIDI cannot hold one key twice.
    """
    events = []
    for ch in range(len(PARTS)):
        sel = np.flatnonzero(notes["part"] == ch)
        for key in np.unique(notes["pitch"][sel]):
            idx = sel[notes["pitch"][sel] == key]
            idx = idx[np.argsort(notes["onset"][idx], kind="stable")]
            on = notes["onset"][idx]
            off = np.minimum(on + notes["duration"][idx], np.append(on[1:], np.inf))
            for j, t_on, t_off in zip(idx, on, off):
                vel = int(np.clip(round(notes["velocity"][j] * 110), 1, 127))
                events.append((round(t_on * sr), 1, ch, int(key), vel))
                events.append((round(t_off * sr), 0, ch, int(key), 0))
    for t, kind, v in zip(drum_hits["onset"], drum_hits["kind"], drum_hits["velocity"]):
        key = GM_DRUM_KEYS[int(kind)]
        events.append((round(t * sr), 1, DRUM_CHANNEL, key, int(np.clip(round(v * 127), 1, 127))))
        events.append((round((t + 0.1) * sr), 0, DRUM_CHANNEL, key, 0))
    return sorted(events)


def render_fluidsynth(notes: dict[str, np.ndarray], drum_hits: dict[str, np.ndarray],
                      n_samples: int, timbres: dict[str, str], tuning_cents: float,
                      soundfont: str | os.PathLike, sr: int, peak: float) -> np.ndarray:
    """Render note events with FluidSynth. Returns float32 ``[n_samples]`` with peak ``peak``."""
    fluidsynth = require_fluidsynth()
    sf_path = check_soundfont(soundfont)
    synth = fluidsynth.Synth(samplerate=float(sr))
    try:
        sfid = synth.sfload(str(sf_path))
        if sfid is None or sfid < 0:
            raise ChordkdError(f"{sf_path}: FluidSynth could not load this soundfont")
        bend = int(round(tuning_cents / 100 * BEND_PER_SEMITONE))
        for ch, part in enumerate(PARTS):
            synth.program_select(ch, sfid, 0, GM_PROGRAMS[timbres[part]])
            synth.pitch_bend(ch, bend)
        synth.program_select(DRUM_CHANNEL, sfid, 128, 0)  # GM percussion bank
        chunks, pos = [], 0
        for sample, on, ch, key, vel in _midi_events(notes, drum_hits, sr):
            sample = min(sample, n_samples)
            if sample > pos:
                chunks.append(np.asarray(synth.get_samples(sample - pos)))
                pos = sample
            if on:
                synth.noteon(ch, key, vel)
            else:
                synth.noteoff(ch, key)
        if n_samples > pos:
            chunks.append(np.asarray(synth.get_samples(n_samples - pos)))
    finally:
        synth.delete()
    stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2)  # interleaved int16 L/R
    mono = stereo.mean(axis=1)[:n_samples] / 32768.0
    top = float(np.abs(mono).max())
    if top > 0:
        mono *= peak / top
    return mono.astype(np.float32)
