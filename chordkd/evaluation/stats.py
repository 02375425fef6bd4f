"""Paired comparison of two models song by song, with a bootstrap confidence interval.

Two models scored on the same test songs differ song by song; the songs, not the frames, are
the independent units (frames of one song are strongly correlated). So a comparison takes one
difference per song (A - B, e.g. stage 2 minus teacher on the mean of the seven WCSR
metrics), after averaging each model's score of the song over its seeds, and resamples songs:

- the **mean difference** over songs (an unweighted mean: every song counts once);
- its **95% percentile bootstrap interval**: 10,000 resamples of the songs with replacement
  (numpy's ``default_rng(seed)``, so a fixed seed gives the same interval), the 2.5th and
  97.5th percentiles of the resampled means. An interval that excludes 0 says the sign of the
  difference holds beyond the song-to-song spread of this test set;
- **wins and losses**: songs where A scores above / below B (ties apart).

Pure numpy; ``chordkd results`` builds its comparisons from these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from chordkd.errors import ChordkdError

RESAMPLES = 10_000
LEVEL = 0.95
_CHUNK = 1_000  # resamples drawn at once, so memory stays ~ CHUNK x songs


@dataclass(frozen=True)
class PairedResult:
    """The paired comparison of A and B over ``n_songs`` songs, in the differences' unit."""

    mean: float
    low: float
    high: float
    n_songs: int
    wins: int
    losses: int
    ties: int
    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self, name: str, unit: str = "") -> str:
        """``"stage2 - teacher: +1.10 (95% CI [-0.10, +2.45]), 11 of 16 songs better"``."""
        unit = f" {unit}" if unit else ""
        return (f"{name}: {self.mean:+.2f}{unit} ({100 * self.level:.0f}% CI "
                f"[{self.low:+.2f}, {self.high:+.2f}]), {self.wins} of {self.n_songs} songs "
                f"better" + (f", {self.losses} worse" if self.losses else ""))


def paired_bootstrap(
    differences: Sequence[float] | np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedResult:
    """Mean, percentile bootstrap interval and wins/losses of per-song differences.

    Args:
        differences: ``[n_songs]`` finite values A - B, one per song (n >= 1).
        resamples: bootstrap resamples of the songs (with replacement).
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same interval.
        level: coverage of the interval, in (0, 1).

    >>> r = paired_bootstrap([2.0, 2.0, 2.0])
    >>> (r.mean, r.low, r.high, r.wins)
    (2.0, 2.0, 2.0, 3)
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ChordkdError(f"paired bootstrap needs a non-empty [n_songs] vector, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ChordkdError(f"paired bootstrap: difference {int(np.flatnonzero(~np.isfinite(d))[0])} "
                           "is not finite")
    if resamples < 1 or not 0 < level < 1:
        raise ChordkdError(f"paired bootstrap: resamples {resamples} must be >= 1 and level "
                           f"{level} in (0, 1)")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        means[start:start + count] = d[rng.integers(0, d.size, size=(count, d.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedResult(
        mean=float(d.mean()), low=float(low), high=float(high), n_songs=int(d.size),
        wins=int((d > 0).sum()), losses=int((d < 0).sum()), ties=int((d == 0).sum()),
        level=level, resamples=resamples, seed=seed,
    )  # fmt: skip


def mean_over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Song -> the mean of its finite values over seeds (each mapping: song -> value of one
    seed); a song no seed scored (all NaN) is left out."""
    songs = sorted({s for values in per_seed for s in values})
    out = {}
    for song in songs:
        values = [v[song] for v in per_seed if song in v and not math.isnan(v[song])]
        if values:
            out[song] = float(np.mean(values))
    return out


def paired_differences(
    a: Mapping[str, float], b: Mapping[str, float]
) -> tuple[list[str], np.ndarray]:
    """Songs scored by both (finite) and ``a[song] - b[song]`` for each, in song order."""
    songs = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    return songs, np.array([a[s] - b[s] for s in songs], dtype=np.float64)
