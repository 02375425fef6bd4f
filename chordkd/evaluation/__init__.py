"""Evaluation: mir_eval WCSR and segmentation, per-quality recall, agreement with a teacher,
reports (``chordkd evaluate``), the results table with seeds, paired bootstrap comparisons
and the scaling curve (``chordkd results``).

``metrics``, ``quality``, ``agreement`` and ``stats`` are pure and light (mir_eval and numpy
only) so the training loop's validation callback can import them; ``report``, ``plots`` and
``results`` load models and matplotlib and are imported only where used.
"""

from chordkd.evaluation.metrics import (
    METRICS,
    SEGMENTATION,
    SongScore,
    aggregate,
    aggregate_segmentation,
    metric_mean,
    score_song,
)
from chordkd.evaluation.quality import (
    CONFUSION_COLUMNS,
    PAPER_GROUPS,
    QualityCounts,
    acqa,
    count_qualities,
    quality_confusion,
    quality_recall,
)

__all__ = [
    "CONFUSION_COLUMNS",
    "METRICS",
    "PAPER_GROUPS",
    "SEGMENTATION",
    "QualityCounts",
    "SongScore",
    "acqa",
    "aggregate",
    "aggregate_segmentation",
    "count_qualities",
    "metric_mean",
    "quality_confusion",
    "quality_recall",
    "score_song",
]
