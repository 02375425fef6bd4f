"""One LightningModule for any student: loss, optimiser, schedule, frame accuracy.

The network is a plain ``ChordModel`` (``self.model``) that knows nothing of Lightning, so a
trained student exports and reloads anywhere (``chordkd.models.loading.load_model``).
Distillation is not the student's business: callbacks that implement ``LossTerm`` (see
``chordkd.training.distillation``) are asked to combine their term with the supervised loss.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch

from chordkd.inference import song_logits
from chordkd.models import ChordModel, build_student
from chordkd.training.losses import frame_accuracy, supervised_loss

CHECKPOINT_FORMAT = 1


class LossTerm(abc.ABC):
    """Mixin for callbacks that add a loss term to the student's training step.

    ``combine`` gets the batch, the student's ``logits`` ``[B, W, C]`` and last hidden layer
    ``hidden`` ``[B, W, H]`` (both from one ``forward_features`` pass), the loss so far and a
    dict of scalars to log; it returns the new loss. Terms are combined in callback order.
    """

    @abc.abstractmethod
    def combine(
        self, module: StudentModule, batch: dict, logits: torch.Tensor, loss: torch.Tensor,
        logs: dict[str, torch.Tensor], hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The new loss, given the loss so far."""


ADAMW_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")


def adamw(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
    implementation: str = "auto", precision: str = "32-true",
) -> torch.optim.AdamW:
    """AdamW with the chosen kernel; all three compute the same update up to float rounding.

    ``auto`` is ``fused`` (one kernel over all parameters: on CPU 3x faster than torch's
    default per-tensor loop at 1 thread, and no thread-pool barrier per tensor, which costs
    most when the machine is loaded; ``make bench`` section 6), except under ``16-mixed``:
    its gradient scaler would unscale inside a fused step, which Lightning's gradient clipping
    does not allow, so there it is ``foreach``.
    """
    if implementation not in ADAMW_IMPLEMENTATIONS:
        raise ValueError(f"optim.implementation must be one of {ADAMW_IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if implementation == "auto":
        implementation = "foreach" if "mixed" in precision or precision.startswith("16") else "fused"
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True},
              "for-loop": {"foreach": False}}[implementation]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)


def warmup_cosine_factor(
    step: int, total: int, warmup: int = 0, unit: int = 1, start_factor: float = 0.0,
    end_factor: float = 0.0,
) -> float:
    """The learning rate at optimiser step ``step`` (0-based), as a multiple of ``optim.lr``.

    A linear warm-up over the first ``warmup`` of ``total`` steps, in whole units of ``unit``
    steps (``unit`` = steps per epoch: the rate changes only at epoch boundaries), from
    ``start_factor`` at the first unit towards 1 (as torch's ``LinearLR``: unit ``u`` of ``n``
    gets ``start_factor + (1 - start_factor) * u / n``); then a half cosine from 1 at step
    ``warmup`` down to ``end_factor`` (``optim.min_lr / optim.lr``) at step ``total``.

    >>> [round(warmup_cosine_factor(s, 8, warmup=4, unit=2, start_factor=0.5), 3) for s in range(8)]
    [0.5, 0.5, 0.75, 0.75, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup:
        units = max(warmup // unit, 1)
        return start_factor + (1 - start_factor) * (step // unit) / units
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimiser steps in one training epoch on this rank (batches over gradient accumulation)."""
    _ = trainer.estimated_stepping_batches  # sets the training loader up, which counts its batches
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError("optim.warmup_epochs needs a training loader of known length; "
                         "use optim.warmup_steps")
    return max(math.ceil(batches / trainer.accumulate_grad_batches), 1)


