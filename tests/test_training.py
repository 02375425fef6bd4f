"""Supervised training in Lightning: configs, data windows, overfitting, resume, DDP, bf16."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from chordkd.data.datamodule import LabelledDataModule
from chordkd.data.datasets import CONTEXT
from chordkd.errors import ConfigError
from chordkd.training.config import load_config, run_dir
from chordkd.training.fit import fit

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def tiny_config(corpus: Path, runs: Path, *extra: str):
    return load_config(
        EXPERIMENTS / "baseline.yaml",
        [
            f"data.train={corpus}", f"data.valid={corpus}", "data.test=null",
            "model.size=small", "data.batch_size=8", "data.pitch_shift=0",
            "optim.lr=3e-3", "optim.warmup_steps=0", "checkpoint.patience=0",
            f"runs_dir={runs}", "logger.kind=csv", "trainer.enable_progress_bar=false",
            "trainer.deterministic=true", "trainer.check_val_every_n_epoch=1", *extra,
        ],
    )


def test_config_typo_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch\b"):
        load_config(EXPERIMENTS / "baseline.yaml", ["trainer.max_epoch=3"])


def test_config_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.batch_size=many"])


def test_stage2_without_init_asks_for_it():
    with pytest.raises(ConfigError, match="'init' must be set"):
        load_config(EXPERIMENTS / "stage2.yaml")


def test_every_experiment_file_loads():
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        overrides = ["init=some.ckpt"] if path.name == "stage2.yaml" else []
        assert load_config(path, overrides).name


def test_same_config_gives_same_run_folder_and_changes_give_another(tmp_path):
    a = load_config(EXPERIMENTS / "baseline.yaml", [f"runs_dir={tmp_path}"])
    b = load_config(EXPERIMENTS / "baseline.yaml", [f"runs_dir={tmp_path}", "resume=never"])
    c = load_config(EXPERIMENTS / "baseline.yaml", [f"runs_dir={tmp_path}", "optim.lr=0.5"])
    assert run_dir(a) == run_dir(b) != run_dir(c)
    assert run_dir(a).name.startswith("baseline-btc-")


def _datamodule(corpus: Path, **kw) -> LabelledDataModule:
    dm = LabelledDataModule(str(corpus), valid=str(corpus), batch_size=4, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_window_features_equal_whole_song_features(tone_corpus):
    dm = _datamodule(tone_corpus, pitch_shift=0)
    ds = dm.train_set
    item = ds[1]
    batch = dm.on_after_batch_transfer({k: v[None] for k, v in item.items()}, 0)
    si, _ = ds.grid[1]
    song = ds.songs[si]
    # find the window's start frame from its (unshifted) labels
    whole = dm.cqt(torch.from_numpy(dm.train_set.audio.samples(song.id)))
    f0 = next(
        f for f in range(song.n_frames - ds.window + 1)
        if torch.allclose(whole[f : f + ds.window], batch["features"][0], atol=1e-4)
    )
    assert np.array_equal(batch["labels"][0].numpy(), song.labels[f0 : f0 + ds.window])
    assert batch["features"].shape == (1, ds.window, 144)
    assert CONTEXT * dm.settings.hop >= 16384  # the longest CQT kernel's half-width


def test_pitch_shift_moves_features_and_labels_together(tone_corpus):
    dm = _datamodule(tone_corpus, pitch_shift=0)
    item = dm.train_set[0]
    plain = dm.on_after_batch_transfer({k: v[None].clone() for k, v in item.items()}, 0)
    shifted_in = {k: v[None].clone() for k, v in item.items()}
    shifted_in["shift"] = torch.tensor([3])
    shifted = dm.on_after_batch_transfer(shifted_in, 0)
    assert torch.equal(shifted["features"][0, :, 6:], plain["features"][0, :, :-6])
    vocab = dm.vocab
    expected = [vocab.transpose(int(c), 3) for c in plain["labels"][0]]
    assert shifted["labels"][0].tolist() == expected


def test_epoch_windows_are_deterministic_and_change_between_epochs(tone_corpus):
    dm = _datamodule(tone_corpus, pitch_shift=5)
    ds = dm.train_set
    first = [ds[i]["audio"][:50].clone() for i in range(len(ds))]
    again = [ds[i]["audio"][:50] for i in range(len(ds))]
    ds.set_epoch(1)
    other = [ds[i]["audio"][:50] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def _final_val(run: Path) -> dict:
    import csv

    rows = list(csv.DictReader(open(next(run.glob("csv/version_*/metrics.csv")))))
    return [r for r in rows if r.get("val/frame_acc")][-1]


@pytest.mark.slow
@pytest.mark.parametrize("student", ["btc", "2e1d"])
def test_each_student_overfits_three_short_songs(tone_corpus, tmp_path, student):
    cfg = tiny_config(tone_corpus, tmp_path, f"student={student}", "trainer.max_epochs=30",
                      "data.batch_size=2", "trainer.check_val_every_n_epoch=10",
                      "trainer.deterministic=false")
    summary = fit(cfg)
    last = _final_val(Path(summary["run_dir"]))
    assert float(last["val/frame_acc"]) >= 0.9
    assert float(last["val/mirex"]) >= 0.9


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tone_corpus, tmp_path):
    # a constant learning rate, so stopping at epoch 1 does not change the schedule itself
    common = ("optim.schedule=constant",)
    whole = fit(tiny_config(tone_corpus, tmp_path, *common, "trainer.max_epochs=2",
                            f"run_dir={tmp_path}/a"))
    fit(tiny_config(tone_corpus, tmp_path, *common, "trainer.max_epochs=1", f"run_dir={tmp_path}/b"))
    resumed = fit(tiny_config(tone_corpus, tmp_path, *common, "trainer.max_epochs=2",
                              f"run_dir={tmp_path}/b", f"resume={tmp_path}/b/checkpoints/last.ckpt"))
    assert resumed["global_step"] == whole["global_step"] > 0
    a = torch.load(Path(tmp_path, "a/checkpoints/last.ckpt"), weights_only=True)["state_dict"]
    b = torch.load(Path(tmp_path, "b/checkpoints/last.ckpt"), weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_bf16_mixed_precision_runs_the_training_step_under_bf16_autocast(
    tone_corpus, tmp_path, monkeypatch
):
    from chordkd.training.student import StudentModule

    seen = []
    step = StudentModule.training_step

    def spy(self, batch, batch_idx):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     batch["features"].dtype, self(batch["features"]).dtype))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(StudentModule, "training_step", spy)
    summary = fit(tiny_config(tone_corpus, tmp_path, "trainer.max_epochs=1",
                              "trainer.precision=bf16-mixed", "trainer.accelerator=cpu"))
    assert summary["global_step"] == len(seen) > 0
    # autocast on, to bf16; the CQT features stay float32 (computed with autocast off)
    assert set(seen) == {(True, torch.bfloat16, torch.float32, torch.bfloat16)}
    assert np.isfinite(float(_final_val(Path(summary["run_dir"]))["val/mirex"]))


class RecordMetrics(L.Callback):
    """Writes each rank's logged validation metrics to a JSON file."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))


