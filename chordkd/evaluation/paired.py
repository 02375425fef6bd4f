"""Paired per-song comparisons of the rows of ``chordkd results`` (``paired.{md,csv,json}``).

Which rows are compared: ``entries.comparisons`` (every row against its teacher and its
baseline, each ``+viterbi`` row against its argmax row, each ``<role>-<variant>`` row against
its role's row). How: ``stats`` (per-song differences on the seeds both rows have, after
averaging each row's seeds per song, mean, 95% bootstrap interval over songs,
wins/losses). Scores come from the ``songs.json`` beside each ``overall.json``; differences
are in percentage points.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chordkd.atomic import write_json, write_text
from chordkd.evaluation.entries import Group, comparisons, on_common_seeds
from chordkd.evaluation.metrics import METRICS
from chordkd.evaluation.stats import (
    LEVEL,
    RESAMPLES,
    PairedResult,
    mean_over_seeds,
    paired_bootstrap,
    paired_differences,
)
from chordkd.evaluation.tables import csv_text, json_safe, markdown_table

log = logging.getLogger(__name__)

# "mean": the unweighted mean of the seven metrics per song (the headline figure)
PAIRED_COLUMNS: tuple[str, ...] = ("mean", *METRICS)


@dataclass
class Comparison:
    """A - B song by song: ``results[column]`` for each column with songs in common."""

    a: Group
    b: Group
    results: dict[str, PairedResult]

    @property
    def name(self) -> str:
        return f"{self.a.label} - {self.b.label}"


def compare(a: Group, b: Group, resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
    """The paired comparison of two groups on every column of ``PAIRED_COLUMNS``, on the seeds
    both have (:func:`entries.on_common_seeds`)."""
    sa, sb = on_common_seeds(a, b)
    results = {}
    for column in PAIRED_COLUMNS:
        _, d = paired_differences(mean_over_seeds(sa.song_values(column)),
                                  mean_over_seeds(sb.song_values(column)))
        if d.size:
            results[column] = paired_bootstrap(100 * d, resamples=resamples, seed=seed)
    return Comparison(a, b, results)


def paired_comparisons(blocks: dict[str, list[Group]], resamples: int = RESAMPLES,
                       seed: int = 0) -> dict[str, list[Comparison]]:
    """Student -> the comparisons of its block that have songs in common."""
    out = {}
    for student, block in blocks.items():
        found = [compare(a, b, resamples, seed) for a, b in comparisons(block)]
        for c in found:
            if not c.results and any(e.song_values() for e in c.a.entries) \
                    and any(e.song_values() for e in c.b.entries):
                log.warning("%s: no test song in common, not compared (evaluated on other "
                            "corpora?)", c.name)
        out[student] = [c for c in found if c.results]
    return out


def find(paired: list[Comparison], a: Group, b: Group) -> Comparison | None:
    return next((c for c in paired if c.a is a and c.b is b), None)


def _cell(r: PairedResult | None) -> str:
    return "–" if r is None else f"{r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"


def render_markdown(paired: dict[str, list[Comparison]]) -> str:
    first = next((c for cs in paired.values() for c in cs), None)
    resamples = next(iter(first.results.values())).resamples if first else RESAMPLES
    parts = ["# Paired per-song comparisons\n\n",
             "A - B per test song in percentage points, each row's song score averaged over its "
             f"seeds first; mean over songs, {100 * LEVEL:.0f}% bootstrap interval "
             f"({resamples:,} resamples of the songs), songs where A is better / worse. "
             "`mean`: the mean of the seven WCSR metrics of a song.\n"]
    if first is None:
        parts.append("\nNo two rows with songs in common to compare (each row needs its "
                     "`songs.json`).\n")
    for student, found in paired.items():
        if not found:
            continue
        parts.append(f"\n## Student: {student}\n\n")
        parts.append("".join(f"- {c.results['mean'].sentence(c.name)}\n"
                             for c in found if "mean" in c.results) + "\n")
        parts.append(markdown_table(
            ["A - B", "songs", "mean", f"{100 * LEVEL:.0f}% CI", "better", "worse"],
            [[c.name, r.n_songs, f"{r.mean:+.2f}", f"[{r.low:+.2f}, {r.high:+.2f}]", r.wins,
              r.losses] for c in found if (r := c.results.get("mean")) is not None]))
        parts.append("\nPer metric, mean difference [95% CI]:\n\n" + markdown_table(
            ["A - B", *METRICS], [[c.name, *(_cell(c.results.get(m)) for m in METRICS)]
                                  for c in found]))
    return "".join(parts)


def _records(paired: dict[str, list[Comparison]]) -> list[dict[str, Any]]:
    return [{"student": student, "comparison": c.name, "a": c.a.label, "b": c.b.label,
             "a_seeds": c.a.seeds, "b_seeds": c.b.seeds, "column": column, **r.to_dict()}
            for student, found in paired.items() for c in found
            for column, r in c.results.items()]


def write_paired(paired: dict[str, list[Comparison]], out: str | os.PathLike) -> str:
    """Write ``paired.{md,csv,json}`` under ``out``; return the Markdown."""
    out = Path(out)
    markdown = render_markdown(paired)
    write_text(out / "paired.md", markdown)
    records = _records(paired)
    header = ["student", "comparison", "a", "b", "column", "n_songs", "mean", "low", "high",
              "wins", "losses", "ties", "level", "resamples", "seed"]
    write_text(out / "paired.csv", csv_text(header, [[r[k] for k in header] for r in records]))
    write_json(out / "paired.json", json_safe({
        "unit": "percentage points", "columns": list(PAIRED_COLUMNS), "comparisons": records,
        "sentences": {s: [c.results["mean"].sentence(c.name) for c in found if "mean" in c.results]
                      for s, found in paired.items()},
    }))
    return markdown
