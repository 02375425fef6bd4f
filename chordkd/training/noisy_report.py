"""The noisy-student rounds report: ``rounds.json``, ``rounds.csv`` and ``rounds.md``.

One row per round (round 0: the teacher): its size and parameter count, the share of each
batch that was ground truth, the pseudo-labels kept, the epochs it ran before early stopping
and its best validation score, its test metrics (the mean of the seven, majmin, mirex), and
the same three against its own teacher, the round before it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

HEADLINE = ("mean", "majmin", "mirex")  # the test figures compared with each round's teacher


def vs_teacher(rows: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Per row, ``HEADLINE`` minus the previous row's (the round's teacher); None for round 0
    or where either figure is missing. Fractions, as the metrics are."""
    out: list[dict[str, float | None]] = []
    for i, row in enumerate(rows):
        if i == 0:
            out.append(dict.fromkeys(HEADLINE))
            continue
        mine, theirs = _headline(row), _headline(rows[i - 1])
        out.append({k: None if _missing(mine[k]) or _missing(theirs[k]) else mine[k] - theirs[k]
                    for k in HEADLINE})
    return out


def _headline(row: dict[str, Any]) -> dict[str, float | None]:
    return {"mean": row["mean"], "majmin": row["metrics"]["majmin"],
            "mirex": row["metrics"]["mirex"]}


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _pct(v: float | None) -> str:
    return "–" if _missing(v) else f"{100 * v:.2f}"


def _points(v: float | None) -> str:
    return "–" if _missing(v) else f"{100 * v:+.2f}"


def write_rounds_report(report: dict[str, Any], out: str | os.PathLike) -> None:
    """``rounds.json`` (the report as :func:`chordkd.training.noisy_student.noisy_student`
    returns it, each row with its ``vs_teacher``), ``rounds.csv`` (fractions) and ``rounds.md``
    (percent) under ``out``, atomically."""
    from chordkd.atomic import write_json, write_text
    from chordkd.evaluation.metrics import METRICS
    from chordkd.evaluation.report import csv_text, json_safe, markdown_table

    out = Path(out)
    rows = report["rounds"]
    for row, delta in zip(rows, vs_teacher(rows)):
        row["vs_teacher"] = delta
    write_json(out / "rounds.json", json_safe(report))

    def ratio(r: dict[str, Any]) -> float | None:
        return r["labelled_ratio"] if r.get("labelled") else None

    write_text(out / "rounds.csv", csv_text(
        ["round", "model", "size", "parameters", "labelled_ratio", "pseudo_labels_kept",
         "epochs", "monitor", "best_validation", *METRICS, "mean", "acqa",
         *(f"{k}_vs_teacher" for k in HEADLINE)],
        [[r["round"], r["model"], r["size"], r["parameters"], _nan(ratio(r)),
          _nan(r["pseudo_labels_kept"]), r.get("epochs"), r.get("monitor"),
          _nan(r.get("best_score")), *(_nan(r["metrics"][m]) for m in METRICS),
          _nan(r["mean"]), _nan(r["acqa"]), *(_nan(r["vs_teacher"][k]) for k in HEADLINE)]
         for r in rows],
    ))
    monitor = next((r["monitor"] for r in rows if r.get("monitor")), "validation")
    table = markdown_table(
        ["round", "model", "size", "parameters", "labelled share", "pseudo-labels kept",
         "epochs", f"best {monitor}", "mean of 7", "majmin", "mirex",
         "mean vs teacher", "majmin vs teacher", "mirex vs teacher"],
        [[r["round"], r["model"], r["size"], f"{r['parameters']:,}", _pct(ratio(r)),
          _pct(r["pseudo_labels_kept"]), "–" if r.get("epochs") is None else r["epochs"],
          _pct(r.get("best_score")), _pct(r["mean"]), _pct(r["metrics"]["majmin"]),
          _pct(r["metrics"]["mirex"]), *(_points(r["vs_teacher"][k]) for k in HEADLINE)]
         for r in rows],
        left=3,
    )
    lines = [
        f"# Noisy student: {report['student']}, sizes {','.join(report['sizes'])}\n",
        f"Round 0 is the teacher ({report['teacher']}); round r trains a fresh student, as large "
        f"as its teacher or larger, with noise on `{report['labelled'] or 'no labelled corpus'}` "
        f"(ground truth, `labelled share` of every batch) and round r-1's pseudo-labels of "
        f"`{report['pool']}`, until early stopping on the validation corpus, then relabels the "
        f"pool without noise. Test corpus: `{report['test']}`; WCSR in percent, argmax decoding; "
        "`pseudo-labels kept`: the pool frames whose teacher confidence reached "
        "`data.noise.min_confidence`; `epochs`: epochs run; `vs teacher`: points over the "
        "round before.\n",
        table,
        "",
        "| round | trained on | checkpoint |",
        "|---:|:---|:---|",
        *(f"| {r['round']} | {r['trained_on'] or '–'} | {r['checkpoint']} |" for r in rows),
    ]
    write_text(out / "rounds.md", "\n".join(lines) + "\n")


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)
