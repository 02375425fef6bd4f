"""Agreement of a model with its teacher: how often the two estimates name the same chord.

For each song the teacher's estimate plays the reference and the model's the estimate in
mir_eval's chord pipeline (``metrics.score_song``: adjusted to the teacher's span, cut at the
union of both boundaries, duration-weighted), compared at the ``majmin`` and ``mirex`` levels.
Songs pool like WCSR: agreeing seconds over comparable seconds. A teacher segment outside the
level's gamut (e.g. ``C:sus4`` for majmin) is not comparable, as for a reference. No ground
truth is read: the figure says how closely a student follows its teacher, not how right
either is. Identical estimates agree 100%.

:func:`agreement` takes estimates in memory (``chordkd evaluate``, when a run holds a teacher
row); :func:`folder_agreement` reads the ``estimates/<model>/<song>.lab`` files that every
evaluation writes, so ``chordkd results`` can compare rows evaluated in separate runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordkd.annotations import read_lab
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import score_song

log = logging.getLogger(__name__)

# column name -> mir_eval comparison level
AGREEMENT: dict[str, str] = {"agree_majmin": "majmin", "agree_mirex": "mirex"}

Estimate = tuple[np.ndarray, list[str]]  # intervals [n, 2] seconds, n Harte labels


@dataclass(frozen=True)
class Agreement:
    """Pooled agreement in [0, 1] per ``AGREEMENT`` column (NaN when nothing was comparable)
    over ``n_songs`` songs both estimated; ``skipped`` lists songs that could not be compared."""

    values: dict[str, float]
    n_songs: int
    skipped: tuple[str, ...] = ()


def agreement(teacher: Mapping[str, Estimate], model: Mapping[str, Estimate]) -> Agreement:
    """Agreement of ``model``'s estimates with ``teacher``'s over the songs both have.

    Args:
        teacher: song id -> (intervals float ``[n, 2]`` seconds, ``n`` labels).
        model: song id -> (intervals, labels), the same songs (others are ignored).
    """
    correct = dict.fromkeys(AGREEMENT, 0.0)
    comparable = dict.fromkeys(AGREEMENT, 0.0)
    songs, skipped = 0, []
    for song in sorted(set(teacher) & set(model)):
        try:
            score = score_song(*teacher[song], *model[song])
        except ChordkdError as exc:  # e.g. a teacher estimate with no segment at all
            log.warning("agreement: song %s not compared: %s", song, exc)
            skipped.append(song)
            continue
        songs += 1
        for column, level in AGREEMENT.items():
            correct[column] += score.correct[level]
            comparable[column] += score.comparable[level]
    values = {c: correct[c] / comparable[c] if comparable[c] > 0 else math.nan for c in AGREEMENT}
    return Agreement(values, songs, tuple(skipped))


def read_estimates(folder: str | os.PathLike) -> dict[str, Estimate]:
    """Song id -> estimate, from the ``<song>.lab`` files of one model's estimates folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ChordkdError(f"{folder}: no estimates folder (written by `chordkd evaluate`)")
    return {path.stem: _read_estimate(path) for path in sorted(folder.glob("*.lab"))}


def _read_estimate(path: Path) -> Estimate:
    # `chordkd evaluate` writes an empty file for an estimate with no segment (all N)
    if path.stat().st_size == 0:
        return np.zeros((0, 2)), []
    return read_lab(path)


def folder_agreement(teacher: str | os.PathLike, model: str | os.PathLike) -> Agreement:
    """:func:`agreement` of two ``estimates/<model>`` folders, over the songs both hold."""
    return agreement(read_estimates(teacher), read_estimates(model))
