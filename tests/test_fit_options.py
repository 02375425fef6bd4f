"""Documented options of ``chordkd fit`` and ``chordkd label``, each shown to take effect.

``--print-run-dir`` and ``--print-config`` are what every Makefile stage relies on; the others
are options the README documents (strict data, the plateau schedule, the TensorBoard logger,
DataLoader workers, full-logit caches, W&B mode precedence, config ranges).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SUBPROCESS_TIMEOUT, write_tone_corpus
from test_training import EXPERIMENTS, tiny_config

from chordkd.cli import main as cli_main
from chordkd.errors import ChordkdError
from chordkd.labelling.teacher_cache import TeacherCache
from chordkd.training.config import load_config, run_dir
from chordkd.training.fit import _logger, fit, wandb_mode

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return write_tone_corpus(tmp_path_factory.mktemp("corpus"), songs=2, seconds=5.0)


# -- what the Makefile reads --------------------------------------------------------------------


def test_print_run_dir_prints_only_the_run_folder_on_stdout(tmp_path):
    argv = [sys.executable, "-m", "chordkd", "fit", "experiments/stage1.yaml", "student=2e1d",
            f"runs_dir={tmp_path}", "--print-run-dir"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=SUBPROCESS_TIMEOUT).stdout
    (line,) = out.splitlines()  # $(...) in the Makefile takes all of stdout
    folder = Path(line)
    assert folder.parent == tmp_path
    assert folder.name.startswith("stage1-2e1d-") and len(folder.name) == len("stage1-2e1d-") + 8
    assert not folder.exists()  # printing creates nothing
    other = subprocess.run(argv[:-1] + ["optim.lr=1e-3", "--print-run-dir"], cwd=REPO,
                           capture_output=True, text=True, check=True,
                           timeout=SUBPROCESS_TIMEOUT).stdout.strip()
    assert Path(other).parent == tmp_path and other != line  # another config, another folder


def test_print_config_prints_the_resolved_yaml_with_parents_and_overrides(capsys):
    assert cli_main(["fit", str(EXPERIMENTS / "stage2.yaml"), "init=x.ckpt", "kd.alpha=0.5",
                     "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "stage2" and printed["init"] == "x.ckpt"
    assert printed["kd"] == {"enabled": True, "alpha": 0.5, "temperature": 3.0, "rule": "paper",
                             "theta": 0.9, "confidence": "tempered"}
    assert printed["model"]["size"] == "small"  # from demo.yaml, the parent
    assert printed["data"]["batch_size"] == 16 and printed["data"]["train"] == "data/realistic/train"


def test_print_config_shows_an_unset_mandatory_init_which_the_run_folder_still_needs(capsys):
    assert cli_main(["fit", str(EXPERIMENTS / "stage2.yaml"), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["init"] == "???"
    # the run folder is a hash of the whole config: without init there is none to print
    assert cli_main(["fit", str(EXPERIMENTS / "stage2.yaml"), "--print-run-dir"]) == 2
    assert "'init' must be set" in capsys.readouterr().err


def test_a_value_out_of_range_is_a_one_line_error_naming_the_key(capsys):
    assert cli_main(["fit", str(EXPERIMENTS / "baseline.yaml"), "data.batch_size=-3"]) == 2
    assert capsys.readouterr().err == ("chordkd fit: error: config key 'data.batch_size': -3 "
                                       "must be >= 1\n")


@pytest.mark.parametrize("override, key", [
    ("optim.lr=0", "optim.lr"), ("kd.temperature=-1", "kd.temperature"),
    ("data.pitch_shift=13", "data.pitch_shift"), ("optim.plateau_factor=1", "optim.plateau_factor"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
])
def test_other_out_of_range_values_name_their_key(override, key):
    from chordkd.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^config key '{key}': .* must be"):
        load_config(EXPERIMENTS / "baseline.yaml", [override])


# -- strict data ---------------------------------------------------------------------------------


def test_fit_with_strict_data_stops_at_the_first_bad_file_naming_it(small_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in small_corpus.iterdir():
        (corpus / f.name).symlink_to(f)
    (corpus / "broken.wav").write_bytes(b"RIFF but not audio")
    (corpus / "broken.lab").write_text("0\t1\tC:maj\n")
    cfg = tiny_config(corpus, tmp_path, "data.strict=true", "trainer.max_epochs=1")
    with pytest.raises(ChordkdError, match=r"broken\.wav"):
        fit(cfg)
    assert not (run_dir(cfg) / "checkpoints").exists()  # nothing was trained
    # without strict the same corpus trains on the good songs and names the bad one
    lenient = fit(tiny_config(corpus, tmp_path, "trainer.max_epochs=1",
                              "model.overrides.num_layers=1"))
    assert lenient["songs"]["train"] == 2
    assert "broken.wav" in lenient["skipped"]["train"]["broken"]


# -- plateau schedule, TensorBoard, DataLoader workers ------------------------------------------


def _plateau(corpus: Path, run: Path, *extra: str):
    # lr so small that nothing improves: every validation after the first is a plateau
    return tiny_config(corpus, run.parent, "optim.schedule=plateau", "optim.lr=1e-20",
                       "optim.plateau_patience=0", "optim.plateau_factor=0.5",
                       "trainer.max_epochs=3", "model.overrides.num_layers=1", f"run_dir={run}",
                       *extra)


@pytest.fixture(scope="module")
def tensorboard_run(small_corpus, tmp_path_factory) -> Path:
    """Three epochs with the plateau schedule, TensorBoard and two DataLoader workers."""
    run = tmp_path_factory.mktemp("tb") / "run"
    fit(_plateau(small_corpus, run, "logger.kind=tensorboard", "data.num_workers=2"))
    return run


@pytest.mark.slow
def test_plateau_schedule_halves_the_lr_after_each_validation_without_improvement(tensorboard_run):
    ckpt = torch.load(tensorboard_run / "checkpoints" / "last.ckpt", weights_only=True)
    (sched,) = ckpt["lr_schedulers"]
    assert sched["num_bad_epochs"] == 0 and sched["factor"] == 0.5
    (group,) = ckpt["optimizer_states"][0]["param_groups"]
    # validations after epochs 1 and 2 did not improve on epoch 0's: two halvings
    assert group["lr"] == pytest.approx(1e-20 / 4, rel=1e-9)


@pytest.mark.slow
def test_tensorboard_logger_writes_validation_metrics_for_every_epoch(tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tensorboard_run / "tensorboard").rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/mirex", "val/root", "val/majmin", "train/loss_epoch"} <= tags
    assert len(acc.Scalars("val/mirex")) == 3


@pytest.mark.slow
def test_dataloader_workers_train_the_same_weights_as_the_main_process(
    tensorboard_run, small_corpus, tmp_path
):
    single = fit(_plateau(small_corpus, tmp_path / "single", "logger.kind=csv",
                          "data.num_workers=0"))
    a = torch.load(tensorboard_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(Path(single["run_dir"]) / "checkpoints" / "last.ckpt",
                   weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


# -- W&B mode ------------------------------------------------------------------------------------


def test_wandb_mode_config_wins_over_the_environment_which_wins_over_the_default():
    assert wandb_mode("online", {"WANDB_MODE": "offline"}) == "online"
    assert wandb_mode("disabled", {"WANDB_MODE": "online"}) == "disabled"
    assert wandb_mode(None, {"WANDB_MODE": "online"}) == "online"
    assert wandb_mode(None, {}) == "offline"


def test_an_explicit_online_mode_reaches_wandb_despite_the_makefiles_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # what `export WANDB_MODE ?= offline` leaves
    cfg = load_config(EXPERIMENTS / "baseline.yaml", ["logger.mode=online"])
    logger = _logger(cfg, tmp_path)  # builds the logger; nothing is sent until it is used
    assert os.environ["WANDB_MODE"] == "online"
    assert logger._wandb_init["mode"] == "online" and not logger._offline


def test_without_a_configured_mode_the_environment_decides(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = _logger(load_config(EXPERIMENTS / "baseline.yaml"), tmp_path)
    assert logger._wandb_init["mode"] == "offline" and logger._offline


# -- full-logit caches through the CLI -----------------------------------------------------------


@pytest.mark.slow
def test_label_topk_0_from_the_cli_caches_every_class_and_agrees_with_top_8(
    fixture_btc, small_corpus, tmp_path
):
    teacher = fixture_btc / "checkpoint.pt"
    common = ["label", "--teacher", str(teacher), "--audio", str(small_corpus), "--num-workers",
              "0", "--accelerator", "cpu", "--devices", "1"]
    assert cli_main([*common, "--out", str(tmp_path / "full"), "--topk", "0"]) == 0
    assert cli_main([*common, "--out", str(tmp_path / "top8"), "--topk", "8"]) == 0
    full, top8 = TeacherCache(tmp_path / "full"), TeacherCache(tmp_path / "top8")
    for song in full.song_ids:
        f, t = full.read(song), top8.read(song)
        assert full.entry(song).k == 0 and f.values.shape == (full.frames(song), 170)
        log_probs = np.asarray(f.values, dtype=np.float64)
        np.testing.assert_allclose(np.logaddexp.reduce(log_probs, axis=-1), 0, atol=5e-3)
        best = np.argsort(-log_probs, axis=-1, kind="stable")[:, :1]
        np.testing.assert_array_equal(best[:, 0], np.asarray(t.indices)[:, 0])
        np.testing.assert_allclose(np.take_along_axis(log_probs, np.asarray(t.indices, np.int64), -1),
                                   np.asarray(t.values, np.float64), atol=2e-2)
