"""Chord-preserving augmentations of log-CQT windows: gain, EQ, noise and time masks.

The features are ``log(|CQT| + 1e-6)`` (natural log), so a gain of ``g`` dB adds
``g * ln(10) / 20`` to every bin and a filter adds its (smooth) log response per bin: both are
exact here. Noise is added in magnitude (``log(exp(x) + n)``), a floor under the music. None of
them moves energy between pitches, and there is deliberately no pitch shift: two views of one
stretch must carry the same chord.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DB = math.log(10) / 20  # natural-log units per dB of magnitude


@dataclass(frozen=True)
class ViewAugment:
    """Draws one augmented view of a batch of raw log-CQT windows ``[B, T, F]``.

    ``gain_db``: gain uniform in ``+-gain_db``; ``eq_db``: a random tilt across the bins plus
    one bump (an octave wide, 24 bins) at a random bin, each up to ``+-eq_db``; ``noise_db``:
    a noise floor up to ``noise_db`` dB below the window's peak magnitude (30 dB range below
    that); ``time_masks`` spans of up to ``time_mask_width`` frames set to the window's mean.
    """

    gain_db: float = 6.0
    eq_db: float = 6.0
    noise_db: float = -30.0
    time_masks: int = 2
    time_mask_width: int = 6

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, t, f = x.shape

        def uniform(*shape: int) -> torch.Tensor:  # U(-1, 1), drawn on the CPU (any device)
            return (2 * torch.rand(*shape, generator=generator) - 1).to(x.device, x.dtype)

        bins = torch.linspace(-1, 1, f, device=x.device, dtype=x.dtype)
        centre = uniform(b, 1)
        bump = torch.exp(-0.5 * ((bins[None] - centre) * f / 24) ** 2)  # [B, F]
        eq = self.eq_db * (uniform(b, 1) * bins[None] + uniform(b, 1) * bump)
        y = x + DB * (self.gain_db * uniform(b, 1, 1) + eq[:, None, :])
        if math.isfinite(self.noise_db):
            peak = y.amax(dim=(1, 2), keepdim=True)
            level = DB * (self.noise_db - 15 * (1 + uniform(b, 1, 1)))  # noise_db - [0, 30] dB
            noise = torch.exp(peak + level) * uniform(b, t, f).abs()
            y = torch.log(torch.exp(y) + noise)
        if self.time_masks and self.time_mask_width:
            mean = y.mean(dim=(1, 2), keepdim=True)
            frames = torch.arange(t, device=x.device)
            hidden = torch.zeros(b, t, dtype=torch.bool, device=x.device)
            for _ in range(self.time_masks):
                width = torch.randint(0, self.time_mask_width + 1, (b, 1), generator=generator)
                start = (torch.rand(b, 1, generator=generator) * (t - width + 1)).long()
                width, start = width.to(x.device), start.to(x.device)
                hidden |= (frames[None] >= start) & (frames[None] < start + width)
            y = torch.where(hidden[..., None], mean, y)
        return y
