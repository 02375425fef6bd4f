"""Datasets over a decoded-audio cache: random training windows and whole songs.

Items carry raw samples, never features: the CQT runs on the device in the data module's
``on_after_batch_transfer``. A training window of ``W`` frames starting at frame ``f0`` reads
the samples from ``(f0 - CONTEXT) * hop`` to ``(f0 + W + CONTEXT) * hop`` (zeros outside the
song), enough for the longest CQT kernel (32,768 taps = 8 hops each side), so the window's
features equal the whole-song features of the same frames.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from chordkd.data.audio_cache import AudioCache
from chordkd.features import FeatureSettings
from chordkd.training.losses import IGNORE

CONTEXT = 8  # frames of audio context on each side of a window (8 * 2048 = 16,384 samples)


@dataclass
class SongRecord:
    """What training needs of one song: its length and per-frame targets."""

    id: str
    n_samples: int
    n_frames: int
    labels: np.ndarray | None = None  # int16 [n_frames] ground-truth classes
    intervals: np.ndarray | None = None  # reference annotation, for validation
    label_names: list[str] | None = None


def _unit_hash(*keys: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(keys).encode(), digest_size=8).digest(), "little")


def _starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Window starts every ``stride`` frames, plus one ending at the song's end."""
    last = max(n_frames - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else starts + [last]


class WindowDataset(Dataset):
    """Fixed-length training windows, re-drawn deterministically every epoch.

    The epoch's windows form a grid with a stride of ``window // 2`` frames over every song,
    shifted by a per-epoch random offset; each window also draws a pitch shift in
    ``[-max_shift, max_shift]`` semitones. Both depend only on (seed, epoch, index), so a
    resumed run sees the same data as an uninterrupted one.
    """

    def __init__(
        self,
        songs: list[SongRecord],
        audio: AudioCache,
        settings: FeatureSettings,
        window: int = 108,
        targets: str = "labels",
        teacher=None,
        max_shift: int = 0,
        seed: int = 0,
    ) -> None:
        if targets not in ("labels", "teacher"):
            raise ValueError(f"targets must be 'labels' or 'teacher', got {targets!r}")
        if targets == "teacher" and teacher is None:
            raise ValueError("targets='teacher' needs a teacher cache")
        self.songs, self.audio, self.settings = songs, audio, settings
        self.window, self.targets, self.teacher = window, targets, teacher
        self.max_shift, self.seed, self.epoch = max_shift, seed, 0
        stride = max(window // 2, 1)
        self.stride = stride
        self.grid = [(si, f0) for si, s in enumerate(songs) for f0 in _starts(s.n_frames, window, stride)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, idx: int) -> dict:
        si, f0 = self.grid[idx]
        song = self.songs[si]
        h = _unit_hash(self.seed, self.epoch, idx)
        f0 = min(f0 + h % self.stride, max(song.n_frames - self.window, 0))  # per-epoch jitter
        shift = (h >> 20) % (2 * self.max_shift + 1) - self.max_shift if self.max_shift else 0
        w, hop = self.window, self.settings.hop
        audio = self.audio.samples(song.id, (f0 - CONTEXT) * hop, (f0 + w + CONTEXT) * hop)
        n = min(w, song.n_frames - f0)  # valid frames in this window
        labels = np.full(w, IGNORE, dtype=np.int64)
        item = {"audio": torch.from_numpy(audio), "shift": torch.tensor(shift)}
        if self.teacher is not None:
            out = self.teacher.read(song.id)
            k = out.values.shape[1]
            values = np.zeros((w, k), dtype=np.float16)
            indices = np.zeros((w, k), dtype=np.int64)
            logz = np.zeros(w, dtype=np.float32)
            values[:n] = out.values[f0 : f0 + n]
            indices[:n] = out.indices[f0 : f0 + n]
            logz[:n] = out.logz[f0 : f0 + n]
            item.update(
                teacher_values=torch.from_numpy(values),
                teacher_indices=torch.from_numpy(indices),
                teacher_logz=torch.from_numpy(logz),
            )
            if out.logz_t is not None:  # the tempered log-partition, for exact KD tails
                logz_t = np.zeros(w, dtype=np.float32)
                logz_t[:n] = out.logz_t[f0 : f0 + n]
                item["teacher_logz_t"] = torch.from_numpy(logz_t)
                item["teacher_tail_temperature"] = torch.tensor(float(out.tail_temperature))
            if self.targets == "teacher":
                labels[:n] = out.best_class()[f0 : f0 + n]
        if self.targets == "labels":
            labels[:n] = song.labels[f0 : f0 + n]
        item["labels"] = torch.from_numpy(labels)
        return item


class SongDataset(Dataset):
    """Whole songs for validation, test and prediction: one song per item (batch size 1)."""

    def __init__(self, songs: list[SongRecord], audio: AudioCache) -> None:
        self.songs, self.audio = songs, audio

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, idx: int) -> dict:
        song = self.songs[idx]
        labels = song.labels if song.labels is not None else np.full(song.n_frames, IGNORE)
        return {
            "audio": torch.from_numpy(self.audio.samples(song.id)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "song_id": song.id,
            "index": idx,
        }
