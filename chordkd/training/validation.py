"""mir_eval validation: whole-song predictions -> intervals -> the seven chord metrics.

``MirEvalValidation`` collects each validation song's frame predictions, decodes them to
labelled intervals, scores them against the reference annotation with mir_eval, and logs the
duration-weighted ``val/<metric>`` for root, thirds, triads, sevenths, tetrads, majmin and
mirex. Under DDP the per-song scores are gathered from every rank and de-duplicated by song
id (the distributed sampler pads by repeating songs), so every rank logs identical values and
ModelCheckpoint / EarlyStopping see the same monitor on all ranks.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from chordkd.annotations import frames_to_intervals
from chordkd.evaluation.metrics import METRICS, aggregate, score_song

log = logging.getLogger(__name__)


class MirEvalValidation(L.Callback):
    def __init__(self, split: str = "val") -> None:
        self.split = split
        self._scores: dict[str, object] = {}

    def _reset(self) -> None:
        self._scores = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(trainer, pl_module, outputs, "valid")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(trainer, pl_module, outputs, "test")

    def _collect(self, trainer, pl_module, outputs, split: str) -> None:
        dm = trainer.datamodule
        ref = dm.reference(split, int(outputs["index"]))
        settings = dm.settings
        duration = ref.n_samples / settings.sr
        est_int, est_lab = frames_to_intervals(
            outputs["pred"].numpy(), pl_module.vocab, settings.hop, settings.sr, duration
        )
        self._scores[ref.id] = score_song(ref.intervals, ref.label_names, est_int, est_lab)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")

    def _log(self, trainer, pl_module, prefix: str) -> None:
        scores = self._scores
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[dict] = [None] * trainer.world_size  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, scores)
            scores = {}
            for part in gathered:
                scores.update(part)  # the same song from two ranks has the same score
        if not scores:
            return
        overall = aggregate([scores[k] for k in sorted(scores)])
        for name in METRICS:
            value = overall[name]
            pl_module.log(f"{prefix}/{name}", float(value), rank_zero_only=False, sync_dist=False)
        pl_module.log(f"{prefix}/songs", float(len(scores)), rank_zero_only=False, sync_dist=False)
