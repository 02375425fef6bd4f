"""The CQT front end: audio -> log-magnitude constant-Q frames, BTC's settings.

``LogCQT`` wraps nnAudio's ``CQT1992v2`` (the variant that matches ``librosa.cqt``; FIELD-NOTES)
and returns ``log(|CQT| + 1e-6)`` as ``[batch, frames, 144]``. It always computes in float32
with autocast disabled, because fp16 underflows most CQT bins to zero; the output is float32
whatever autocast context surrounds it, so the same module serves CPU tests and GPU training.

Framing follows ``librosa.cqt`` exactly: frame ``i`` is centred at ``i * hop / sr`` seconds and
a signal of ``n`` samples gives ``n_frames(n)`` frames (librosa first halves the sample rate
for these settings, hence ``1 + ceil(n / 2) // (hop / 2)``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

LOG_EPS = 1e-6
FLOOR = math.log(LOG_EPS)  # the feature value of a silent bin
C1_HZ = 32.703195662574764  # librosa.note_to_hz("C1")


@dataclass(frozen=True)
class FeatureSettings:
    """CQT settings. The defaults are BTC's: 6 octaves from C1 at 24 bins per octave."""

    sr: int = 22050
    hop: int = 2048
    n_bins: int = 144
    bins_per_octave: int = 24
    fmin: float = C1_HZ

    @property
    def frame_seconds(self) -> float:
        """Seconds per frame (``hop / sr``): 0.0929 s for BTC's settings."""
        return self.hop / self.sr

    @property
    def bins_per_semitone(self) -> int:
        return self.bins_per_octave // 12

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of the settings, stored with caches and checkpoints."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]

    def n_frames(self, n_samples: int) -> int:
        """Frames that ``librosa.cqt`` (and ``LogCQT``) give for ``n_samples`` samples."""
        return 1 + math.ceil(n_samples / 2) // (self.hop // 2)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre time in seconds of each frame, ``[n_frames]``."""
        return np.arange(n_frames) * self.frame_seconds


class LogCQT(nn.Module):
    """Waveform ``[batch, samples]`` (or ``[samples]``) -> log-CQT ``[batch, frames, n_bins]``.

    The kernels and their librosa normalisation are nnAudio's (``CQT1992v2``, built once at
    construction). nnAudio convolves every bin with a 32,768-tap kernel, most of it zero
    padding: only the lowest bins need that length. Here the bins are convolved one octave at
    a time with kernels trimmed to that octave's non-zero span, which gives nnAudio's output
    (to float rounding; tested) with about 4x less arithmetic. Runs on the device of its
    buffers; move it with ``.to(device)`` like any module.
    """

    def __init__(self, settings: FeatureSettings | None = None) -> None:
        super().__init__()
        from nnAudio.features import CQT1992v2

        self.settings = settings or FeatureSettings()
        s = self.settings
        cqt = CQT1992v2(
            sr=s.sr,
            hop_length=s.hop,
            fmin=s.fmin,
            n_bins=s.n_bins,
            bins_per_octave=s.bins_per_octave,
            pad_mode="constant",  # librosa's default; nnAudio's "reflect" is 60% off at the edges
            output_format="Magnitude",
            verbose=False,
        )
        self.kernel_width = int(cqt.kernel_width)
        # nnAudio scales the conv output by sqrt(kernel length) ("librosa" normalisation);
        # the scale is linear, so it is folded into the kernels here.
        scale = torch.sqrt(cqt.lenghts.float())[:, None]
        real = cqt.cqt_kernels_real[:, 0] * scale
        imag = cqt.cqt_kernels_imag[:, 0] * scale
        self.offsets: list[int] = []
        self.group_sizes: list[int] = []
        for i, lo in enumerate(range(0, s.n_bins, s.bins_per_octave)):
            hi = min(lo + s.bins_per_octave, s.n_bins)
            k = torch.cat([real[lo:hi], imag[lo:hi]])  # [2 * bins, width]
            taps = (k != 0).any(dim=0).nonzero().flatten()
            a, b = int(taps.min()), int(taps.max()) + 1
            self.register_buffer(f"kernels{i}", k[:, a:b].unsqueeze(1).contiguous())
            self.offsets.append(a)
            self.group_sizes.append(hi - lo)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        squeeze = audio.dim() == 1
        if squeeze:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"LogCQT expects [batch, samples] audio, got shape {tuple(audio.shape)}")
        if audio.shape[-1] % 2:
            # librosa's framing for these settings works on ceil(n / 2) samples at sr / 2.
            audio = nn.functional.pad(audio, (0, 1))
        with torch.autocast(device_type=audio.device.type, enabled=False):
            half = self.kernel_width // 2
            x = nn.functional.pad(audio.float(), (half, half))[:, None]  # centred, zeros
            n_frames = (x.shape[-1] - self.kernel_width) // self.settings.hop + 1
            mags = []
            for i, (offset, bins) in enumerate(zip(self.offsets, self.group_sizes)):
                kernels = getattr(self, f"kernels{i}")
                y = nn.functional.conv1d(x[..., offset:], kernels, stride=self.settings.hop)
                y = y[..., :n_frames]
                mags.append(torch.sqrt(y[:, :bins] ** 2 + y[:, bins:] ** 2))
            feats = torch.log(torch.cat(mags, dim=1) + LOG_EPS).transpose(1, 2).contiguous()
        return feats[0] if squeeze else feats


def pitch_shift_cqt(
    features: torch.Tensor, semitones: torch.Tensor | int, bins_per_semitone: int = 2
) -> torch.Tensor:
    """Shift log-CQT frames in pitch by whole semitones, per batch item.

    Args:
        features: ``[batch, frames, bins]`` log-CQT.
        semitones: int or ``[batch]`` integer tensor; positive shifts up (towards higher bins).
        bins_per_semitone: 2 for BTC's 24 bins per octave.

    Returns:
        ``[batch, frames, bins]``, bins moved by ``2 * semitones``, vacated bins set to the
        floor value ``log(1e-6)`` (silence). Pair with ``Vocabulary.transpose`` for labels.
    """
    b, _, n_bins = features.shape
    shift = torch.as_tensor(semitones, device=features.device).long().reshape(-1)
    if shift.numel() == 1:
        shift = shift.expand(b)
    src = torch.arange(n_bins, device=features.device)[None, :] - bins_per_semitone * shift[:, None]
    valid = (src >= 0) & (src < n_bins)  # [batch, bins]
    idx = src.clamp(0, n_bins - 1)[:, None, :].expand_as(features)
    out = torch.gather(features, 2, idx)
    return out.masked_fill(~valid[:, None, :], FLOOR)


class FeatureStats:
    """Running scalar mean and std over a corpus of log-CQT frames (BTC's normalisation).

    Accumulates in float64 so a thousand hours do not lose precision.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = torch.as_tensor(features).detach().double()
        self.count += x.numel()
        self.total += float(x.sum())
        self.total_sq += float((x * x).sum())

    @property
    def mean(self) -> float:
        if not self.count:
            raise ValueError("FeatureStats: no frames seen")
        return self.total / self.count

    @property
    def std(self) -> float:
        mean = self.mean  # raises before the division when nothing was seen
        var = self.total_sq / self.count - mean**2
        return math.sqrt(max(var, 1e-12))
