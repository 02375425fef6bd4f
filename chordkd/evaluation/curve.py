"""The scaling curve of ``chordkd results --curve KEY`` (``curve.{md,csv,json,png}``).

One point per ``stage2`` row tagged ``KEY`` (e.g. ``pool=4``, from ``chordkd evaluate --meta``),
one line per value of the ``series`` tag (e.g. ``size=base``): the row's mean of the seven
metrics (mean over seeds), its teacher's and its baseline's (the references whose tags agree,
``entries.reference``), the differences of those means, and the paired per-song difference
with its 95% bootstrap interval (``paired``), which the figure draws as error bars.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from chordkd.atomic import write_json, write_text
from chordkd.evaluation.entries import Group, reference
from chordkd.evaluation.paired import Comparison, find
from chordkd.evaluation.tables import csv_text, json_safe, markdown_table

REFERENCES = ("teacher", "baseline")
_FIELDS = ("x", "series", "n", "stage2", "stage2_std", "teacher", "baseline",
           *(f"minus_{r}{s}" for r in REFERENCES
             for s in ("", "_per_song", "_low", "_high", "_wins", "_songs")))


def _x_order(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def curve_rows(blocks: dict[str, list[Group]], paired: dict[str, list[Comparison]], key: str,
               series: str = "size", row: str = "stage2") -> list[dict[str, Any]]:
    """One dict per ``row`` group tagged ``key``: fields ``_FIELDS`` plus ``student``, in
    percent (differences in percentage points), sorted by student, series and x."""
    out = []
    for student, block in blocks.items():
        for g in block:
            tags = dict(g.tags)
            if g.row != row or key not in tags:
                continue
            point: dict[str, Any] = {"student": student, "x": tags[key],
                                     "series": tags.get(series, ""), "n": len(g.entries),
                                     "stage2": 100 * g.mean()["mean"],
                                     "stage2_std": 100 * g.std()["mean"]}
            for role in REFERENCES:
                ref = reference(g, [h for h in block if h.row == role])
                point[role] = math.nan if ref is None else 100 * ref.mean()["mean"]
                point[f"minus_{role}"] = point["stage2"] - point[role]
                found = find(paired.get(student, []), g, ref) if ref is not None else None
                r = found.results.get("mean") if found is not None else None
                point[f"minus_{role}_per_song"] = math.nan if r is None else r.mean
                point[f"minus_{role}_low"] = math.nan if r is None else r.low
                point[f"minus_{role}_high"] = math.nan if r is None else r.high
                point[f"minus_{role}_wins"] = None if r is None else r.wins
                point[f"minus_{role}_songs"] = None if r is None else r.n_songs
            out.append(point)
    return sorted(out, key=lambda p: (p["student"], p["series"], _x_order(p["x"])))


def _num(v: float, sign: bool = False) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def _ci(p: dict[str, Any], role: str) -> str:
    if p[f"minus_{role}_songs"] is None:
        return "–"
    return (f"{p[f'minus_{role}_per_song']:+.2f} [{p[f'minus_{role}_low']:+.2f}, "
            f"{p[f'minus_{role}_high']:+.2f}] ({p[f'minus_{role}_wins']}/{p[f'minus_{role}_songs']})")


def render_markdown(rows: list[dict[str, Any]], key: str, series: str) -> str:
    header = ["student", key, series, "n", "stage 2", "teacher", "baseline", "- teacher",
              "- teacher per song [95% CI] (better/songs)", "- baseline",
              "- baseline per song [95% CI] (better/songs)"]
    body = [[p["student"], p["x"], p["series"] or "–", p["n"],
             _num(p["stage2"]) + ("" if math.isnan(p["stage2_std"]) else f" ± {p['stage2_std']:.2f}"),
             _num(p["teacher"]), _num(p["baseline"]), _num(p["minus_teacher"], True),
             _ci(p, "teacher"), _num(p["minus_baseline"], True), _ci(p, "baseline")]
            for p in rows]
    return (f"# Scaling curve: stage 2 against {key}\n\n"
            "Mean of the seven WCSR metrics in percent (mean ± std over seeds); differences of "
            "those means in percentage points, and the paired per-song difference with its 95% "
            "bootstrap interval over songs.\n\n"
            + markdown_table(header, body, left=3) + "\n![scaling curve](curve.png)\n")


def write_curve(rows: list[dict[str, Any]], key: str, series: str,
                out: str | os.PathLike) -> str:
    """Write ``curve.{md,csv,json,png}`` under ``out``; return the Markdown."""
    from chordkd.evaluation.plots import plot_scaling_curve

    out = Path(out)
    markdown = render_markdown(rows, key, series)
    write_text(out / "curve.md", markdown)
    header = ["student", *_FIELDS]
    write_text(out / "curve.csv", csv_text(header, [[p[k] for k in header] for p in rows]))
    write_json(out / "curve.json", json_safe({"key": key, "series": series,
                                              "unit": "percent; differences in points",
                                              "points": rows}))
    plot_scaling_curve(rows, key, series, out / "curve.png")
    return markdown
