"""The transcription bench runs madmom's recognisers as madmom means them to run, scores
every system with the same mir_eval metrics, and says why when madmom is missing."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_BTC

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import transcription_peers  # noqa: E402

TEACHER = FIXTURE_BTC / "checkpoint.pt"


@pytest.fixture()
def one_song(tone_corpus: Path, tmp_path: Path) -> Path:
    """A folder with one 12-s song of sustained triads and its .lab."""
    for suffix in (".wav", ".lab"):
        shutil.copy(tone_corpus / f"tone_000{suffix}", tmp_path / f"tone_000{suffix}")
    return tmp_path


def test_madmom_segments_become_intervals_and_labels():
    segments = np.array([(0.0, 1.5, "A:maj"), (1.5, 3.0, "N")],
                        dtype=[("start", float), ("end", float), ("label", "U32")])
    intervals, labels = transcription_peers._segments(segments)
    np.testing.assert_array_equal(intervals, [[0.0, 1.5], [1.5, 3.0]])
    assert labels == ["A:maj", "N"]


@pytest.mark.skipif(transcription_peers.import_madmom()[0] is None, reason="madmom not installed")
def test_madmom_peers_recognise_planted_triads(one_song: Path):
    # wrong sample rate, channel handling or segment conversion would sink these scores
    result = transcription_peers.compare(one_song, {}, madmom=True, warm_up_seconds=2.0)
    assert set(result["rows"]) == {"madmom CNN+CRF", "madmom DeepChroma+CRF"}
    for row in result["rows"].values():
        assert row["metrics"]["root"] > 0.6
        assert row["x_real_time"] > 0


@pytest.mark.skipif(not TEACHER.is_file(), reason="shared BTC fixture not present")
def test_madmom_rows_are_skipped_with_the_reason_when_madmom_is_missing(one_song: Path, monkeypatch):
    real = transcription_peers.importlib.util.find_spec
    monkeypatch.setattr(transcription_peers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "madmom" else real(name, *a))
    result = transcription_peers.compare(one_song, {"chordkd fixture": str(TEACHER)}, warm_up_seconds=2.0)
    assert set(result["rows"]) == {"chordkd fixture"}
    assert set(result["skipped"]) == {"madmom CNN+CRF", "madmom DeepChroma+CRF"}
    assert all("not installed" in why for why in result["skipped"].values())
    assert set(result["rows"]["chordkd fixture"]["metrics"]) == set(result["metrics"])
    assert any("skipped" in line for line in transcription_peers.markdown_rows(result))
