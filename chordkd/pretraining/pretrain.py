"""``chordkd pretrain CONFIG [key=value ...]``: self-supervised pre-training of an encoder.

The same experiment YAML, run folder, resume and W&B machinery as ``chordkd fit``
(:mod:`chordkd.training.fit`): the ``ssl`` section picks the objective and its views,
``data.train`` is the unlabelled audio, ``data.valid`` (optional) gives the validation loss
``val/ssl_loss`` that picks ``best.ckpt``. ``summary.json`` records the best checkpoint and the
first and last epochs' training loss.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from chordkd.training.fit import add_arguments as _fit_arguments

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _fit_arguments(p)


def run(args: argparse.Namespace) -> int:
    from chordkd.training.fit import config_or_print

    cfg = config_or_print(args)
    if cfg is None:
        return 0
    summary = pretrain(cfg)
    print(f"run folder: {summary['run_dir']}\nbest checkpoint: {summary['best_checkpoint']}")
    return 0


class EpochLosses(L.Callback):
    """Keeps the mean training loss of every epoch (``train/ssl_loss_epoch``); its list is saved
    in the checkpoints, so a resumed run's summary still holds the first epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("train/ssl_loss_epoch")
        if value is not None:
            self.losses.append(float(value))

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.losses = list(state["losses"])


def pretrain(cfg: DictConfig) -> dict:
    """Pre-train (or resume) the experiment ``cfg``; returns the summary (also summary.json)."""
    from chordkd.training.fit import open_run

    with open_run(cfg) as (folder, finished):
        return finished if finished is not None else _pretrain(cfg, folder)


def _pretrain(cfg: DictConfig, folder: Path) -> dict:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from chordkd.atomic import write_json
    from chordkd.pretraining.data import UnlabelledWindows
    from chordkd.pretraining.objectives import MODULES
    from chordkd.training.config import config_hash
    from chordkd.training.fit import _resume_path, build_trainer
    from chordkd.training.seeding import EpochSeed

    d, ssl = cfg.data, cfg.ssl
    extra = ssl.max_shift if ssl.objective == "contrastive" else 0  # room for the second view
    dm = UnlabelledWindows(
        train=d.train, valid=d.valid, vocabulary=cfg.vocabulary, window=d.window + extra,
        batch_size=d.batch_size, num_workers=d.num_workers, seed=cfg.seed, strict=d.strict,
        stats_songs=d.stats_songs,
    )
    dm.prepare_data()
    dm.setup("fit")
    mean, std = dm.feature_stats()
    module = MODULES[ssl.objective](
        student=cfg.student, size=cfg.model.size, vocabulary=cfg.vocabulary,
        overrides=OmegaConf.to_container(cfg.model.overrides), mean=mean, std=std,
        ssl=OmegaConf.to_container(ssl), optim=OmegaConf.to_container(cfg.optim),
        window=d.window, features=dm.settings.to_dict(),
    )
    ckpt_dir = folder / "checkpoints"
    monitor = "val/ssl_loss" if d.valid else None
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min",
                              save_top_k=1, enable_version_counter=False,
                              auto_insert_metric_name=False)
    last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                              save_on_train_epoch_end=True, enable_version_counter=False)
    losses = EpochLosses()
    trainer = build_trainer(cfg, folder, [best_cb, last_cb, EpochSeed(cfg.seed), losses])
    trainer.fit(module, datamodule=dm, ckpt_path=_resume_path(cfg, ckpt_dir))

    best = best_cb.best_model_path or str(ckpt_dir / "last.ckpt")
    summary = {
        "name": cfg.name, "role": cfg.role, "student": cfg.student, "size": cfg.model.size,
        "objective": ssl.objective, "config_hash": config_hash(cfg), "run_dir": str(folder),
        "best_checkpoint": best, "monitor": monitor,
        "best_score": float(best_cb.best_model_score) if best_cb.best_model_score is not None else None,
        "global_step": trainer.global_step, "epochs": trainer.current_epoch,
        "train_loss_by_epoch": losses.losses, "skipped": dm.skipped,
        "songs": {"train": len(dm.train_set.songs),
                  **({"valid": len(dm.val_set.songs)} if dm.val_set is not None else {})},
    }
    if trainer.is_global_zero:
        write_json(folder / "summary.json", summary)
    if cfg.logger.kind == "wandb" and trainer.is_global_zero:
        import wandb

        wandb.finish()
    return summary
