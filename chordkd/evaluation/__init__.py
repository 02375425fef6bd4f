"""Evaluation: mir_eval WCSR, per-quality recall, reports (``chordkd evaluate``) and the
results table (``chordkd results``).

``metrics`` is pure and light (mir_eval and numpy only) so the training loop's validation
callback can import it; ``report``, ``plots`` and ``results`` load models and matplotlib and
are imported only where used.
"""

from chordkd.evaluation.metrics import (
    CONFUSION_COLUMNS,
    METRICS,
    PAPER_GROUPS,
    QualityCounts,
    SongScore,
    acqa,
    aggregate,
    count_qualities,
    metric_mean,
    quality_confusion,
    quality_recall,
    score_song,
)

__all__ = [
    "CONFUSION_COLUMNS",
    "METRICS",
    "PAPER_GROUPS",
    "QualityCounts",
    "SongScore",
    "acqa",
    "aggregate",
    "count_qualities",
    "metric_mean",
    "quality_confusion",
    "quality_recall",
    "score_song",
]
