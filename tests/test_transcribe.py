"""Audio -> labels with a real (random-weight) BTC in the official release format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURE_BTC, needs_fixture

from chordkd.annotations import read_jams, read_lab
from chordkd.chords import get_vocabulary
from chordkd.cli import main
from chordkd.errors import AudioError, CheckpointError, ChordkdError
from chordkd.models import ChordModel, build_student, load_official_btc
from chordkd.transcribe import collect_audio, transcribe, transcribe_song

SR = 22050
FIXTURE = FIXTURE_BTC / "checkpoint.pt"  # ../shared beside the checkout (tests/conftest.py)


def _tones(seconds: float, freqs=(261.63, 329.63, 392.0), seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (0.5 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _wav(path: Path, seconds: float = 3.0) -> Path:
    sf.write(path, _tones(seconds), SR)
    return path


@pytest.fixture(scope="module")
def official():
    return load_official_btc(FIXTURE)


@pytest.fixture(scope="module")
def small_majmin():
    return ChordModel(build_student("btc", "small", n_classes=25), mean=-5.0, std=2.0).eval()


@needs_fixture
def test_transcription_covers_the_audio_with_contiguous_intervals(official):
    audio = _tones(3.0)
    intervals, labels = transcribe(audio, official)
    assert intervals[0, 0] == 0.0
    assert intervals[-1, 1] == pytest.approx(len(audio) / SR)
    np.testing.assert_allclose(intervals[1:, 0], intervals[:-1, 1])
    vocab = get_vocabulary("large")
    assert all(vocab.decode(vocab.encode(label)) == label for label in labels)


@needs_fixture
def test_smoothing_never_adds_chord_changes(official):
    audio = _tones(4.0)
    raw = transcribe_song(audio, official)
    smooth = transcribe_song(audio, official, smoothing=0.999)
    assert len(smooth.intervals) <= len(raw.intervals)
    assert smooth.classes.shape == raw.classes.shape


def test_vocabulary_must_match_the_model_output(small_majmin):
    with pytest.raises(CheckpointError, match="25 classes; vocabulary 'large' has 170"):
        transcribe(_tones(1.0), small_majmin, vocabulary="large")


def test_majmin_model_gives_majmin_labels(small_majmin):
    _, labels = transcribe(_tones(2.0), small_majmin, vocabulary="majmin")
    assert set(labels) <= set(get_vocabulary("majmin").labels)


def test_stereo_array_is_rejected(small_majmin):
    with pytest.raises(AudioError, match="mono"):
        transcribe(np.zeros((2, SR), np.float32), small_majmin, vocabulary="majmin")


def test_two_files_with_one_stem_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ChordkdError, match="both be written as song.lab"):
        collect_audio([tmp_path / "song.wav", tmp_path / "a" / "song.flac"])


@needs_fixture
def test_cli_writes_a_lab_and_jams_per_file_and_skips_bad_ones(tmp_path, caplog):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    _wav(audio_dir / "first.wav", 3.0)
    _wav(audio_dir / "second.wav", 2.0)
    (audio_dir / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "labs"
    with caplog.at_level(logging.WARNING):
        rc = main(["transcribe", str(audio_dir), "--checkpoint", str(FIXTURE),
                   "--out", str(out), "--jams", "--smoothing", "0.9"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "first.jams", "first.lab", "second.jams", "second.lab"
    ]
    intervals, labels = read_lab(out / "first.lab")
    assert intervals[0, 0] == 0.0
    assert intervals[-1, 1] == pytest.approx(3.0, abs=1e-5)
    jams_intervals, jams_labels = read_jams(out / "first.jams")
    np.testing.assert_allclose(jams_intervals, intervals, atol=1e-6)
    assert jams_labels == labels
    assert "broken.wav" in caplog.text


@needs_fixture
def test_cli_strict_stops_at_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"nope")
    rc = main(["transcribe", str(bad), "--checkpoint", str(FIXTURE), "--out", str(tmp_path / "o"),
               "--strict"])
    assert rc == 2
    assert "broken.wav" in capsys.readouterr().err


@needs_fixture
def test_cli_refuses_a_checkpoint_of_another_vocabulary(tmp_path, capsys):
    rc = main(["transcribe", str(_wav(tmp_path / "a.wav")), "--checkpoint", str(FIXTURE),
               "--out", str(tmp_path / "o"), "--vocabulary", "majmin"])
    assert rc == 2
    assert "170" in capsys.readouterr().err
