"""Learning-rate schedules, read off a real Trainer: warm-up from a start factor, cosine down to
optim.min_lr, warm-up in whole epochs, and the plateau schedule counting validations."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import write_tone_corpus

from chordkd.data.datamodule import LabelledDataModule
from chordkd.errors import ConfigError
from chordkd.training.config import load_config
from chordkd.training.student import StudentModule

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # 3 songs of 129 frames: 2 windows of 108 each, 6 windows, 3 batches of 2 per epoch
    return write_tone_corpus(tmp_path_factory.mktemp("tones"), songs=3, seconds=12.0)


class LearningRates(L.Callback):
    """The learning rate each optimiser step uses, and the one left after the last step."""

    def __init__(self) -> None:
        self.used: list[float] = []
        self.after: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.used.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module):
        self.after = trainer.optimizers[0].param_groups[0]["lr"]


def learning_rates(corpus: Path, epochs: int, **optim) -> LearningRates:
    dm = LabelledDataModule(str(corpus), batch_size=2, pitch_shift=0)
    module = StudentModule(student="btc", size="small", overrides={"num_layers": 1},
                           optim={"schedule": "cosine", "lr": 1e-3, **optim})
    seen = LearningRates()
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[seen])
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3 * epochs  # the corpus gives 3 steps per epoch
    return seen


def test_warmup_climbs_linearly_from_the_start_factor_then_the_cosine_begins(corpus):
    seen = learning_rates(corpus, epochs=2, warmup_steps=4, warmup_start_factor=0.25)
    # steps 0-3: 0.25 + 0.75 * s / 4 of lr; steps 4-5: cosine over the 2 steps left
    expected = [0.25e-3, 0.4375e-3, 0.625e-3, 0.8125e-3, 1e-3, 0.5e-3]
    assert seen.used == pytest.approx(expected, rel=1e-9)


def test_cosine_ends_at_min_lr_through_the_midpoint(corpus):
    seen = learning_rates(corpus, epochs=2, min_lr=1e-4)
    assert seen.used[0] == pytest.approx(1e-3, rel=1e-9)
    assert seen.used[3] == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-9)  # half way: the mean
    assert all(a > b for a, b in zip(seen.used, seen.used[1:]))
    assert seen.after == pytest.approx(1e-4, rel=1e-9)


def test_warmup_in_epochs_holds_the_rate_for_each_whole_epoch(corpus):
    seen = learning_rates(corpus, epochs=4, warmup_epochs=2, warmup_start_factor=0.5, min_lr=1e-4)
    assert seen.used[:6] == pytest.approx([0.5e-3] * 3 + [0.75e-3] * 3, rel=1e-9)
    # epochs 2-3 (steps 6-11): cosine from lr to min_lr, per step
    cosine = [1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert seen.used[6:] == pytest.approx(cosine, rel=1e-9)
    assert seen.after == pytest.approx(1e-4, rel=1e-9)


@pytest.mark.parametrize("overrides, key", [
    (["optim.warmup_steps=10", "optim.warmup_epochs=2"], "optim.warmup_steps"),
    (["optim.min_lr=0.01", "optim.lr=0.001"], "optim.min_lr"),
    (["optim.warmup_start_factor=1.5"], "optim.warmup_start_factor"),
])
def test_schedule_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_config(EXPERIMENTS / "baseline.yaml", overrides)


class EpochLearningRates(LearningRates):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


def test_plateau_counts_validations_not_epochs_and_stops_at_min_lr(corpus, tmp_path, monkeypatch):
    from test_training import tiny_config

    from chordkd.training.fit import fit

    # the same validation score every time: every validation after the first is a plateau
    monkeypatch.setattr(StudentModule, "predict_song", lambda self, f: torch.zeros(f.shape[1], 170))
    seen = EpochLearningRates()
    summary = fit(tiny_config(
        corpus, tmp_path, "optim.schedule=plateau", "optim.lr=1e-3", "optim.plateau_factor=0.5",
        "optim.plateau_patience=0", "optim.min_lr=3e-4", "checkpoint.mode=min",
        "trainer.max_epochs=6", "trainer.check_val_every_n_epoch=2",
        "model.overrides.num_layers=1"), callbacks=[seen])
    # validations after epochs 1, 3 and 5; the 2nd and 3rd are plateaus, each one step down
    assert seen.used == pytest.approx([1e-3] * 4 + [5e-4] * 2, rel=1e-9)
    assert seen.after == pytest.approx(3e-4, rel=1e-9)  # 2.5e-4 floored at min_lr
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lr_schedulers"][0]["mode"] == "min"  # the checkpoint's mode, not a fixed max


def test_paper_stage1_warms_up_from_1e4_to_3e4_over_10_epochs_then_cosines_to_1e6():
    from chordkd.training.student import warmup_cosine_factor

    cfg = load_config(EXPERIMENTS / "paper" / "stage1.yaml")
    o, per_epoch = cfg.optim, 7  # any number of steps per epoch

    def lr(step: int) -> float:
        return o.lr * warmup_cosine_factor(
            step, total=cfg.trainer.max_epochs * per_epoch, warmup=o.warmup_epochs * per_epoch,
            unit=per_epoch, start_factor=o.warmup_start_factor, end_factor=o.min_lr / o.lr)

    assert lr(0) == lr(per_epoch - 1) == pytest.approx(1e-4)
    assert lr(10 * per_epoch) == pytest.approx(3e-4)
    assert lr(100 * per_epoch) == pytest.approx(1e-6)
    assert (cfg.model.size, cfg.data.batch_size, cfg.trainer.max_epochs) == ("base", 256, 100)
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.checkpoint.patience == 10
    assert cfg.data.valid_targets == "teacher" and cfg.data.valid is None


def test_paper_stage2_multiplies_lr_1e5_by_0_9_per_epoch_without_improvement_down_to_1e6():
    with pytest.raises(ConfigError, match="'init' must be set"):
        load_config(EXPERIMENTS / "paper" / "stage2.yaml")
    cfg = load_config(EXPERIMENTS / "paper" / "stage2.yaml", ["init=stage1.ckpt"])
    o = cfg.optim
    assert (o.schedule, o.lr, o.plateau_factor, o.plateau_patience, o.min_lr) == (
        "plateau", 1e-5, 0.9, 0, 1e-6)
    assert cfg.trainer.check_val_every_n_epoch == 1  # "per epoch" needs a validation per epoch
    assert (cfg.trainer.max_epochs, cfg.checkpoint.patience, cfg.trainer.gradient_clip_val) == (
        50, 10, 1.0)
    assert (cfg.kd.enabled, cfg.kd.alpha, cfg.kd.temperature, cfg.kd.rule) == (
        True, 0.3, 3.0, "paper")