@pytest.mark.slow
def test_ddp_two_cpu_ranks_log_identical_mir_eval_metrics(tone_corpus, tmp_path):
    from chordkd.training.student import StudentModule
    from chordkd.training.validation import MirEvalValidation

    # 3 songs on 2 ranks: the distributed sampler pads by repeating one song
    dm = LabelledDataModule(str(tone_corpus), valid=str(tone_corpus), batch_size=4, pitch_shift=0)
    module = StudentModule(student="btc", size="small", optim={"schedule": "constant", "lr": 1e-3})
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
        callbacks=[MirEvalValidation(), RecordMetrics(str(tmp_path))],
    )
    trainer.fit(module, datamodule=dm)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    assert r0["val/songs"] == 3.0  # the padded duplicate is counted once
    assert {"val/root", "val/thirds", "val/triads", "val/sevenths", "val/tetrads",
            "val/majmin", "val/mirex"} <= set(r0)


@pytest.mark.slow
def test_cli_fit_with_ddp_runs_two_ranks_that_log_identical_validation_metrics(
    tone_corpus, tmp_path
):
    import os
    import subprocess
    import sys

    from conftest import SUBPROCESS_TIMEOUT

    probe = tmp_path / "ranks"
    probe.mkdir()
    cmd = [
        sys.executable, str(Path(__file__).with_name("rank_probe.py")), "fit",
        str(EXPERIMENTS / "baseline.yaml"),
        f"data.train={tone_corpus}", f"data.valid={tone_corpus}", "data.test=null",
        "model.size=small", "data.batch_size=2", "trainer.max_epochs=1", f"run_dir={tmp_path}/run",
        "logger.kind=csv", "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.check_val_every_n_epoch=1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                          env={**os.environ, "CHORDKD_RANK_PROBE": str(probe)})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["global_rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0]["pid"] != ranks[1]["pid"]  # two processes
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0  # the windows split between them
    (v0,), (v1,) = ranks[0]["val"], ranks[1]["val"]
    assert v0 == v1 and v0["val/songs"] == 3.0  # songs gathered from both ranks, de-duplicated
    assert {"val/root", "val/majmin", "val/mirex"} <= set(v0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == ranks[0]["steps"]
    assert Path(summary["best_checkpoint"]).is_file()
