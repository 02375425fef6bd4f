"""What one evaluation holds: per-model scores in memory and the ``overall.json`` format.

``chordkd evaluate`` fills :class:`ModelResult` per model and writes
:meth:`EvaluationResult.overall_dict` as ``overall.json`` (``"format": FORMAT``);
``chordkd results`` reads it back as one flat row of :data:`COLUMNS` per model
(:func:`column_values`). All values are fractions in [0, 1]; NaN (null) where undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chordkd.errors import ChordkdError
from chordkd.evaluation.agreement import AGREEMENT, Agreement, Estimate
from chordkd.evaluation.metrics import (
    METRICS,
    SEGMENTATION,
    SongScore,
    aggregate,
    aggregate_segmentation,
    metric_mean,
)
from chordkd.evaluation.quality import PAPER_GROUPS, QualityCounts

FORMAT = "chordkd-evaluation/1"
ROLES = ("teacher", "baseline", "stage1", "stage2")

# One row of a results table: the seven WCSR metrics and their mean; ACQA exact-class and
# quality-only; mir_eval's segmentation; agreement with the teacher.
COLUMNS: tuple[str, ...] = (*METRICS, "mean", "acqa", "acqa_quality", *SEGMENTATION, *AGREEMENT)


@dataclass
class ModelResult:
    """Scores of one model: per song (by song id) and pooled; its estimates in memory."""

    name: str
    meta: dict[str, Any]
    scores: dict[str, SongScore] = field(default_factory=dict)
    qualities: dict[str, QualityCounts] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict, repr=False)
    agreement: Agreement | None = None
    agreement_with: str | None = None  # the teacher model's name

    @property
    def overall(self) -> dict[str, float]:
        """Corpus WCSR per metric (``metrics.aggregate``), NaN if no song was scored."""
        return aggregate(list(self.scores.values()))

    @property
    def quality(self) -> QualityCounts:
        """Frame counts pooled over songs."""
        total = QualityCounts()
        for counts in self.qualities.values():
            total = total + counts
        return total

    def summary(self) -> dict[str, Any]:
        overall = self.overall
        agreement = None
        if self.agreement is not None:
            agreement = {"teacher": self.agreement_with, "n_songs": self.agreement.n_songs,
                         **self.agreement.values}
        return {
            "meta": self.meta,
            "n_songs": len(self.scores),
            "duration": math.fsum(s.duration for s in self.scores.values()),
            "metrics": overall,
            "mean": metric_mean(overall),
            "segmentation": aggregate_segmentation(list(self.scores.values())),
            **self.quality.summary(),
            "quality_counts": self.quality.to_dict(),
            "agreement": agreement,
        }

    def song_summary(self, song: str) -> dict[str, Any]:
        return {**self.scores[song].to_dict(), **self.qualities[song].summary()}


@dataclass
class EvaluationResult:
    """What ``evaluate_models`` computed and wrote."""

    models: dict[str, ModelResult]
    skipped: list[dict[str, str]]
    timeline_song: str | None
    files: dict[str, Path] = field(default_factory=dict)

    def overall_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "metrics": list(METRICS),
            "quality_groups": list(PAPER_GROUPS),
            "models": {name: m.summary() for name, m in self.models.items()},
            "skipped": self.skipped,
            "timeline_song": self.timeline_song,
        }

    def songs_dict(self) -> dict[str, Any]:
        out = {name: {song: m.song_summary(song) for song in m.scores}
               for name, m in self.models.items()}
        return {"format": FORMAT, "models": out}


def column_values(summary: dict[str, Any], where: str) -> dict[str, float]:
    """A model's ``overall.json`` summary as one flat row: column -> fraction (NaN if null).

    Raises ChordkdError naming ``where`` and the field when a field every report has is
    missing; the newer columns (``acqa_quality``, segmentation, agreement) are NaN when absent.
    """
    try:
        values = {m: summary["metrics"][m] for m in METRICS}
        values["mean"] = summary["mean"]
        values["acqa"] = summary["acqa"]
    except (KeyError, TypeError) as exc:
        raise ChordkdError(f"{where}: missing field {exc}") from None
    values["acqa_quality"] = summary.get("acqa_quality")
    segmentation = summary.get("segmentation") or {}
    agreement = summary.get("agreement") or {}
    for key in SEGMENTATION:
        values[key] = segmentation.get(key)
    for key in AGREEMENT:
        values[key] = agreement.get(key)
    out = {}
    for key in COLUMNS:
        try:
            out[key] = math.nan if values[key] is None else float(values[key])
        except (TypeError, ValueError):
            raise ChordkdError(f"{where}: field {key!r} is not a number: {values[key]!r}") from None
    return out
