"""Scores of chord estimates: mir_eval's seven WCSR metrics and its segmentation scores.

Pure functions; the comparisons are mir_eval's own (``mir_eval.chord.root`` ... ``mirex``,
``overseg``, ``underseg``), never re-implemented here. Per-quality recall and ACQA live in
``chordkd.evaluation.quality`` (re-exported here).

**WCSR** (weighted chord symbol recall). For one song, :func:`score_song` runs the pipeline of
``mir_eval.chord.evaluate``: the estimate is trimmed or padded with N to the reference's span
(``adjust_intervals``), both are cut at the union of their boundaries
(``merge_labeled_intervals``), each piece is compared, and the piece durations weight the
comparisons. Pieces whose comparison is -1 (reference X, or a reference chord outside the
metric's gamut, e.g. ``C:sus4`` for ``majmin``) are not comparable and leave the score. A
:class:`SongScore` keeps, per metric, the correct and the comparable duration in seconds, so
:func:`aggregate` can pool songs exactly: corpus WCSR = sum of correct durations / sum of
comparable durations (longer songs weigh more; this is the standard MIREX figure, not the
mean of per-song accuracies). One difference from mir_eval: where nothing is comparable
mir_eval returns 0 with a warning; here the accuracy is NaN (undefined), so an empty metric
never drags a mean down.

**Segmentation** (:data:`SEGMENTATION`). Also as ``mir_eval.chord.evaluate`` computes them:
on the adjusted estimate, runs of equal labels merged (``merge_chord_intervals``) on both
sides, ``overseg`` = 1 - directional Hamming distance from the reference to the estimate (1:
the estimate never splits a reference segment), ``underseg`` the other way round (1: it never
merges two), and ``seg`` = their minimum. Pooled over songs by :func:`aggregate_segmentation`,
weighted by the songs' durations like WCSR.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import mir_eval.chord
import mir_eval.util
import numpy as np

from chordkd.errors import AnnotationError, ChordLabelError

# Per-quality recall has its own module; its names stay importable from here.
from chordkd.evaluation.quality import (  # noqa: F401
    CONFUSION_COLUMNS,
    PAPER_GROUP_OF,
    PAPER_GROUPS,
    QualityCounts,
    acqa,
    count_qualities,
    quality_confusion,
    quality_recall,
)

METRICS: tuple[str, ...] = ("root", "thirds", "triads", "sevenths", "tetrads", "majmin", "mirex")

_COMPARISONS = {
    "root": mir_eval.chord.root,
    "thirds": mir_eval.chord.thirds,
    "triads": mir_eval.chord.triads,
    "sevenths": mir_eval.chord.sevenths,
    "tetrads": mir_eval.chord.tetrads,
    "majmin": mir_eval.chord.majmin,
    "mirex": mir_eval.chord.mirex,
}

SEGMENTATION: tuple[str, ...] = ("overseg", "underseg", "seg")


# --------------------------------------------------------------------------------------------
# WCSR


@dataclass(frozen=True)
class SongScore:
    """mir_eval scores of one song, in seconds so songs can be pooled.

    ``correct[m]`` and ``comparable[m]`` are seconds for each metric ``m`` in ``METRICS``;
    ``duration`` is the evaluated span (the reference's, in seconds); ``segmentation[s]`` the
    song's mir_eval score in [0, 1] for each ``s`` in ``SEGMENTATION`` (NaN when unknown, as
    in reports written before chordkd computed it).
    """

    correct: dict[str, float]
    comparable: dict[str, float]
    duration: float
    segmentation: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(SEGMENTATION, math.nan))

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy per metric in [0, 1]; NaN where nothing was comparable."""
        return {m: _ratio(self.correct[m], self.comparable[m]) for m in METRICS}

    def to_dict(self) -> dict:
        return {
            "duration": self.duration,
            "correct": dict(self.correct),
            "comparable": dict(self.comparable),
            "accuracy": self.accuracy,
            "segmentation": dict(self.segmentation),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SongScore:
        segmentation = d.get("segmentation") or {}
        return cls(
            correct={m: float(d["correct"][m]) for m in METRICS},
            comparable={m: float(d["comparable"][m]) for m in METRICS},
            duration=float(d["duration"]),
            segmentation={s: _float(segmentation.get(s)) for s in SEGMENTATION},
        )


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def score_song(
    ref_intervals: np.ndarray,
    ref_labels: Sequence[str],
    est_intervals: np.ndarray,
    est_labels: Sequence[str],
) -> SongScore:
    """Score one estimate against its reference with mir_eval's seven chord metrics and its
    three segmentation scores.

    Args:
        ref_intervals: float ``[n, 2]`` (start, end) seconds, ``n >= 1``, each of positive
            length (as ``read_lab`` returns them).
        ref_labels: ``n`` Harte labels (``"C:maj"``, ``"N"``, ``"X"``, ...).
        est_intervals: float ``[m, 2]`` seconds (``m`` may be 0: all N).
        est_labels: ``m`` Harte labels.

    Returns:
        A :class:`SongScore`; ``score.accuracy[m]`` equals ``mir_eval.chord.evaluate(...)[m]``
        wherever something is comparable, and ``score.segmentation[s]`` equals it always.

    Raises:
        AnnotationError: malformed intervals (naming which side and which interval).
        ChordLabelError: a label mir_eval cannot parse (naming side, index and time).

    >>> s = score_song(np.array([[0.0, 2.0]]), ["C:maj"], np.array([[0.0, 1.0]]), ["C:maj"])
    >>> s.accuracy["root"]
    0.5
    """
    ref_intervals = _check_intervals(ref_intervals, ref_labels, "reference", allow_empty=False)
    est_intervals = _check_intervals(est_intervals, est_labels, "estimate", allow_empty=True)
    _check_labels(ref_labels, ref_intervals, "reference")
    _check_labels(est_labels, est_intervals, "estimate")

    start, end = float(ref_intervals.min()), float(ref_intervals.max())
    est_intervals, est_labels = mir_eval.util.adjust_intervals(
        est_intervals, list(est_labels), start, end,
        mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD,
    )  # fmt: skip
    intervals, ref_pieces, est_pieces = mir_eval.util.merge_labeled_intervals(
        ref_intervals, list(ref_labels), est_intervals, est_labels
    )
    durations = mir_eval.util.intervals_to_durations(intervals)
    correct, comparable = {}, {}
    for metric in METRICS:
        comparisons = _COMPARISONS[metric](ref_pieces, est_pieces)
        valid = comparisons >= 0
        correct[metric] = float(np.sum(comparisons[valid] * durations[valid]))
        comparable[metric] = float(np.sum(durations[valid]))
    merged_ref = mir_eval.chord.merge_chord_intervals(ref_intervals, list(ref_labels))
    merged_est = mir_eval.chord.merge_chord_intervals(est_intervals, est_labels)
    over = float(mir_eval.chord.overseg(merged_ref, merged_est))
    under = float(mir_eval.chord.underseg(merged_ref, merged_est))
    return SongScore(correct=correct, comparable=comparable, duration=end - start,
                     segmentation={"overseg": over, "underseg": under, "seg": min(over, under)})


def _check_intervals(
    intervals: np.ndarray, labels: Sequence[str], side: str, allow_empty: bool
) -> np.ndarray:
    try:
        arr = np.asarray(intervals, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{side} intervals are not numeric: {exc}") from None
    if arr.size == 0 and allow_empty:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AnnotationError(f"{side} intervals must have shape [n, 2], got {arr.shape}")
    if len(arr) == 0 and not allow_empty:
        raise AnnotationError(f"{side} has no intervals")
    if len(labels) != len(arr):
        raise AnnotationError(f"{side} has {len(arr)} intervals but {len(labels)} labels")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1) | (arr < 0).any(axis=1))
    if bad.size:
        k = int(bad[0])
        raise AnnotationError(f"{side} interval {k} {arr[k].tolist()}: times must be finite and >= 0")
    bad = np.flatnonzero(arr[:, 1] <= arr[:, 0])
    if bad.size:
        k = int(bad[0])
        raise AnnotationError(
            f"{side} interval {k} {arr[k].tolist()} ({labels[k]!r}) does not have positive length"
        )
    return arr


