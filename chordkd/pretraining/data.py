"""Windows of unlabelled audio for pre-training: the students' data module, labels left out."""

from __future__ import annotations

from torch.utils.data import DataLoader

from chordkd.data.datamodule import ChordDataModule
from chordkd.data.datasets import WindowDataset


class UnlabelledWindows(ChordDataModule):
    """Random windows of ``window`` frames (log-CQT computed on the device, as for the
    students) from ``train`` and, for validation, fixed windows from ``valid``. No labels are
    read (a pool without any is fine) and there is no pitch shift."""

    def __init__(self, train: str, valid: str | None = None, **kwargs) -> None:
        super().__init__(train=train, valid=valid, test=None, targets="labels", pitch_shift=0,
                         noise=None, **kwargs)

    def prepare_data(self) -> None:
        self._load("train", self.train_source, False)
        if self.valid_source:
            self._load("valid", self.valid_source, False)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._windows("train", self.train_source)
        self.val_set = self._windows("valid", self.valid_source) if self.valid_source else None
        self.test_set = None

    def _windows(self, split: str, source: str) -> WindowDataset:
        records, audio = self._load(split, source, False)
        return WindowDataset(records, audio, self.settings, self.window, "labels", None, 0, self.seed)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
