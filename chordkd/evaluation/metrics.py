"""Scores of chord estimates: mir_eval's seven WCSR metrics and per-quality recall.

Pure functions; the comparisons are mir_eval's own (``mir_eval.chord.root`` ... ``mirex``),
never re-implemented here.

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

**Per-quality recall** (:func:`quality_recall`) works on frames, in a model's vocabulary: a
frame is correct when its estimated class equals its reference class *exactly* (in the large
vocabulary, root and quality, so C:maj7 for C:7 is wrong), and the recall of a quality group
is the fraction of the reference frames of that group that are correct. The groups are the
paper's (:data:`PAPER_GROUPS`; ``sus2`` and ``sus4`` form "Sus"); reference frames of class X
belong to no group and are left out. **ACQA** (average chord quality accuracy) is the
unweighted mean of the recalls of the groups that occur in the reference, so rare qualities
count as much as major chords.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import mir_eval.chord
import mir_eval.util
import numpy as np

from chordkd.chords import Vocabulary
from chordkd.errors import AnnotationError, ChordkdError, ChordLabelError

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

# The per-quality report groups of the paper, in its order.
PAPER_GROUPS: tuple[str, ...] = (
    "Major", "Minor", "Dom7", "Maj7", "Min7", "Dim", "Dim7", "Aug", "Sus",
    "Half-Dim", "Min6", "Maj6", "Min-Maj7", "No Chord",
)  # fmt: skip

# chordkd.chords.QUALITY_GROUPS -> paper group. X (out of vocabulary) has none.
PAPER_GROUP_OF: dict[str, str | None] = {
    "maj": "Major",
    "min": "Minor",
    "7": "Dom7",
    "maj7": "Maj7",
    "min7": "Min7",
    "dim": "Dim",
    "dim7": "Dim7",
    "aug": "Aug",
    "sus2": "Sus",
    "sus4": "Sus",
    "hdim7": "Half-Dim",
    "min6": "Min6",
    "maj6": "Maj6",
    "minmaj7": "Min-Maj7",
    "N": "No Chord",
    "X": None,
}

# Columns of the quality confusion matrix: the groups, then estimates of class X.
CONFUSION_COLUMNS: tuple[str, ...] = PAPER_GROUPS + ("X",)


# --------------------------------------------------------------------------------------------
# WCSR


@dataclass(frozen=True)
class SongScore:
    """mir_eval scores of one song, in seconds so songs can be pooled.

    ``correct[m]`` and ``comparable[m]`` are seconds for each metric ``m`` in ``METRICS``;
    ``duration`` is the evaluated span (the reference's, in seconds).
    """

    correct: dict[str, float]
    comparable: dict[str, float]
    duration: float

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
        }

    @classmethod
    def from_dict(cls, d: dict) -> SongScore:
        return cls(
            correct={m: float(d["correct"][m]) for m in METRICS},
            comparable={m: float(d["comparable"][m]) for m in METRICS},
            duration=float(d["duration"]),
        )


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def score_song(
    ref_intervals: np.ndarray,
    ref_labels: Sequence[str],
    est_intervals: np.ndarray,
    est_labels: Sequence[str],
) -> SongScore:
    """Score one estimate against its reference with mir_eval's seven chord metrics.

    Args:
        ref_intervals: float ``[n, 2]`` (start, end) seconds, ``n >= 1``, each of positive
            length (as ``read_lab`` returns them).
        ref_labels: ``n`` Harte labels (``"C:maj"``, ``"N"``, ``"X"``, ...).
        est_intervals: float ``[m, 2]`` seconds (``m`` may be 0: all N).
        est_labels: ``m`` Harte labels.

    Returns:
        A :class:`SongScore`; ``score.accuracy[m]`` equals ``mir_eval.chord.evaluate(...)[m]``
        wherever something is comparable.

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
    return SongScore(correct=correct, comparable=comparable, duration=end - start)


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


def metric_mean(accuracies: dict[str, float]) -> float:
    """Unweighted mean of the seven metrics (the paper's "mean" column); NaN metrics skipped."""
    values = [accuracies[m] for m in METRICS if not math.isnan(accuracies[m])]
    return float(np.mean(values)) if values else math.nan


# --------------------------------------------------------------------------------------------
# Per-quality recall


@dataclass
class QualityCounts:
    """Frame counts per paper quality group, additive over songs (``a + b``).

    ``frames[g]``: reference frames of group ``PAPER_GROUPS[g]``; ``correct[g]``: those whose
    estimated class is exactly the reference class; ``confusion[g, h]``: reference frames of
    group ``g`` estimated as group ``CONFUSION_COLUMNS[h]`` (the last column is estimated X).
    """

    frames: np.ndarray = field(default_factory=lambda: np.zeros(len(PAPER_GROUPS), np.int64))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(len(PAPER_GROUPS), np.int64))
    confusion: np.ndarray = field(
        default_factory=lambda: np.zeros((len(PAPER_GROUPS), len(CONFUSION_COLUMNS)), np.int64)
    )

    def __add__(self, other: QualityCounts) -> QualityCounts:
        return QualityCounts(
            self.frames + other.frames,
            self.correct + other.correct,
            self.confusion + other.confusion,
        )

    def recall(self) -> dict[str, float]:
        """Recall per group in ``PAPER_GROUPS`` order; NaN for groups absent from the reference."""
        return {
            g: _ratio(float(c), float(n))
            for g, c, n in zip(PAPER_GROUPS, self.correct, self.frames)
        }

    def acqa(self) -> float:
        """Unweighted mean recall over the groups present in the reference; NaN if none."""
        return acqa(self.recall())

    def to_dict(self) -> dict:
        return {
            "groups": list(PAPER_GROUPS),
            "confusion_columns": list(CONFUSION_COLUMNS),
            "frames": self.frames.tolist(),
            "correct": self.correct.tolist(),
            "confusion": self.confusion.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> QualityCounts:
        if list(d["groups"]) != list(PAPER_GROUPS):
            raise ChordkdError(f"quality counts list groups {d['groups']}, expected {PAPER_GROUPS}")
        return cls(
            np.asarray(d["frames"], np.int64),
            np.asarray(d["correct"], np.int64),
            np.asarray(d["confusion"], np.int64),
        )


def _group_table(vocab: Vocabulary) -> np.ndarray:
    """int64 ``[size]``: class -> column of ``CONFUSION_COLUMNS`` (X -> the X column)."""
    table = np.empty(vocab.size, dtype=np.int64)
    for i in range(vocab.size):
        group = PAPER_GROUP_OF[vocab.quality_group(i)]
        table[i] = PAPER_GROUPS.index(group) if group is not None else len(PAPER_GROUPS)
    return table


def _as_classes(frames: Sequence | np.ndarray, vocab: Vocabulary, side: str) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 1:
        raise ChordkdError(f"{side} frames must have shape [n_frames], got {arr.shape}")
    if arr.size and arr.dtype.kind in "USO":  # Harte labels, one per frame
        return vocab.encode_many([str(x) for x in arr])
    if arr.size and arr.dtype.kind not in "iu":
        raise ChordkdError(f"{side} frames must be class indices or labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab.size):
        raise ChordkdError(
            f"{side} frame classes must lie in 0..{vocab.size - 1} "
            f"(vocabulary {vocab.name!r}), got {arr.min()}..{arr.max()}"
        )
    return arr


def count_qualities(
    ref_frames: Sequence | np.ndarray, est_frames: Sequence | np.ndarray, vocab: Vocabulary
) -> QualityCounts:
    """Per-group frame counts of one song (see :class:`QualityCounts`).

    Args:
        ref_frames: ``[T]`` reference class indices in ``vocab`` (or Harte labels per frame).
        est_frames: ``[T]`` estimated class indices in ``vocab`` (or labels).
        vocab: the vocabulary both are expressed in (the model's).
    """
    ref = _as_classes(ref_frames, vocab, "reference")
    est = _as_classes(est_frames, vocab, "estimate")
    if ref.shape != est.shape:
        raise ChordkdError(f"{len(ref)} reference frames but {len(est)} estimated frames")
    table = _group_table(vocab)
    ref_group, est_group = table[ref], table[est]
    keep = ref_group < len(PAPER_GROUPS)  # reference X frames belong to no group
    ref_group, est_group = ref_group[keep], est_group[keep]
    n_g, n_c = len(PAPER_GROUPS), len(CONFUSION_COLUMNS)
    frames = np.bincount(ref_group, minlength=n_g)
    correct = np.bincount(ref_group[ref[keep] == est[keep]], minlength=n_g)
    confusion = np.bincount(ref_group * n_c + est_group, minlength=n_g * n_c).reshape(n_g, n_c)
    return QualityCounts(frames, correct, confusion)


def quality_recall(
    ref_frames: Sequence | np.ndarray, est_frames: Sequence | np.ndarray, vocab: Vocabulary
) -> dict[str, float]:
    """Frame recall per reference quality group: ``{group: correct / reference frames}``.

    Every group of ``PAPER_GROUPS`` is a key, NaN where the reference has no frame of it.
    Correct means the exact class (see the module docstring); X reference frames are ignored.
    """
    return count_qualities(ref_frames, est_frames, vocab).recall()


def quality_confusion(
    ref_frames: Sequence | np.ndarray, est_frames: Sequence | np.ndarray, vocab: Vocabulary
) -> np.ndarray:
    """Frame counts int64 ``[14, 15]``: reference group (``PAPER_GROUPS``) x estimated group
    (``CONFUSION_COLUMNS``). Groups only, so C:maj estimated as D:maj lands on the diagonal."""
    return count_qualities(ref_frames, est_frames, vocab).confusion


def acqa(recall: dict[str, float]) -> float:
    """ACQA: unweighted mean of the non-NaN recalls (groups present); NaN, warned, if none."""
    present = [r for r in recall.values() if not math.isnan(r)]
    if not present:
        warnings.warn("ACQA: no quality group occurs in the reference; reporting NaN",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    return float(np.mean(present))
