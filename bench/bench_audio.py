"""Test audio for the benchmarks: chord-like tone mixtures with noise, written by soundfile.

Each song is a sequence of 2-second chords (three random notes over a bass, with a few
harmonics) plus low noise, so the CQT sees pitched, changing content rather than silence.
Deterministic (seeded); files are reused when they already exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the shared fixture folder sits beside the checkout (as in tests/conftest.py)
FIXTURE_TEACHER = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "btc_official_format" / "checkpoint.pt"


def make_tone_corpus(folder: Path, n_songs: int, seconds: float, sr: int = 22050) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_songs):
        path = folder / f"tones{i:03d}.wav"
        n = int(seconds * sr)
        if path.is_file() and sf.info(str(path)).frames == n:
            continue
        t = np.arange(n) / sr
        x = np.zeros(n)
        seg = 2 * sr
        for start in range(0, n, seg):
            sl = slice(start, min(start + seg, n))
            root = rng.integers(0, 12)
            notes = [root + 36, root + 48 + rng.integers(0, 12, size=3)]
            for midi in np.concatenate([[notes[0]], notes[1]]):
                f0 = 440 * 2 ** ((midi - 69) / 12)
                for h in (1, 2, 3):
                    x[sl] += np.sin(2 * np.pi * f0 * h * t[sl]) / h
        x = 0.1 * x / np.abs(x).max() + 0.003 * rng.standard_normal(n)
        sf.write(str(path), x.astype(np.float32), sr)
    return folder
