"""Shared fixtures: tiny labelled corpora generated on the spot (no network, no real data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the checkout: ../shared
FIXTURE_BTC = SHARED / "fixtures" / "btc_official_format"
SUBPROCESS_TIMEOUT = 600  # seconds; every subprocess a test starts gets a limit

# Pitch classes of the chords the tone corpus uses.
TONE_CHORDS = {
    "C:maj": (0, 4, 7), "A:min": (9, 0, 4), "F:maj": (5, 9, 0), "G:7": (7, 11, 2, 5),
    "D:min": (2, 5, 9), "E:min": (4, 7, 11), "Bb:maj": (10, 2, 5), "F#:dim": (6, 9, 0),
}


def write_tone_corpus(folder: Path, songs: int, seconds: float, seed: int = 0,
                      segment: float = 1.5, sr: int = 22050) -> Path:
    """Songs of sustained chord tones (two octaves each, decaying) with matching .lab files.

    Deliberately plain: the fixture for tests that need learnable, exactly-labelled audio in
    a second. The realistic corpus is ``chordkd synth``.
    """
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    names = list(TONE_CHORDS)
    for i in range(songs):
        rng = np.random.default_rng([seed, i])
        n = int(seconds * sr)
        y = 0.002 * rng.standard_normal(n)
        lines, t0 = [], 0.0
        while t0 < seconds - 1e-9:
            t1 = min(t0 + segment, seconds)
            name = names[rng.integers(len(names))]
            a, b = int(round(t0 * sr)), int(round(t1 * sr))
            tt = np.arange(b - a) / sr
            for pc in TONE_CHORDS[name]:
                for octave in (3, 4):
                    f = 440.0 * 2 ** ((pc - 9) / 12 + octave - 4)
                    y[a:b] += 0.08 * np.sin(2 * np.pi * f * tt) * np.exp(-tt * 1.2)
            lines.append(f"{t0:.6f}\t{t1:.6f}\t{name}")
            t0 = t1
        sf.write(folder / f"tone_{i:03d}.wav", y.astype(np.float32), sr)
        (folder / f"tone_{i:03d}.lab").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    """Three 12-second labelled songs."""
    return write_tone_corpus(tmp_path_factory.mktemp("tones"), songs=3, seconds=12.0)


IN_CI = os.environ.get("CI", "").lower() == "true"

# Tests that need the shared BTC fixture: skipped where ../shared is missing, failed under CI.
needs_fixture = pytest.mark.usefixtures("fixture_btc")


def needs_module(name: str) -> pytest.MarkDecorator:
    """Skip a test whose optional test dependency ``name`` is not installed (never under CI,
    where the missing import then fails the test)."""
    import importlib.util

    missing = importlib.util.find_spec(name) is None
    return pytest.mark.skipif(missing and not IN_CI,
                              reason=f"{name} is not installed (pip install -e '.[test]')")


def shared_fixture(*parts: str) -> Path:
    """A file or folder under ``../shared/fixtures``: skips the test where it is missing, but
    fails it when ``CI=true``, so CI cannot pass by skipping every test that needs one."""
    path = SHARED.joinpath("fixtures", *parts)
    if not path.exists():
        msg = f"shared fixture {path} is not present beside the checkout"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing fixture is a failure, not a skip)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def fixture_btc() -> Path:
    return shared_fixture("btc_official_format")


def tuned_chroma(magnitudes: np.ndarray, tuning_cents: float) -> np.ndarray:
    """Fold CQT magnitudes ``[frames, 144]`` (24 bins/octave from C1) to ``[frames, 12]``.

    Each bin goes to the pitch class nearest to it once the song's tuning offset is removed,
    as a chroma with tuning estimation would do. The plain fold ``(b // 2) % 12`` is the
    special case of a +25 cent tuning: for a song tuned -30 cents it would credit most of each
    note to the pitch class below, measuring the tuning rather than the labels.
    """
    semitones = np.arange(magnitudes.shape[1]) / 2 - tuning_cents / 100
    pcs = np.floor(semitones + 0.5).astype(int) % 12
    chroma = np.zeros((magnitudes.shape[0], 12))
    np.add.at(chroma.T, pcs, magnitudes.T)
    return chroma


def chord_energy_fractions(audio: np.ndarray, intervals: np.ndarray, labels: list[str],
                           tuning_cents: float) -> list[float]:
    """Per labelled segment (N skipped): the share of its chroma energy held by the pitch
    classes of its chord (mir_eval's encoding), from chordkd's CQT front end at 22,050 Hz."""
    import mir_eval
    import torch

    from chordkd.features import LogCQT

    cqt = LogCQT()
    with torch.no_grad():
        mag = torch.exp(cqt(torch.from_numpy(audio))).numpy()
    chroma = tuned_chroma(mag, tuning_cents)
    centres = np.arange(len(chroma)) * cqt.settings.frame_seconds
    fractions = []
    for (start, end), label in zip(intervals, labels):
        inside = (centres >= start) & (centres < end)
        if label == "N" or not inside.any():
            continue
        root, bitmap, _ = mir_eval.chord.encode(label)
        energy = chroma[inside].sum(axis=0)
        fractions.append(float(energy[np.roll(bitmap, root).astype(bool)].sum() / energy.sum()))
    return fractions
