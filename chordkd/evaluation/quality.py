"""Per-quality frame recall and ACQA, counted two ways, both in a model's vocabulary.

The reference frames are grouped by quality into the paper's groups (:data:`PAPER_GROUPS`;
``sus2`` and ``sus4`` form "Sus", N is "No Chord"); reference frames of class X belong to no
group and are left out. The recall of a group is the fraction of its reference frames that
are correct, and **ACQA** (average chord quality accuracy) is the unweighted mean of the
recalls of the groups that occur in the reference, No Chord included, so rare qualities
count as much as major chords. What "correct" means gives the two figures, labelled apart
in every report:

- **exact class** (``quality_recall``, ``acqa``): the estimated class equals the reference
  class (in the large vocabulary root and quality, so C:maj7 for C:7 and D:maj for C:maj are
  wrong). Stricter, lower numbers.
- **quality only** (``quality_recall_quality``, ``acqa_quality``): the estimated quality group
  equals the reference's, root ignored, so D:maj for C:maj is right (and C:sus2 for C:sus4,
  one group). This is how the paper's public code (ChordMini's quality report) counts.

Both come from one :class:`QualityCounts`: the quality-only hits are the diagonal of its
group confusion matrix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from chordkd.chords import Vocabulary
from chordkd.errors import ChordkdError

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

Match = Literal["class", "quality"]


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


@dataclass
class QualityCounts:
    """Frame counts per paper quality group, additive over songs (``a + b``).

    ``frames[g]``: reference frames of group ``PAPER_GROUPS[g]``; ``correct[g]``: those whose
    estimated class is exactly the reference class; ``confusion[g, h]``: reference frames of
    group ``g`` estimated as group ``CONFUSION_COLUMNS[h]`` (the last column is estimated X),
    so ``confusion[g, g]`` counts the frames whose quality is right, whatever the root.
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

    @property
    def present(self) -> bool:
        """Whether any reference frame belongs to a group (else ACQA is undefined)."""
        return bool(self.frames.sum() > 0)

    def recall(self, match: Match = "class") -> dict[str, float]:
        """Recall per group in ``PAPER_GROUPS`` order; NaN for groups absent from the reference.

        ``match="class"``: exact class; ``"quality"``: quality group, root ignored.
        """
        if match == "class":
            hits = self.correct
        elif match == "quality":
            hits = np.diagonal(self.confusion)
        else:
            raise ChordkdError(f"match must be 'class' or 'quality', got {match!r}")
        return {g: _ratio(float(c), float(n)) for g, c, n in zip(PAPER_GROUPS, hits, self.frames)}

    def acqa(self, match: Match = "class") -> float:
        """Unweighted mean recall over the groups present in the reference; NaN if none."""
        return acqa(self.recall(match))

    def summary(self) -> dict:
        """Both recalls and both ACQAs (NaN, unwarned, when no group is present)."""
        return {
            "quality_recall": self.recall("class"),
            "acqa": self.acqa("class") if self.present else math.nan,
            "quality_recall_quality": self.recall("quality"),
            "acqa_quality": self.acqa("quality") if self.present else math.nan,
        }

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
    ref_frames: Sequence | np.ndarray,
    est_frames: Sequence | np.ndarray,
    vocab: Vocabulary,
    match: Match = "class",
) -> dict[str, float]:
    """Frame recall per reference quality group: ``{group: correct / reference frames}``.

    Every group of ``PAPER_GROUPS`` is a key, NaN where the reference has no frame of it.
    ``match="class"``: correct means the exact class; ``"quality"``: the same quality group,
    root ignored (the paper's code). X reference frames are ignored.
    """
    return count_qualities(ref_frames, est_frames, vocab).recall(match)


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