def _check_labels(labels: Sequence[str], intervals: np.ndarray, side: str) -> None:
    # mir_eval's comparisons raise deep inside encode_many without saying which label;
    # check each distinct label once, up front, and name the first place it occurs.
    for label in dict.fromkeys(labels):
        try:
            mir_eval.chord.encode(label)
        except (mir_eval.chord.InvalidChordException, TypeError, AttributeError) as exc:
            k = list(labels).index(label)
            raise ChordLabelError(
                f"{side} label {label!r} (interval {k}, at {intervals[k, 0]:g} s) "
                f"is not a chord mir_eval can score: {exc}"
            ) from None


def aggregate(scores: Sequence[SongScore]) -> dict[str, float]:
    """Corpus WCSR per metric: total correct seconds / total comparable seconds over songs.

    Songs are weighted by their comparable duration (the standard MIREX figure), not
    averaged song by song. A metric with no comparable duration at all is NaN, with a
    ``RuntimeWarning`` naming it (mir_eval would return 0).

    >>> a = SongScore(dict.fromkeys(METRICS, 1.0), dict.fromkeys(METRICS, 2.0), 2.0)
    >>> b = SongScore(dict.fromkeys(METRICS, 6.0), dict.fromkeys(METRICS, 6.0), 6.0)
    >>> aggregate([a, b])["root"]  # (1 + 6) / (2 + 6)
    0.875
    """
    out = {}
    for metric in METRICS:
        correct = math.fsum(s.correct[metric] for s in scores)
        comparable = math.fsum(s.comparable[metric] for s in scores)
        if comparable <= 0:
            warnings.warn(
                f"WCSR {metric!r}: no comparable reference duration in {len(scores)} songs; "
                "reporting NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        out[metric] = _ratio(correct, comparable)
    return out


def aggregate_segmentation(scores: Sequence[SongScore]) -> dict[str, float]:
    """Corpus segmentation scores: the songs' scores weighted by their durations, so a
    song counts as its seconds do in WCSR. Songs without a score (NaN) are left out; NaN
    when none has one.

    >>> a = SongScore({}, {}, 1.0, {"overseg": 1.0, "underseg": 0.5, "seg": 0.5})
    >>> b = SongScore({}, {}, 3.0, {"overseg": 0.5, "underseg": 0.5, "seg": 0.5})
    >>> aggregate_segmentation([a, b])["overseg"]  # (1 * 1.0 + 3 * 0.5) / 4
    0.625
    """
    out = {}
    for key in SEGMENTATION:
        pairs = [(s.segmentation[key], s.duration) for s in scores
                 if not math.isnan(s.segmentation[key])]
        weight = math.fsum(d for _, d in pairs)
        out[key] = _ratio(math.fsum(v * d for v, d in pairs), weight)
    return out


def metric_mean(accuracies: dict[str, float]) -> float:
    """Unweighted mean of the seven metrics (the paper's "mean" column); NaN metrics skipped."""
    values = [accuracies[m] for m in METRICS if not math.isnan(accuracies[m])]
    return float(np.mean(values)) if values else math.nan
