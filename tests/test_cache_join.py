"""Joining training audio with a teacher cache checks who wrote it, from what, with what features.

Frame and class counts match for any teacher and for any audio of the same length; the
fingerprints the cache keeps per song (teacher checkpoint sha1, audio sha1, feature settings)
are what tell a cache of another teacher or of other audio.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone_corpus
from test_training import EXPERIMENTS

from chordkd.cli import main as cli_main
from chordkd.data.datamodule import TeacherDataModule
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError
from chordkd.features import FeatureSettings
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter, file_sha1


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_tone_corpus(tmp_path / "corpus", songs=3, seconds=3.0)


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    path = tmp_path / "teacher.ckpt"
    path.write_bytes(b"the teacher's weights")
    return path


def write_cache(corpus: Path, cache: Path, teachers: list[str], features: str | None = None) -> Path:
    """A top-8 cache of random logits for every song of ``corpus``, song i by ``teachers[i]``."""
    settings = FeatureSettings()
    rng = np.random.default_rng(0)
    with CacheWriter(cache) as writer:
        for song, teacher in zip(read_manifest(corpus), teachers):
            frames = settings.n_frames(sf.info(song.audio).frames)
            logits = rng.standard_normal((frames, 170)).astype(np.float32)
            logz = np.log(np.exp(logits).sum(-1))
            top = np.argsort(-logits, -1)[:, :8]
            values = np.take_along_axis(logits, top, -1) - logz[:, None]
            writer.write_logits(song.id, logz, values.astype(np.float16), top.astype(np.uint8),
                                170, audio=AudioFingerprint.of(song.audio), teacher=teacher,
                                features=features or settings.fingerprint())
    return cache


def _join(corpus: Path, cache: Path, **kwargs) -> TeacherDataModule:
    dm = TeacherDataModule(str(corpus), teacher_cache=str(cache), pitch_shift=0, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_a_cache_of_this_teacher_and_this_audio_joins(corpus, tmp_path, teacher_file):
    sha = file_sha1(teacher_file)
    cache = write_cache(corpus, tmp_path / "cache", [sha] * 3)
    dm = _join(corpus, cache, teacher=str(teacher_file))
    assert sorted(r.id for r in dm.train_set.songs) == ["tone_000", "tone_001", "tone_002"]


def test_a_cache_written_by_another_teacher_is_refused_naming_both(corpus, tmp_path, teacher_file):
    cache = write_cache(corpus, tmp_path / "cache", ["0" * 40] * 3)
    with pytest.raises(ChordkdError) as e:
        _join(corpus, cache, teacher=str(teacher_file))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(cache) in msg and str(teacher_file) in msg and "000000000000" in msg
    assert "data.allow_cache_mismatch=true" in msg


def test_a_cache_mixing_two_teachers_is_refused_naming_both_songs(corpus, tmp_path):
    cache = write_cache(corpus, tmp_path / "cache", ["a" * 40, "a" * 40, "b" * 40])
    with pytest.raises(ChordkdError, match=r"'tone_000' and 'tone_002' were labelled by "
                                           r"different teachers \(aaaaaaaaaaaa, bbbbbbbbbbbb\)"):
        _join(corpus, cache)


def test_a_cache_of_other_audio_of_the_same_length_is_refused_naming_the_file(corpus, tmp_path):
    cache = write_cache(corpus, tmp_path / "cache", ["a" * 40] * 3)
    other = tmp_path / "other"
    shutil.copytree(corpus, other)  # copy2 keeps size and mtime: unchanged songs still match
    song = read_manifest(other)[1]
    y, sr = sf.read(song.audio, dtype="float32")
    sf.write(song.audio, y[::-1].copy(), sr)  # same length, same frame count, other audio
    with pytest.raises(ChordkdError, match=r"song 'tone_001' was labelled from other audio than "
                                           r".*other/tone_001\.wav"):
        _join(other, cache)


def test_a_copied_corpus_with_new_mtimes_but_the_same_bytes_joins(corpus, tmp_path):
    cache = write_cache(corpus, tmp_path / "cache", ["a" * 40] * 3)
    other = tmp_path / "other"
    shutil.copytree(corpus, other, copy_function=shutil.copyfile)  # new mtimes
    assert len(_join(other, cache).train_set.songs) == 3


def test_a_cache_of_other_feature_settings_is_refused(corpus, tmp_path):
    cache = write_cache(corpus, tmp_path / "cache", ["a" * 40] * 3, features="0123456789ab")
    with pytest.raises(ChordkdError, match=r"feature settings 0123456789ab, this run computes "
                                           + FeatureSettings().fingerprint()):
        _join(corpus, cache)


def test_allow_cache_mismatch_uses_the_cache_and_warns(corpus, tmp_path, teacher_file, caplog):
    cache = write_cache(corpus, tmp_path / "cache", ["0" * 40] * 3)
    with caplog.at_level(logging.WARNING, logger="chordkd.data.datamodule"):
        dm = _join(corpus, cache, teacher=str(teacher_file), allow_cache_mismatch=True)
    assert len(dm.train_set.songs) == 3
    warned = [r.getMessage() for r in caplog.records if "allow_cache_mismatch" in r.getMessage()]
    assert len(warned) == 3 and all(str(teacher_file) in w for w in warned)


def test_fit_with_another_teachers_cache_exits_2_with_a_one_line_error(
    corpus, tmp_path, teacher_file, capsys
):
    cache = write_cache(corpus, tmp_path / "cache", ["0" * 40] * 3)
    argv = ["fit", str(EXPERIMENTS / "stage1.yaml"), f"data.train={corpus}", "data.valid=null",
            "data.test=null", f"data.teacher_cache={cache}", f"data.teacher={teacher_file}",
            f"runs_dir={tmp_path}/runs", "logger.kind=none", "trainer.max_epochs=1"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars, then the error
    assert err[-1].startswith(f"chordkd fit: error: {cache}: song 'tone_000' was labelled by")
    assert err[-1].endswith("relabel, or set data.allow_cache_mismatch=true")


def test_a_madmom_cache_on_this_runs_frame_grid_joins_when_madmom_is_the_teacher(corpus, tmp_path):
    teachers = pytest.importorskip("chordkd.teachers")
    pytest.importorskip("chordkd.teachers.madmom").import_madmom()
    identity = teachers.load_teacher("madmom:cnn").identity
    grid = FeatureSettings().fingerprint()  # madmom resampled onto chordkd's frames
    cache = write_cache(corpus, tmp_path / "cache", [identity] * 3,
                        features=f"madmom-cnn@44100Hz/grid-{grid}")
    dm = _join(corpus, cache, teacher="madmom:cnn")
    assert len(dm.train_set.songs) == 3


def test_a_waveform_teachers_cache_on_another_frame_grid_is_refused(corpus, tmp_path, teacher_file):
    other_grid = FeatureSettings(hop=1024).fingerprint()
    cache = write_cache(corpus, tmp_path / "cache", [file_sha1(teacher_file)] * 3,
                        features=f"waveform-22050Hz/grid-{other_grid}")
    with pytest.raises(ChordkdError, match="feature settings"):
        _join(corpus, cache, teacher=str(teacher_file))
