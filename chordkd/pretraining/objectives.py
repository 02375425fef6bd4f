"""One LightningModule per self-supervised objective, both around a plain ``ChordModel``.

- :class:`ContrastiveModule`: two views of the same stretch (each with its own gain, EQ, noise
  and time masks, the second shifted by up to ``max_shift`` frames), their overlapping frames
  pooled into segments of ``segment`` frames, projected and matched by InfoNCE (NT-Xent,
  symmetric): segment ``i`` of one view must pick segment ``i`` of the other among all the
  batch's segments.
- :class:`MaskedModule`: spans of ``time_mask_width`` frames hidden with probability
  ``mask_ratio`` (set to the feature mean), and their normalised CQT frames predicted from the
  encoder's last hidden layer (mean squared error on the hidden frames only).

Only the encoder is kept for later use: the checkpoint carries the same ``chordkd`` block as a
student's, marked ``encoder_only`` (the classifier was never trained), so ``load_model`` and
``init=`` read it and stage 2 starts with a fresh classifier.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from chordkd.models import ChordModel, build_student
from chordkd.pretraining.augment import ViewAugment
from chordkd.training.student import CHECKPOINT_FORMAT, adamw

OBJECTIVES = ("contrastive", "masked")


class SSLModule(L.LightningModule):
    """What both objectives share: the network, the optimiser and the checkpoint block.

    ``ssl``: the ``ssl`` config section (:class:`chordkd.training.config.SSLConfig` as a dict);
    ``optim``: ``{"lr", "weight_decay", "implementation"}``; ``window``: frames per view.
    """

    objective = ""

    def __init__(self, student: str = "btc", size: str = "base", vocabulary: str = "large",
                 overrides: dict | None = None, mean: float = 0.0, std: float = 1.0,
                 ssl: dict | None = None, optim: dict | None = None, window: int = 108,
                 features: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        from chordkd.chords import get_vocabulary

        self.vocab = get_vocabulary(vocabulary)
        net = build_student(student, size, self.vocab.size, **(overrides or {}))
        # the classifier is not trained here (stage 2 replaces it): frozen, so that DDP sees
        # no parameter without a gradient and the optimiser skips it
        getattr(net, net.classifier).requires_grad_(False)
        self.model = ChordModel(net, mean, std)
        self.ssl = dict(ssl or {})
        self.optim_cfg = {"lr": 1e-4, "weight_decay": 1e-5, "implementation": "auto", **(optim or {})}
        self.window = window

    def loss(self, feats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The objective's loss for raw log-CQT windows ``[B, window + extra, F]``."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch["features"])
        self.log("train/ssl_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch["features"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same views every validation round: a generator seeded by the batch
        loss = self.loss(batch["features"], torch.Generator().manual_seed(batch_idx))
        self.log("val/ssl_loss", loss, on_epoch=True, batch_size=batch["features"].shape[0],
                 sync_dist=True)

    def configure_optimizers(self):
        c = self.optim_cfg
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        params = [p for p in self.parameters() if p.requires_grad]
        return adamw(params, c["lr"], c["weight_decay"], c["implementation"], precision)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        hp = self.hparams
        checkpoint["chordkd"] = {
            "format": CHECKPOINT_FORMAT, "student": hp.student, "size": hp.size,
            "vocabulary": hp.vocabulary, "n_classes": self.vocab.size,
            "overrides": dict(hp.overrides or {}), "model": self.model.config,
            "features": dict(hp.features or {}),
            "encoder_only": True, "pretraining": self.objective,
        }


class ContrastiveModule(SSLModule):
    """InfoNCE between two augmented, time-shifted views (see the module docstring)."""

    objective = "contrastive"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        h, p = self.model.net.hidden_size, int(self.ssl.get("projection", 128))
        self.projection = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, p))
        keys = ("gain_db", "eq_db", "noise_db", "time_masks", "time_mask_width")
        self.augment = ViewAugment(**{k: self.ssl[k] for k in keys if k in self.ssl})

    def loss(self, feats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        w, seg = self.window, int(self.ssl.get("segment", 9))
        max_shift = min(int(self.ssl.get("max_shift", 4)), feats.shape[1] - w)
        shift = int(torch.randint(0, max_shift + 1, (1,), generator=generator))
        a = self.augment(feats[:, :w], generator)
        b = self.augment(feats[:, shift : shift + w], generator)
        n = (w - shift) // seg  # whole segments in the frames both views hold
        if n < 1:
            raise ValueError(f"ssl.segment={seg} is longer than the views' overlap ({w - shift} frames)")
        za = self._embed(self.model.hidden(a)[:, shift : shift + n * seg], seg)
        zb = self._embed(self.model.hidden(b)[:, : n * seg], seg)
        return info_nce(za, zb, float(self.ssl.get("temperature", 0.1)))

    def _embed(self, hidden: torch.Tensor, seg: int) -> torch.Tensor:
        b, t, h = hidden.shape
        pooled = hidden.reshape(b, t // seg, seg, h).mean(2).reshape(-1, h)
        return F.normalize(self.projection(pooled), dim=-1)


def info_nce(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of paired unit vectors ``[N, P]``: row ``i`` of ``za`` and of ``zb``
    are positives, every other row of the other view a negative. ``log(N)`` at chance."""
    logits = za @ zb.T / temperature
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class MaskedModule(SSLModule):
    """Masked prediction of normalised CQT frames (see the module docstring)."""

    objective = "masked"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.predictor = nn.Linear(self.model.net.hidden_size, self.model.net.config["feature_size"])

    def loss(self, feats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = feats[:, : self.window]
        b, t, _ = x.shape
        width = max(int(self.ssl.get("time_mask_width", 6)), 1)
        spans = torch.rand(b, -(-t // width), generator=generator) < float(self.ssl.get("mask_ratio", 0.3))
        hidden = spans.repeat_interleave(width, dim=1)[:, :t].to(x.device)
        hidden[:, 0] |= ~hidden.any(1)  # at least one frame to predict per window
        masked = torch.where(hidden[..., None], self.model.mean.to(x.dtype), x)
        pred = self.predictor(self.model.hidden(masked))
        target = self.model.normalise(x)
        return F.mse_loss(pred[hidden], target[hidden])


MODULES: dict[str, type[SSLModule]] = {"contrastive": ContrastiveModule, "masked": MaskedModule}
