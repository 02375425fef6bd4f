"""The offline data-path peer: BTC's and ChordMini's preprocessing, features stored once.

BTC (``audio_dataset.py``) and ChordMini compute ``log(|librosa.cqt| + 1e-6)`` of every song
once, store it, and read stored features per training window. This peer does the same:

- ``prepare``: per song, ``librosa.cqt`` of the whole file with BTC's settings (the same
  call as the online peer and the same frames as chordkd's ``LogCQT``), stored as float32
  ``[T, 144]`` ``.npy``; the teacher's argmax targets of the whole song (``song_logits``
  over 108-frame windows), stored as int16 ``[T]`` ``.npy``. Each file written atomically.
- ``batch``: per window, a memory-mapped read of 108 stored frames and their targets; per
  batch, a stack and a move to the device. No CQT and no teacher in the loop.

Pitch-shift augmentation is not free here as it is on chordkd's path (which shifts the audio
before its on-device CQT): BTC stores one feature file per shift (-5..+6 semitones), so its
storage is 12x what ``prepare`` writes; this peer stores the unshifted features only, which
flatters it (the report gives its bytes per audio-hour, and the 12-shift figure).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from chordkd.atomic import atomic_write
from chordkd.data.manifest import read_manifest
from chordkd.features import LOG_EPS, FeatureSettings

WINDOW = 108
PITCH_SHIFTS_BTC_STORES = 12  # -5..+6 semitones, one feature file each


def librosa_log_cqt(path: str | Path, settings: FeatureSettings) -> np.ndarray:
    """float32 ``[T, n_bins]`` log-CQT of a whole file, as BTC's preprocessing computes it."""
    import librosa
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != settings.sr:
        raise RuntimeError(f"{path}: the offline peer expects {settings.sr} Hz, got {sr}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = librosa.cqt(audio.mean(axis=1), sr=sr, hop_length=settings.hop, fmin=settings.fmin,
                        n_bins=settings.n_bins, bins_per_octave=settings.bins_per_octave)
    return np.log(np.abs(c) + LOG_EPS).T.astype(np.float32)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


class OfflinePath:
    """Stored features and targets, read per window (see the module docstring)."""

    def __init__(self, manifest: Path, folder: Path, teacher: str, batch_size: int,
                 device: torch.device, seed: int = 0) -> None:
        self.settings = FeatureSettings()
        self.songs = read_manifest(manifest)
        self.folder, self.teacher_path = Path(folder), teacher
        self.batch_size, self.device = batch_size, device
        self.rng = np.random.default_rng(seed)
        self.features: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def prepare(self) -> dict:
        """Compute and store every song's features and targets (reused when present);
        returns the seconds spent, the audio seconds and the stored bytes."""
        from chordkd.inference import song_logits
        from chordkd.models.official import load_official_btc

        teacher = load_official_btc(self.teacher_path).eval()
        t0 = time.perf_counter()
        frames = stored = 0
        for song in self.songs:
            feats_path = self.folder / f"{song.id}.cqt.npy"
            target_path = self.folder / f"{song.id}.targets.npy"
            if not (feats_path.is_file() and target_path.is_file()):
                feats = librosa_log_cqt(song.audio, self.settings)
                with torch.no_grad():
                    targets = song_logits(teacher, torch.from_numpy(feats)).argmax(-1)
                _save(feats_path, feats)
                _save(target_path, targets.numpy().astype(np.int16))
            self.features.append(np.load(feats_path, mmap_mode="r"))
            self.targets.append(np.load(target_path, mmap_mode="r"))
            frames += self.features[-1].shape[0]
            stored += feats_path.stat().st_size + target_path.stat().st_size
        seconds = frames * self.settings.frame_seconds
        hours = seconds / 3600
        return {"prepare_seconds": time.perf_counter() - t0, "audio_seconds": seconds,
                "stored_bytes_per_audio_hour": stored / hours,
                "stored_bytes_per_audio_hour_with_btc_pitch_shifts": stored * PITCH_SHIFTS_BTC_STORES / hours}

    def batch(self) -> tuple[int, float, float]:
        """One batch: (windows, seconds reading stored windows, seconds moving to the device)."""
        if not self.features:
            raise RuntimeError("call prepare() first")
        t0 = time.perf_counter()
        feats, targets = [], []
        for _ in range(self.batch_size):
            i = int(self.rng.integers(len(self.features)))
            f0 = int(self.rng.integers(max(self.features[i].shape[0] - WINDOW, 0) + 1))
            feats.append(np.array(self.features[i][f0 : f0 + WINDOW]))
            targets.append(np.array(self.targets[i][f0 : f0 + WINDOW], dtype=np.int64))
        x, y = torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(targets))
        t1 = time.perf_counter()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        if x.shape[1:] != (WINDOW, self.settings.n_bins) or y.shape != x.shape[:2]:
            raise RuntimeError(f"unexpected batch shapes {tuple(x.shape)}, {tuple(y.shape)}")
        return self.batch_size, t1 - t0, t2 - t1
