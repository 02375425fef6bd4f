"""One LightningModule for any student: loss, optimiser, schedule, frame accuracy.

The network is a plain ``ChordModel`` (``self.model``) that knows nothing of Lightning, so a
trained student exports and reloads anywhere (``chordkd.models.loading.load_model``).
Distillation is not the student's business: callbacks that implement ``LossTerm`` (see
``chordkd.training.distillation``) are asked to combine their term with the supervised loss.
"""

from __future__ import annotations

import abc
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
        implementation = "foreach" if precision.startswith("16") else "fused"
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True},
              "for-loop": {"foreach": False}}[implementation]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)


class StudentModule(L.LightningModule):
    """Trains ``build_student(student, size, n_classes)`` on batches from a chordkd data module.

    Args:
        student, size, overrides: the network (``btc`` | ``2e1d``; ``small`` | ``base`` | ``large``).
        vocabulary: ``large`` (170 classes) or ``majmin`` (25).
        mean, std: scalar feature normalisation, stored with the checkpoint.
        loss: ``{"name": "focal" | "ce", "gamma": 2.0}``.
        optim: ``{"lr", "weight_decay", "schedule": "cosine" | "plateau" | "constant",
            "implementation": "auto" | "fused" | "foreach" | "for-loop" (see :func:`adamw`),
            "warmup_steps", "min_lr_ratio", "plateau_patience", "plateau_factor", "monitor"}``.
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
            "warmup_steps": 0,
            "min_lr_ratio": 0.0, "plateau_patience": 3, "plateau_factor": 0.5,
            "monitor": "val/mirex", **(optim or {}),
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
                opt, mode="max", factor=cfg["plateau_factor"], patience=cfg["plateau_patience"]
            )
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": cfg["monitor"], "interval": "epoch"}}
        if cfg["schedule"] != "cosine":
            raise ValueError(f"unknown schedule {cfg['schedule']!r} (cosine, plateau, constant)")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(cfg["warmup_steps"])
        floor = float(cfg["min_lr_ratio"])

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

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
