"""Training batches that mix ground-truth windows with pseudo-labelled ones (noisy student).

Xie et al. (2020) train each noisy student on the labelled images and the pseudo-labelled
ones together, with a fixed share of each in every batch. Here every batch holds
``labelled_per_batch(ratio, batch_size)`` windows of the labelled corpus (targets from its
.lab files) and the rest from the unlabelled pool (targets: the previous model's
pseudo-labels), in that order. Both sources are ``WindowDataset``s, so pitch shift, SpecAugment
masks and the pool's confidence filter apply to both as they do elsewhere.

One item of :class:`MixedBatches` is a whole batch, so a sampler over items, Lightning's
``DistributedSampler`` under DDP included, hands out whole batches and cannot break the ratio:
each rank gets a share of the epoch's batches, every one of them mixed as stated.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from chordkd.data.datasets import WindowDataset
from chordkd.errors import ConfigError

# Keys that windows of both sources carry; teacher outputs exist only for the pool, so KD and
# feature KD (which read them per window) do not combine with mixing (see training/config.py).
SHARED_KEYS = ("audio", "shift", "labels", "song", "start", "time_masks", "freq_masks")
_CYCLES = 65_536  # passes over one source within an epoch; epoch * _CYCLES + pass seeds a pass


def labelled_per_batch(ratio: float, batch_size: int) -> int:
    """Labelled windows in each batch of ``batch_size``: ``round(ratio * batch_size)``, which
    must leave at least one window of each source. Raises ``ConfigError`` naming the keys."""
    if not 0 < ratio < 1:
        raise ConfigError(f"config key 'data.labelled_ratio': {ratio} must be in (0, 1)")
    k = round(ratio * batch_size)
    if not 0 < k < batch_size:
        raise ConfigError(
            f"config key 'data.labelled_ratio': {ratio} of data.batch_size={batch_size} is {k} "
            "labelled windows per batch; each batch needs at least one window of each source"
        )
    return k


class MixedBatches(Dataset):
    """Whole training batches: ``k`` windows of ``labelled`` then ``batch_size - k`` of ``pool``.

    An epoch has enough batches to draw every window of each source at least once:
    ``max(ceil(len(pool) / (batch_size - k)), ceil(len(labelled) / k))``. Each source is read
    in shuffled passes, one fresh permutation per pass, continued from batch to batch; the
    smaller source (usually the labelled one) is cycled, and each pass of it draws new
    positions, shifts and masks. Everything depends on (seed, epoch, batch index) alone, so a
    resumed run and every DDP rank see the same batches.

    Items: the keys of ``SHARED_KEYS`` stacked to ``[batch, ...]`` (``labels`` ``[batch,
    window]``, ``audio`` ``[batch, samples]``), plus ``labelled`` ``[batch]`` bool (True for
    ground-truth windows). ``song`` indexes the window's own source's ``songs``.
    """

    def __init__(self, labelled: WindowDataset, pool: WindowDataset, batch_size: int,
                 ratio: float, seed: int = 0) -> None:
        if labelled.targets != "labels" or pool.targets != "teacher":
            raise ValueError("labelled windows need targets='labels', pool windows 'teacher'")
        self.labelled, self.pool, self.seed = labelled, pool, seed
        self.batch_size = batch_size
        self.per_batch = labelled_per_batch(ratio, batch_size)
        self.epoch = 0
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    @property
    def n_batches(self) -> int:
        k = self.per_batch
        return max(math.ceil(len(self.pool) / (self.batch_size - k)),
                   math.ceil(len(self.labelled) / k))

    @property
    def n_windows(self) -> int:
        return self.n_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._orders.clear()

    def __len__(self) -> int:
        return self.n_batches

    def _order(self, source: int, cycle: int, n: int) -> np.ndarray:
        key = (source, cycle)
        if key not in self._orders:
            rng = np.random.default_rng([self.seed, self.epoch, source, cycle])
            self._orders[key] = rng.permutation(n)
        return self._orders[key]

    def _windows(self, source: int, dataset: WindowDataset, first: int, count: int) -> list[dict]:
        """Windows ``first .. first + count`` of the epoch's sequence of shuffled passes."""
        n, items = len(dataset), []
        for position in range(first, first + count):
            cycle, offset = divmod(position, n)
            # a pass of its own for the window draws (jitter, shift, masks) of the dataset
            dataset.set_epoch(self.epoch * _CYCLES + cycle)
            item = dataset[int(self._order(source, cycle, n)[offset])]
            items.append({key: item[key] for key in SHARED_KEYS if key in item})
        return items

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n_batches:
            raise IndexError(index)
        k, rest = self.per_batch, self.batch_size - self.per_batch
        items = (self._windows(0, self.labelled, index * k, k)
                 + self._windows(1, self.pool, index * rest, rest))
        batch = {key: torch.stack([it[key] for it in items]) for key in items[0]}
        batch["labelled"] = torch.arange(self.batch_size) < k
        return batch
