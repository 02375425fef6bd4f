"""``chordkd label``: the cache agrees with the teacher, survives kill -9, skips, reports bad audio."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SUBPROCESS_TIMEOUT, write_tone_corpus

from chordkd.audio import load_audio
from chordkd.cli import main as cli_main
from chordkd.errors import AudioError
from chordkd.features import LogCQT
from chordkd.inference import song_logits, songs_logits
from chordkd.labelling import label as label_module
from chordkd.labelling.label import label_corpus
from chordkd.labelling.teacher_cache import PAUSE_ENV, TeacherCache, cache_differences, file_sha1
from chordkd.models.loading import load_model

CPU = {"accelerator": "cpu", "devices": 1}


@pytest.fixture(scope="module")
def teacher(fixture_btc) -> Path:
    return fixture_btc / "checkpoint.pt"


def label(teacher, audio, out, **kw):
    return label_corpus(teacher, audio, out, num_workers=0, trainer_kwargs=CPU, **kw)


@pytest.fixture(scope="module")
def labelled(teacher, tmp_path_factory) -> tuple[Path, Path]:
    """(corpus, cache): three 4-second songs of chord tones, labelled once for the module."""
    root = tmp_path_factory.mktemp("labelled")
    corpus = write_tone_corpus(root / "audio", songs=3, seconds=4.0)
    label(teacher, corpus, root / "cache")
    return corpus, root / "cache"


@pytest.fixture
def corpus(labelled, tmp_path) -> Path:
    """A private copy of the labelled corpus (with its cache beside it, in ``../cache``)."""
    shutil.copytree(labelled[0], tmp_path / "audio", copy_function=shutil.copy2)
    shutil.copytree(labelled[1], tmp_path / "cache")
    return tmp_path / "audio"


@pytest.fixture
def one_song(tmp_path) -> Path:
    return write_tone_corpus(tmp_path / "one", songs=1, seconds=3.0)


def test_cached_argmax_is_the_teachers_own_prediction(teacher, labelled):
    corpus, cache_dir = labelled
    report = json.loads((cache_dir / "label_report.json").read_text())
    cache = TeacherCache(cache_dir)
    loaded = load_model(teacher)
    cqt = LogCQT(loaded.features)
    assert report["labelled"] == cache.song_ids == ["tone_000", "tone_001", "tone_002"]
    for song in cache.song_ids:
        feats = cqt(torch.from_numpy(load_audio(corpus / f"{song}.wav")))
        logits = song_logits(loaded.model, feats)
        out = cache.read(song)
        assert out.values.shape == (logits.shape[0], 8)
        assert np.array_equal(out.best_class(), logits.argmax(-1).numpy())
        np.testing.assert_allclose(out.logz, torch.logsumexp(logits, -1).numpy(), rtol=1e-5)


def test_windows_batched_across_songs_give_each_songs_own_logits(teacher):
    model = load_model(teacher).model
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 144, generator=g) - 5 for n in (300, 40, 108, 40, 163)]
    together = songs_logits(model, feats, batch_windows=7)
    for f, got in zip(feats, together):
        torch.testing.assert_close(got, song_logits(model, f), atol=1e-4, rtol=1e-4)


def test_report_counts_audio_and_is_written_to_the_cache(labelled, teacher):
    saved = json.loads((labelled[1] / "label_report.json").read_text())
    assert len(saved["labelled"]) == 3 and saved["skipped"] == [] and saved["failed"] == []
    assert saved["audio_seconds"] == pytest.approx(12.0)
    assert saved["x_real_time"] > 0 and saved["teacher"] == file_sha1(teacher)


def test_rerun_skips_labelled_songs_without_decoding_them(teacher, corpus, tmp_path, monkeypatch):
    before = TeacherCache(tmp_path / "cache").entry("tone_001")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached song was decoded again")

    monkeypatch.setattr(label_module, "load_audio", no_decoding)
    report = label(teacher, corpus, tmp_path / "cache")
    assert report.labelled == [] and report.skipped == ["tone_000", "tone_001", "tone_002"]
    assert TeacherCache(tmp_path / "cache").entry("tone_001") == before


def test_song_whose_audio_changed_is_relabelled(teacher, corpus, tmp_path):
    old = TeacherCache(tmp_path / "cache").entry("tone_001")
    y, sr = sf.read(corpus / "tone_001.wav")
    sf.write(corpus / "tone_001.wav", y[: len(y) // 2], sr)  # same name, other audio
    report = label(teacher, corpus, tmp_path / "cache")
    assert report.labelled == ["tone_001"] and report.skipped == ["tone_000", "tone_002"]
    new = TeacherCache(tmp_path / "cache").entry("tone_001")
    assert new.audio["sha1"] != old.audio["sha1"] and new.frames < old.frames
    assert not list((tmp_path / "cache").glob("journal-*"))  # folded into the index


def test_another_teacher_relabels_every_song(teacher, corpus, tmp_path):
    other = tmp_path / "other.pt"
    ckpt = torch.load(teacher, weights_only=True)
    ckpt["mean"] = ckpt["mean"] + 0.5
    torch.save(ckpt, other)
    report = label(other, corpus, tmp_path / "cache")
    assert len(report.labelled) == 3 and report.skipped == []


def with_bad_files(corpus: Path) -> Path:
    (corpus / "corrupt.wav").write_bytes(b"RIFF\x00\x01not really a wave file" * 10)
    (corpus / "empty.wav").write_bytes(b"")
    return corpus


def test_corrupt_and_empty_files_are_reported_and_the_rest_labelled(teacher, one_song, tmp_path):
    report = label(teacher, with_bad_files(one_song), tmp_path / "cache")
    assert report.labelled == ["tone_000"] == TeacherCache(tmp_path / "cache").song_ids
    assert [f["song"] for f in report.failed] == ["corrupt", "empty"]
    assert "corrupt.wav: not readable as audio" in report.failed[0]["error"]
    assert "empty.wav: empty file" in report.failed[1]["error"]
    saved = json.loads((tmp_path / "cache" / "label_report.json").read_text())
    assert [f["song"] for f in saved["failed"]] == ["corrupt", "empty"]
    assert "failed 2" in report.summary()


def test_strict_stops_on_the_first_bad_file(teacher, one_song, tmp_path):
    with pytest.raises(AudioError, match="corrupt.wav"):
        label(teacher, with_bad_files(one_song), tmp_path / "cache", strict=True)


def test_cli_labels_and_prints_a_summary(teacher, one_song, tmp_path, capsys):
    argv = ["label", "--teacher", str(teacher), "--audio", str(one_song), "--out",
            str(tmp_path / "cache"), "--topk", "4", "--num-workers", "0", "--accelerator", "cpu"]
    assert cli_main(argv) == 0
    assert "labelled 1 songs" in capsys.readouterr().out
    assert TeacherCache(tmp_path / "cache").entry("tone_000").k == 4


def test_cli_strict_exits_with_the_audio_error(teacher, one_song, tmp_path, capsys):
    argv = ["label", "--teacher", str(teacher), "--audio", str(with_bad_files(one_song)), "--out",
            str(tmp_path / "cache"), "--strict", "--num-workers", "0", "--accelerator", "cpu"]
    assert cli_main(argv) == 2
    assert "corrupt.wav" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_mid_labelling_then_rerun_equals_an_uninterrupted_run(teacher, tmp_path):
    audio = write_tone_corpus(tmp_path / "audio", songs=5, seconds=3.0)
    cache = tmp_path / "killed"
    cmd = [sys.executable, "-m", "chordkd", "label", "--teacher", str(teacher), "--audio",
           str(audio), "--out", str(cache), "--num-workers", "0", "--accelerator", "cpu"]
    # The writer stops after song 3's bytes reach the shard, before its journal line.
    env = {**os.environ, PAUSE_ENV: "2", "CHORDKD_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # blocks until the marker; EOF if the process died
            if PAUSE_ENV in line:
                break
        else:
            pytest.fail("labelling ended without reaching the pause "
                        f"(rc {proc.wait(timeout=SUBPROCESS_TIMEOUT)})")
        journaled = TeacherCache(cache).song_ids
        assert journaled == ["tone_000", "tone_001"]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert not (cache / "index.json").exists()  # nothing was consolidated
    rerun = subprocess.run(cmd, env={**os.environ, "CHORDKD_NO_PROGRESS": "1"},
                           capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert "labelled 3 songs, skipped 2" in rerun.stdout
    label(teacher, audio, tmp_path / "uninterrupted")
    assert cache_differences(cache, tmp_path / "uninterrupted") == []
    shutil.rmtree(tmp_path / "audio")


@pytest.mark.slow
def test_two_process_ddp_run_writes_the_same_cache_as_one_process(teacher, tmp_path):
    audio = write_tone_corpus(tmp_path / "audio", songs=3, seconds=3.0)
    cmd = [sys.executable, "-m", "chordkd", "label", "--teacher", str(teacher), "--audio",
           str(audio), "--out", str(tmp_path / "ddp"), "--num-workers", "0",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    run = subprocess.run(cmd, env={**os.environ, "CHORDKD_NO_PROGRESS": "1"},
                         capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("labelled 3 songs") == 1  # one merged summary, from rank 0
    assert len(list((tmp_path / "ddp").glob("shard-*-r1-*.bin"))) == 1  # rank 1 wrote its share
    label(teacher, audio, tmp_path / "single")
    assert cache_differences(tmp_path / "ddp", tmp_path / "single") == []
