"""Training randomness that depends on (seed, epoch) alone, so a resumed run repeats itself.

Lightning resumes from ``last.ckpt`` at the start of an epoch (a mid-epoch checkpoint restarts
its epoch) and does not restore RNG states. The training windows already depend only on
(seed, epoch) (``chordkd.data.datasets.WindowDataset``); ``EpochSeed`` does the same for
everything drawn from the global RNGs (dropout masks above all), so a run killed and resumed
ends with the weights of an uninterrupted one in deterministic mode.
"""

from __future__ import annotations

import lightning as L


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of training epoch ``epoch`` (0-based) of a run seeded ``seed``, in [0, 2**32)."""
    return (seed * 1_000_003 + epoch) % 2**32


class EpochSeed(L.Callback):
    """Reseeds torch, numpy and ``random`` (and DataLoader workers) at each training epoch's
    start with ``epoch_seed(seed, epoch)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True,
                          verbose=False)
