"""Datasets over a decoded-audio cache: random training windows and whole songs.

Items carry raw samples, never features: the CQT runs on the device in the data module's
``on_after_batch_transfer``. A training window of ``W`` frames starting at frame ``f0`` reads
the samples from ``(f0 - CONTEXT) * hop`` to ``(f0 + W + CONTEXT) * hop`` (zeros outside the
song), enough for the longest CQT kernel (32,768 taps = 8 hops each side), so the window's
features equal the whole-song features of the same frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from chordkd.annotations import frames_to_intervals
from chordkd.data.audio_cache import AudioCache
from chordkd.errors import ChordkdError
from chordkd.features import FLOOR, FeatureSettings
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


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style masks for training windows (Park et al. 2019), drawn per item.

    Each window gets ``time_masks`` masks over whole frames, each ``U{0..time_mask_width}``
    frames wide, and ``freq_masks`` masks over CQT bins, each ``U{0..freq_mask_width}`` bins
    wide (2 bins per semitone), each at a uniform position inside the window; masks may
    overlap. Masked cells take ``mask_value``:

    - ``"mean"`` (default): the window's own mean log-magnitude, so a masked region carries no
      information but stays inside the range of real frames (after normalisation, about 0: what
      SpecAugment's mean value does);
    - ``"floor"``: ``log(1e-6)``, the value of a silent bin. A time mask then looks like
      silence labelled with a chord, which contradicts the N frames of real songs.

    Labels and teacher outputs are never masked: the model learns to infer the chord under a
    mask from its context.
    """

    time_masks: int = 0
    time_mask_width: int = 0
    freq_masks: int = 0
    freq_mask_width: int = 0
    mask_value: str = "mean"

    def __post_init__(self) -> None:
        if self.mask_value not in ("mean", "floor"):
            raise ValueError(f"mask_value must be 'mean' or 'floor', got {self.mask_value!r}")
        for name in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        return bool(self.time_masks * self.time_mask_width or self.freq_masks * self.freq_mask_width)

    def draw(self, rng: np.random.Generator, frames: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Mask positions for one window: (time ``[time_masks, 2]``, freq ``[freq_masks, 2]``),
        int64 rows of (first frame or bin, width)."""
        return (_draw_spans(rng, self.time_masks, self.time_mask_width, frames),
                _draw_spans(rng, self.freq_masks, self.freq_mask_width, bins))


def _draw_spans(rng: np.random.Generator, count: int, max_width: int, size: int) -> np.ndarray:
    spans = np.zeros((count, 2), dtype=np.int64)
    for i in range(count):
        width = int(rng.integers(0, min(max_width, size) + 1))
        spans[i] = int(rng.integers(0, size - width + 1)), width
    return spans


def apply_masks(
    features: torch.Tensor, time_masks: torch.Tensor, freq_masks: torch.Tensor,
    mask_value: str = "mean",
) -> torch.Tensor:
    """Mask log-CQT windows: ``features`` ``[batch, frames, bins]``; ``time_masks``
    ``[batch, n_t, 2]`` and ``freq_masks`` ``[batch, n_f, 2]`` rows of (start, width) in frames
    and bins (``SpecAugment.draw``). Returns a new ``[batch, frames, bins]`` tensor; the fill is
    each window's mean before masking (``"mean"``) or ``log(1e-6)`` (``"floor"``)."""
    _, frames, bins = features.shape

    def covered(spans: torch.Tensor, size: int) -> torch.Tensor:  # -> [batch, size] bool
        pos = torch.arange(size, device=features.device)[None, None, :]
        start, width = spans[..., :1], spans[..., 1:]
        return ((pos >= start) & (pos < start + width)).any(dim=1)

    mask = covered(time_masks, frames)[:, :, None] | covered(freq_masks, bins)[:, None, :]
    if mask_value == "mean":
        fill = features.mean(dim=(1, 2), keepdim=True)
    else:
        fill = torch.full((), FLOOR, dtype=features.dtype, device=features.device)
    return torch.where(mask, fill, features)


def confident_fraction(teacher, song_ids: list[str], min_confidence: float) -> float:
    """Fraction of the songs' frames whose teacher top probability is at least
    ``min_confidence`` (the pseudo-labels that ``WindowDataset`` keeps); 1.0 when it is 0."""
    if min_confidence <= 0:
        return 1.0
    kept = total = 0
    for song_id in song_ids:
        top = np.asarray(teacher.read(song_id).values, dtype=np.float32).max(-1)
        kept += int((top >= math.log(min_confidence)).sum())
        total += top.shape[0]
    return kept / total if total else 1.0


def hold_out_with_teacher_references(
    songs: list[SongRecord], n: int, teacher, vocab, settings: FeatureSettings, source: str = "",
) -> tuple[list[SongRecord], list[SongRecord]]:
    """Split ``songs`` into (training songs, ``n`` held-out songs) for validation without labels.

    The held-out songs are those whose id hashes lowest (blake2b), so the choice depends on
    neither the seed nor the order or number of the other songs. Each comes back as a copy whose
    reference is the teacher's cached argmax: ``labels`` int16 ``[n_frames]`` and, through
    ``frames_to_intervals``, ``intervals`` (seconds) and ``label_names``, which the mir_eval
    validation scores against as it would a .lab file. Nothing labelled is read.
    """
    if n >= len(songs):
        raise ChordkdError(f"{source}: data.valid_holdout={n} would hold out every one of its "
                           f"{len(songs)} usable songs; hold out fewer")
    ranked = sorted(songs, key=lambda s: hashlib.blake2b(s.id.encode(), digest_size=8).digest())
    held_ids = {s.id for s in ranked[:n]}
    held = []
    for song in songs:
        if song.id in held_ids:
            classes = teacher.read(song.id).best_class()
            intervals, names = frames_to_intervals(classes, vocab, settings.hop, settings.sr,
                                                   song.n_samples / settings.sr)
            held.append(dataclasses.replace(song, labels=classes.astype(np.int16),
                                            intervals=intervals, label_names=names))
    return [s for s in songs if s.id not in held_ids], held


def _starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Window starts every ``stride`` frames, plus one ending at the song's end."""
    last = max(n_frames - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else starts + [last]


class WindowDataset(Dataset):
    """Fixed-length training windows, re-drawn deterministically every epoch.

    The epoch's windows form a grid with a stride of ``window // 2`` frames over every song,
    shifted by a per-epoch random offset; each window also draws a pitch shift in
    ``[-max_shift, max_shift]`` semitones and, with ``spec_augment``, its mask positions
    (items ``time_masks``, ``freq_masks``; applied on the device by the data module). All
    depend only on (seed, epoch, index), so a resumed run sees the same data as an
    uninterrupted one. With ``targets="teacher"`` and ``min_confidence`` > 0, frames whose
    teacher top probability is below it get the label ``IGNORE`` (teacher outputs stay, for KD).
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
        spec_augment: SpecAugment | None = None,
        min_confidence: float = 0.0,
    ) -> None:
        if targets not in ("labels", "teacher"):
            raise ValueError(f"targets must be 'labels' or 'teacher', got {targets!r}")
        if targets == "teacher" and teacher is None:
            raise ValueError("targets='teacher' needs a teacher cache")
        self.songs, self.audio, self.settings = songs, audio, settings
        self.window, self.targets, self.teacher = window, targets, teacher
        self.max_shift, self.seed, self.epoch = max_shift, seed, 0
        self.spec_augment = spec_augment if spec_augment is not None and spec_augment.enabled else None
        if not 0 <= min_confidence < 1:
            raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
        self.min_confidence = min_confidence
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
        item = {
            "audio": torch.from_numpy(audio),
            "shift": torch.tensor(shift),
            "song": torch.tensor(si),  # index into self.songs, and the window's first frame:
            "start": torch.tensor(f0),  # callbacks join per-song caches (e.g. embeddings) on these
        }
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
                if self.min_confidence > 0:  # values are log-probabilities
                    top = np.asarray(out.values[f0 : f0 + n], dtype=np.float32).max(-1)
                    labels[:n][top < math.log(self.min_confidence)] = IGNORE
        if self.targets == "labels" and song.labels is not None:  # unlabelled: all IGNORE
            labels[:n] = song.labels[f0 : f0 + n]
        item["labels"] = torch.from_numpy(labels)
        if self.spec_augment is not None:
            # its own stream, so masks do not change the windows or shifts drawn above
            rng = np.random.default_rng(_unit_hash(self.seed, self.epoch, idx, 1))
            time_masks, freq_masks = self.spec_augment.draw(rng, w, self.settings.n_bins)
            item["time_masks"] = torch.from_numpy(time_masks)
            item["freq_masks"] = torch.from_numpy(freq_masks)
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
