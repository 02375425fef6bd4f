"""Audio input: any common file to mono float32 at the feature sample rate.

Decoding uses soundfile (libsndfile: wav, flac, ogg, mp3); resampling uses
``torchaudio.functional.resample`` (windowed sinc). Every failure raises
:class:`chordkd.errors.AudioError` naming the file and the reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from chordkd.errors import AudioError

SAMPLE_RATE = 22050
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# Shorter than one hop of the CQT there is not a single full frame to classify.
MIN_SECONDS = 0.1

log = logging.getLogger(__name__)


def load_audio(
    path: str | os.PathLike, sr: int = SAMPLE_RATE, min_seconds: float = MIN_SECONDS
) -> np.ndarray:
    """Read ``path`` as mono float32 samples at ``sr`` Hz, shape ``[n_samples]``.

    Multi-channel audio is averaged to mono; other sample rates are resampled.

    Raises:
        AudioError: the file is missing, unreadable (corrupt, not audio), empty, shorter
            than ``min_seconds``, or contains NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: not readable as audio ({_one_line(e)})") from e
    if data.size == 0:
        raise AudioError(f"{path}: contains no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if file_sr != sr:
        log.debug("%s: resampling %d Hz -> %d Hz", path, file_sr, sr)
        mono = resample(mono, file_sr, sr)
    if len(mono) < min_seconds * sr:
        raise AudioError(
            f"{path}: too short ({len(mono) / sr:.3f} s; at least {min_seconds} s needed)"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample(samples: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Resample float32 ``[n]`` from ``orig_sr`` to ``sr`` Hz (torchaudio's sinc resampler)."""
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(samples)), int(orig_sr), int(sr))
    return out.numpy()


def audio_info(path: str | os.PathLike) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) without decoding; AudioError if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: not readable as audio ({_one_line(e)})") from e
    return info.frames / info.samplerate, info.samplerate, info.channels


def is_audio_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
