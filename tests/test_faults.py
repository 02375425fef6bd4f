"""Fault injection: bad files, killed jobs and wrong checkpoints end in a reason, never a traceback.

One corpus holds every kind of bad input next to good songs; ``chordkd label``, ``chordkd fit``
and ``chordkd evaluate`` must each finish, name every bad file with its reason, and use every
good song. A training job killed with SIGKILL must resume to the weights of an uninterrupted
run. Checkpoints of the wrong vocabulary or cut short must give one clear error naming the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SUBPROCESS_TIMEOUT, write_tone_corpus
from test_training import EXPERIMENTS, tiny_config

from chordkd.chords import get_vocabulary
from chordkd.cli import main as cli_main
from chordkd.data.datamodule import load_songs
from chordkd.errors import CheckpointError
from chordkd.features import FeatureSettings
from chordkd.models.loading import load_model
from chordkd.models.official import OUTPUT_WEIGHT
from chordkd.training.fit import fit

SECONDS = 4.0
GOOD_TONES = ["tone_000", "tone_001", "tone_002"]
# Songs whose audio and labels are usable, though not plain: resampled, or N-padded/trimmed.
GOOD_ODD = ["stereo_8k", "lab_shorter_than_audio", "lab_longer_than_audio"]
GOOD = GOOD_TONES + GOOD_ODD
BAD_AUDIO = {  # song -> what the reason must say (file name and cause)
    "truncated": "truncated.flac: not readable as audio",
    "empty": "empty.wav: empty file (0 bytes)",
    "text": "text.wav: not readable as audio",
}
BAD_LABELS = {
    "unknown_label": "unknown_label.lab:2: ",
    "overlapping": "overlapping.lab:3: segment starting at 1.5 overlaps",
}


def _tone_song(folder: Path, name: str, seed: int, sr: int = 22050) -> tuple[np.ndarray, str]:
    """Samples (mono float32) and .lab text of one tone song, rendered at ``sr``."""
    staging = write_tone_corpus(folder / f".staging-{name}", songs=1, seconds=SECONDS, seed=seed,
                                sr=sr)
    samples, _ = sf.read(staging / "tone_000.wav", dtype="float32")
    return samples, (staging / "tone_000.lab").read_text()


def write_faulty_corpus(folder: Path) -> Path:
    """Three plain tone songs plus one song per fault, each with audio and a .lab beside it.

    Bad audio (its .lab is fine): a FLAC cut in half, a 0-byte .wav, a text file named .wav.
    Good audio with a bad .lab: an unknown quality (``C:foo``, line 2), overlapping segments
    (line 3 starts before line 2 ends). Good songs that need care: 8 kHz stereo audio, a .lab
    that stops 1.5 s before the audio ends, one that runs 2 s past it.
    """
    corpus = write_tone_corpus(folder / "corpus", songs=len(GOOD_TONES), seconds=SECONDS)
    scratch = folder / "scratch"

    samples, lab = _tone_song(scratch, "stereo_8k", seed=10, sr=8000)
    sf.write(corpus / "stereo_8k.wav", np.stack([samples, 0.5 * samples], axis=1), 8000)
    (corpus / "stereo_8k.lab").write_text(lab)

    samples, lab = _tone_song(scratch, "truncated", seed=11)
    sf.write(corpus / "full.flac", samples, 22050)
    data = (corpus / "full.flac").read_bytes()
    (corpus / "full.flac").unlink()
    (corpus / "truncated.flac").write_bytes(data[: len(data) // 2])
    (corpus / "truncated.lab").write_text(lab)
    (corpus / "empty.wav").write_bytes(b"")
    (corpus / "empty.lab").write_text(lab)
    (corpus / "text.wav").write_text("0.0\t4.0\tC:maj\nthis is a text file, not audio\n" * 20)
    (corpus / "text.lab").write_text(lab)

    for seed, name, text in (
        (12, "unknown_label", "0.0\t1.5\tC:maj\n1.5\t3.0\tC:foo\n3.0\t4.0\tN\n"),
        (13, "overlapping", "0.0\t1.5\tC:maj\n1.5\t3.0\tA:min\n1.5\t4.0\tF:maj\n"),
        (14, "lab_shorter_than_audio", "0.0\t1.5\tC:maj\n1.5\t2.5\tA:min\n"),
        (15, "lab_longer_than_audio", "0.0\t1.5\tC:maj\n1.5\t4.0\tA:min\n4.0\t6.0\tG:7\n"),
    ):
        samples, _ = _tone_song(scratch, name, seed=seed)
        sf.write(corpus / f"{name}.wav", samples, 22050)
        (corpus / f"{name}.lab").write_text(text)
    return corpus


@pytest.fixture(scope="module")
def teacher(fixture_btc) -> Path:
    return fixture_btc / "checkpoint.pt"


@pytest.fixture(scope="module")
def faulty_corpus(tmp_path_factory) -> Path:
    return write_faulty_corpus(tmp_path_factory.mktemp("faulty"))


def _reasons(entries: dict[str, str]) -> None:
    """Assert ``entries`` ({song: reason}) names exactly the bad songs, each with its reason."""
    expected = {**BAD_AUDIO, **BAD_LABELS}
    assert sorted(entries) == sorted(expected)
    for song, fragment in expected.items():
        assert fragment in entries[song], (song, entries[song])


# -- 1. a corpus of bad files ----------------------------------------------------------------


@pytest.mark.slow
def test_label_reports_each_unreadable_file_and_labels_every_readable_one(
    teacher, faulty_corpus, tmp_path, capsys
):
    cache = tmp_path / "cache"
    argv = ["label", "--teacher", str(teacher), "--audio", str(faulty_corpus), "--out", str(cache),
            "--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]
    assert cli_main(argv) == 0
    report = json.loads((cache / "label_report.json").read_text())
    # label reads audio only: songs with bad .lab files are good audio and are labelled
    assert sorted(report["labelled"]) == sorted(GOOD + list(BAD_LABELS))
    failed = {f["song"]: f["error"] for f in report["failed"]}
    assert sorted(failed) == sorted(BAD_AUDIO)
    for song, fragment in BAD_AUDIO.items():
        assert fragment in failed[song]
        assert str(faulty_corpus) in failed[song]  # the full path, not just the name
    assert f"failed {len(BAD_AUDIO)}" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_skips_each_bad_song_with_its_reason_and_trains_on_every_good_one(
    faulty_corpus, tmp_path
):
    summary = fit(tiny_config(faulty_corpus, tmp_path, "trainer.max_epochs=1",
                              "trainer.check_val_every_n_epoch=1"))
    saved = json.loads(Path(summary["run_dir"], "summary.json").read_text())
    for split in ("train", "valid"):
        _reasons(saved["skipped"][split])
        assert saved["songs"][split] == len(GOOD)
    assert Path(saved["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_evaluate_lists_each_bad_song_with_its_reason_and_scores_every_good_one(
    teacher, faulty_corpus, tmp_path
):
    out = tmp_path / "eval"
    argv = ["evaluate", str(teacher), "--data", str(faulty_corpus), "--out", str(out),
            "--names", "teacher", "--device", "cpu"]
    assert cli_main(argv) == 0
    overall = json.loads((out / "overall.json").read_text())
    _reasons({s["id"]: s["reason"] for s in overall["skipped"]})
    assert overall["models"]["teacher"]["n_songs"] == len(GOOD)
    assert sorted(p.stem for p in (out / "estimates" / "teacher").glob("*.lab")) == sorted(GOOD)
    report = (out / "report.md").read_text()
    assert f"Skipped songs ({len(BAD_AUDIO) + len(BAD_LABELS)})" in report
    # scored over the reference's span, and a reference never runs past its audio
    songs = json.loads((out / "songs.json").read_text())["models"]["teacher"]
    assert songs["lab_longer_than_audio"]["duration"] == pytest.approx(SECONDS)
    assert songs["lab_shorter_than_audio"]["duration"] == pytest.approx(2.5)


def _record(corpus: Path, song: str):
    records, _, _ = load_songs(corpus, FeatureSettings(), "large", with_labels=True)
    return next(r for r in records if r.id == song)


def test_labels_past_the_end_of_the_audio_are_dropped_from_targets_and_reference(faulty_corpus):
    rec = _record(faulty_corpus, "lab_longer_than_audio")
    assert rec.n_samples == SECONDS * 22050
    assert rec.label_names == ["C:maj", "A:min"]  # G:7 from 4 s to 6 s is after the audio
    assert rec.intervals[-1, 1] == SECONDS
    assert len(rec.labels) == rec.n_frames


def test_the_unannotated_end_of_a_short_lab_is_n_in_the_training_targets(faulty_corpus):
    rec = _record(faulty_corpus, "lab_shorter_than_audio")
    times = np.arange(rec.n_frames) * 2048 / 22050
    n_class = get_vocabulary("large").encode("N")
    assert (rec.labels[times >= 2.5] == n_class).all()
    assert (rec.labels[times < 2.5] != n_class).all()


# -- 2. kill -9 during training ---------------------------------------------------------------


def _fit_command(corpus: Path, run: Path) -> list[str]:
    """``chordkd fit`` of a tiny deterministic baseline: 10 epochs, a checkpoint after each
    (enough epochs that the kill after the first checkpoint always lands mid-run)."""
    return [
        sys.executable, "-m", "chordkd", "fit", str(EXPERIMENTS / "baseline.yaml"),
        f"data.train={corpus}", f"data.valid={corpus}", "data.test=null", "model.size=small",
        "data.batch_size=2", "data.pitch_shift=2", "optim.lr=3e-3", "optim.warmup_steps=0",
        "checkpoint.patience=0", "logger.kind=csv", "trainer.enable_progress_bar=false",
        "trainer.deterministic=true", "trainer.max_epochs=10",
        "trainer.check_val_every_n_epoch=1", f"run_dir={run}",
    ]


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_fit_killed_with_sigkill_then_rerun_ends_with_the_uninterrupted_runs_weights(tmp_path):
    corpus = write_tone_corpus(tmp_path / "corpus", songs=3, seconds=12.0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    # the uninterrupted run, alongside (the machine has two cores)
    whole_log = open(tmp_path / "whole.log", "w")
    whole = subprocess.Popen(_fit_command(corpus, tmp_path / "whole"), env=env,
                             stdout=whole_log, stderr=whole_log)
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(_fit_command(corpus, killed), env=env, stdout=log, stderr=log)
        try:
            # Polling a file another process writes: the kill must land once the first
            # checkpoint exists, while later epochs are still to come.
            deadline = time.monotonic() + 300
            while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=SUBPROCESS_TIMEOUT)
    log_text = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{log_text}"
    assert not (killed / "summary.json").exists()
    checkpoints = sorted((killed / "checkpoints").glob("*.ckpt"))
    assert last in checkpoints
    for ckpt in checkpoints:  # whatever the kill interrupted, no checkpoint is half-written
        assert "state_dict" in torch.load(ckpt, map_location="cpu", weights_only=True)

    rerun = subprocess.run(_fit_command(corpus, killed), env=env, capture_output=True, text=True,
                           timeout=SUBPROCESS_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    with whole_log:
        assert whole.wait(timeout=SUBPROCESS_TIMEOUT) == 0, (tmp_path / "whole.log").read_text()

    resumed_summary = json.loads((killed / "summary.json").read_text())
    whole_summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed_summary["global_step"] == whole_summary["global_step"] > 0
    a, b = _state_dict(last), _state_dict(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


# -- 3. checkpoints of the wrong vocabulary, and cut short -------------------------------------


@pytest.fixture(scope="module")
def majmin_release(teacher, tmp_path_factory) -> Path:
    """The fixture BTC in the official format with a fresh 25-class output layer (btc_model.pt's)."""
    ckpt = torch.load(teacher, map_location="cpu", weights_only=True)
    hidden = ckpt["model"][OUTPUT_WEIGHT].shape[1]
    layer = torch.nn.Linear(hidden, 25)
    ckpt["model"][OUTPUT_WEIGHT] = layer.weight.detach().clone()
    ckpt["model"][OUTPUT_WEIGHT.replace("weight", "bias")] = layer.bias.detach().clone()
    path = tmp_path_factory.mktemp("majmin") / "btc_model.pt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def truncated_checkpoint(teacher, tmp_path_factory) -> Path:
    """The first half of the fixture checkpoint's bytes, as a copy cut short leaves it."""
    data = teacher.read_bytes()
    path = tmp_path_factory.mktemp("truncated") / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _fit_argv(corpus: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", str(EXPERIMENTS / "baseline.yaml"), f"data.train={corpus}",
            f"data.valid={corpus}", "data.test=null", "model.size=small", f"runs_dir={runs}",
            "logger.kind=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
            *extra]


def test_fit_init_from_a_25_class_release_exits_2_naming_the_file_and_both_class_counts(
    majmin_release, tone_corpus, tmp_path, capsys
):
    assert cli_main(_fit_argv(tone_corpus, tmp_path, f"init={majmin_release}")) == 2
    err = capsys.readouterr().err
    assert f"{majmin_release} has 25 classes" in err
    assert "'large' needs 170" in err


@pytest.mark.slow
def test_fit_init_from_a_majmin_chordkd_checkpoint_exits_2_naming_the_file_and_both_class_counts(
    tone_corpus, tmp_path, capsys
):
    majmin = fit(tiny_config(tone_corpus, tmp_path, "vocabulary=majmin", "trainer.max_epochs=1",
                             f"run_dir={tmp_path}/majmin"))
    ckpt = Path(majmin["best_checkpoint"])
    assert cli_main(_fit_argv(tone_corpus, tmp_path, f"init={ckpt}")) == 2
    err = capsys.readouterr().err
    assert f"{ckpt} has 25 classes" in err
    assert "'large' needs 170" in err


@pytest.mark.slow
def test_stage1_on_a_cache_labelled_by_a_25_class_teacher_exits_2_naming_the_cache_and_counts(
    majmin_release, tone_corpus, tmp_path, capsys
):
    cache = tmp_path / "cache"
    argv = ["label", "--teacher", str(majmin_release), "--audio", str(tone_corpus), "--out",
            str(cache), "--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]
    assert cli_main(argv) == 0  # a majmin teacher is a valid teacher, for majmin students
    stage1 = _fit_argv(tone_corpus, tmp_path, "data.targets=teacher",
                       f"data.teacher_cache={cache}")
    assert cli_main(stage1) == 2
    err = capsys.readouterr().err
    assert f"{cache}: teacher has 25 classes, vocabulary 'large' has 170" in err


def test_a_truncated_checkpoint_is_a_checkpoint_error_naming_the_file(truncated_checkpoint):
    with pytest.raises(CheckpointError, match=rf"{truncated_checkpoint}: .*truncated"):
        load_model(truncated_checkpoint)


@pytest.mark.parametrize("command", ["label", "evaluate", "fit init", "fit resume"])
def test_each_command_given_a_truncated_checkpoint_exits_2_naming_the_file(
    command, truncated_checkpoint, tone_corpus, tmp_path, capsys
):
    argv = {
        "label": ["label", "--teacher", str(truncated_checkpoint), "--audio", str(tone_corpus),
                  "--out", str(tmp_path / "cache"), "--accelerator", "cpu"],
        "evaluate": ["evaluate", str(truncated_checkpoint), "--data", str(tone_corpus),
                     "--out", str(tmp_path / "eval"), "--device", "cpu"],
        "fit init": _fit_argv(tone_corpus, tmp_path, f"init={truncated_checkpoint}"),
        "fit resume": _fit_argv(tone_corpus, tmp_path, f"resume={truncated_checkpoint}"),
    }[command]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{truncated_checkpoint}: " in err and "truncated" in err
    assert "Traceback" not in err