class StudentModule(L.LightningModule):
    """Trains ``build_student(student, size, n_classes)`` on batches from a chordkd data module.

    Args:
        student, size, overrides: the network (``btc`` | ``2e1d``; ``small`` | ``base`` | ``large``).
        vocabulary: ``large`` (170 classes) or ``majmin`` (25).
        mean, std: scalar feature normalisation, stored with the checkpoint.
        loss: ``{"name": "focal" | "ce", "gamma": 2.0}``.
        optim: ``{"lr", "weight_decay", "schedule": "cosine" | "plateau" | "constant",
            "implementation": "auto" | "fused" | "foreach" | "for-loop" (see :func:`adamw`),
            "warmup_steps" | "warmup_epochs", "warmup_start_factor", "min_lr",
            "plateau_patience", "plateau_factor", "monitor", "mode"}`` (see
            :func:`warmup_cosine_factor`; ``monitor`` and ``mode`` are the checkpoint's).
    """

    def __init__(
        self,
        student: str = "btc",
        size: str = "base",
        vocabulary: str = "large",
        overrides: dict | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        loss: dict | None = None,
        optim: dict | None = None,
        features: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from chordkd.chords import get_vocabulary

        self.vocab = get_vocabulary(vocabulary)
        net = build_student(student, size, self.vocab.size, **(overrides or {}))
        self.model = ChordModel(net, mean, std)
        self.loss_cfg = {"name": "focal", "gamma": 2.0, **(loss or {})}
        self.optim_cfg = {
            "lr": 1e-4, "weight_decay": 1e-5, "schedule": "cosine", "implementation": "auto",
            "warmup_steps": 0, "warmup_epochs": 0, "warmup_start_factor": 0.0, "min_lr": 0.0,
            "plateau_patience": 3, "plateau_factor": 0.5,
            "monitor": "val/mirex", "mode": "max", **(optim or {}),
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw log-CQT ``[B, T, 144]`` -> logits ``[B, T, C]``."""
        return self.model(features)

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # one pass gives both: feature-space loss terms need the hidden layer at no extra cost
        hidden, logits = self.model.forward_features(batch["features"])
        sup = supervised_loss(logits, batch["labels"], self.loss_cfg["name"], self.loss_cfg["gamma"])
        logs: dict[str, torch.Tensor] = {"train/sup_loss": sup.detach()}
        loss = sup
        for cb in self.trainer.callbacks if self._trainer is not None else []:
            if isinstance(cb, LossTerm):
                loss = cb.combine(self, batch, logits, loss, logs, hidden=hidden)
        logs["train/loss"] = loss.detach()
        logs["train/frame_acc"] = frame_accuracy(logits.detach(), batch["labels"])
        bs = batch["features"].shape[0]
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=bs, prog_bar=False)
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def predict_song(self, features: torch.Tensor) -> torch.Tensor:
        """Whole-song logits ``[T, C]`` for features ``[1, T, 144]`` (windows, stitched)."""
        return song_logits(self.model, features[0])

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def _eval_step(self, batch: dict, split: str) -> dict[str, Any]:
        logits = self.predict_song(batch["features"])
        labels = batch["labels"][0]
        acc = frame_accuracy(logits[None], labels[None])
        self.log(f"{split}/frame_acc", acc, batch_size=1, sync_dist=True)
        return {"song_id": batch["song_id"], "index": batch["index"],
                "pred": logits.argmax(-1).cpu()}

    # -- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        opt = adamw(self.parameters(), cfg["lr"], cfg["weight_decay"], cfg["implementation"], precision)
        if cfg["schedule"] == "constant":
            return opt
        if cfg["schedule"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=cfg["mode"], factor=cfg["plateau_factor"],
                patience=cfg["plateau_patience"], min_lr=cfg["min_lr"],
            )
            # stepped after the epochs that validate, so patience counts validations: stepped
            # every epoch, it would read the last validation's stale score as a plateau
            every = self.trainer.check_val_every_n_epoch if self._trainer is not None else 1
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": cfg["monitor"],
                                     "interval": "epoch", "frequency": every or 1}}
        if cfg["schedule"] != "cosine":
            raise ValueError(f"unknown schedule {cfg['schedule']!r} (cosine, plateau, constant)")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup, per_epoch = int(cfg["warmup_steps"]), 1
        if cfg["warmup_epochs"]:
            per_epoch = steps_per_epoch(self.trainer)
            warmup = int(cfg["warmup_epochs"]) * per_epoch
        factor = functools.partial(
            warmup_cosine_factor, total=total, warmup=warmup, unit=per_epoch,
            start_factor=float(cfg["warmup_start_factor"]),
            end_factor=float(cfg["min_lr"]) / float(cfg["lr"]),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Everything needed to rebuild the plain network without Lightning or this class.
        hp = self.hparams
        checkpoint["chordkd"] = {
            "format": CHECKPOINT_FORMAT,
            "student": hp.student,
            "size": hp.size,
            "vocabulary": hp.vocabulary,
            "n_classes": self.vocab.size,
            "overrides": dict(hp.overrides or {}),
            "model": self.model.config,
            "features": dict(hp.features or {}),
        }
