"""Paired per-song bootstrap: the interval finds a planted difference and only a real one."""

from __future__ import annotations

import numpy as np
import pytest

from chordkd.errors import ChordkdError
from chordkd.evaluation.stats import mean_over_seeds, paired_bootstrap, paired_differences


def _noise(n: int = 40, seed: int = 1) -> np.ndarray:
    """Song-to-song noise (std 1.5 points) with mean exactly 0, so the planted shift is the
    sample's own mean difference."""
    e = np.random.default_rng(seed).normal(0.0, 1.5, size=n)
    return e - e.mean()


def test_a_planted_two_point_shift_gives_an_interval_around_two_that_excludes_zero():
    r = paired_bootstrap(2.0 + _noise())
    assert r.mean == pytest.approx(2.0)
    assert 0.0 < r.low < 2.0 < r.high
    assert r.high - r.low < 2.0  # 40 songs, std 1.5: the 95% interval is about +-0.46


def test_no_difference_gives_an_interval_that_contains_zero():
    r = paired_bootstrap(_noise())
    assert r.low < 0.0 < r.high


def test_the_interval_matches_scipys_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    d = 2.0 + _noise(25, seed=3)
    ours = paired_bootstrap(d, resamples=10_000, seed=0)
    theirs = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile",
                             random_state=np.random.default_rng(5)).confidence_interval
    # two independent draws of 10,000 resamples: the percentiles agree to Monte Carlo error
    assert ours.low == pytest.approx(theirs.low, abs=0.05)
    assert ours.high == pytest.approx(theirs.high, abs=0.05)


def test_a_fixed_seed_gives_the_same_interval_and_another_seed_another():
    d = 1.0 + _noise()
    assert paired_bootstrap(d, seed=4) == paired_bootstrap(d, seed=4)
    assert paired_bootstrap(d, seed=4).low != paired_bootstrap(d, seed=5).low


def test_wins_losses_and_ties_count_songs():
    r = paired_bootstrap([1.5, -0.5, 0.0, 2.0, 3.0], resamples=100)
    assert (r.wins, r.losses, r.ties, r.n_songs) == (3, 1, 1, 5)
    assert r.sentence("stage2 - teacher") == (
        f"stage2 - teacher: +1.20 (95% CI [{r.low:+.2f}, {r.high:+.2f}]), "
        "3 of 5 songs better, 1 worse")


def test_an_empty_or_non_finite_difference_is_refused():
    with pytest.raises(ChordkdError, match="non-empty"):
        paired_bootstrap([])
    with pytest.raises(ChordkdError, match="difference 1 is not finite"):
        paired_bootstrap([1.0, float("nan")])


def test_seeds_are_averaged_per_song_and_only_shared_songs_are_paired():
    a = mean_over_seeds([{"x": 0.5, "y": 0.9}, {"x": 0.7, "y": float("nan")}])
    assert a == {"x": pytest.approx(0.6), "y": pytest.approx(0.9)}
    songs, d = paired_differences(a, {"x": 0.5, "z": 0.1})
    assert songs == ["x"] and d.tolist() == pytest.approx([0.1])
