"""``chordkd results``: the paper-style table from the files ``chordkd evaluate`` wrote.

    chordkd results --runs runs/ --out runs/results [--curve pool [--series size]]
    chordkd results --entry teacher btc runs/teacher/eval/overall.json#teacher \\
                    --entry stage1 btc runs/s1/eval/overall.json --out results/

**Convention.** Every ``overall.json`` under ``--runs`` (searched recursively) that has
``"format": "chordkd-evaluation/1"`` contributes one entry per model in it
(``chordkd.evaluation.entries``). The row name is the model's ``meta.role`` (``chordkd evaluate
--roles``; by default the model name when that is ``teacher``, ``baseline``, ``stage1`` or
``stage2``; otherwise the model name, so rows such as ``feature-kd`` or ``noisy-student-2``
appear as they are named), with ``+viterbi`` appended for a model decoded with ``--smoothing``
(``stage2+viterbi``), and its student is ``meta.student`` (``--student``; default the
network's name). ``--entry ROW STUDENT PATH[#MODEL]`` names rows explicitly instead
(``#MODEL`` picks one model of a multi-model file). Entries of one row that differ in their
seed (``chordkd evaluate --seed``) are one row: **mean ± std over seeds** (sample std) and
their number ``n``; rows whose tags differ (``--meta pool=4 size=base``) stay apart and show
their tags. The same row and seed twice is an error naming both files.

**Table** (``results.{md,csv,json}``). One block per student; rows ``teacher``, ``baseline``,
``stage1``, ``stage2`` (each followed by its ``+viterbi`` row), then any other rows by name;
columns the seven mir_eval WCSR metrics and their mean; ACQA exact-class (``acqa``) and
quality-only as the paper's code counts (``acqa_quality``); mir_eval's ``overseg``,
``underseg``, ``seg``; agreement with the teacher at majmin and mirex (``agree_majmin``,
``agree_mirex``, measured from the ``estimates/`` folders of the row and the teacher row,
even from separate runs, over the songs both estimated). All in percent. The teacher row is
shared by every student (a single teacher), or matched by student when there are several;
a tagged row takes the teacher and baseline whose tags agree with its own
(``entries.reference``). Derived rows follow: ``stage1 / teacher`` (stage 1 as % of the
teacher, per column), ``stage2 - baseline``, ``stage2 - teacher`` and ``X+viterbi - X``
(differences of the means in percentage points).

**Paired comparisons** (``paired.{md,csv,json}``, ``chordkd.evaluation.stats``): every row
against its teacher and its baseline, and each ``+viterbi`` row against its argmax row, song
by song: the per-song difference of the mean of the seven metrics (and of each metric), each
row's song score averaged over its seeds first, with the mean difference, its 95% bootstrap
interval over songs and the songs won and lost.

**Curve** (``--curve KEY``: ``curve.{md,csv,json,png}``, ``chordkd.evaluation.curve``):
stage 2 minus the teacher and minus the baseline for each value of the tag ``KEY`` and of
the ``--series`` tag (default ``size``).

Everything is written atomically under ``--out`` and the Markdown is printed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from chordkd.atomic import write_json, write_text
from chordkd.errors import ChordkdError
from chordkd.evaluation.agreement import AGREEMENT, agreement, read_estimates
from chordkd.evaluation.entries import (
    Entry,
    Group,
    discover,
    explicit_entry,
    group_entries,
    on_common_seeds,
    reference,
    student_blocks,
)
from chordkd.evaluation.metrics import METRICS, SEGMENTATION
from chordkd.evaluation.summary import COLUMNS
from chordkd.evaluation.tables import csv_text, json_safe, markdown_table

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "build_table", "discover", "explicit_entry", "write_results"]

WCSR_COLUMNS: tuple[str, ...] = (*METRICS, "mean")
OTHER_COLUMNS: tuple[str, ...] = ("acqa", "acqa_quality", *SEGMENTATION, *AGREEMENT)
_HEADERS = {"acqa": "ACQA", "acqa_quality": "ACQA (quality)", "agree_majmin": "agree majmin",
            "agree_mirex": "agree mirex"}


# --------------------------------------------------------------------------------------------
# agreement with the teacher, from the estimates folders


@functools.lru_cache(maxsize=64)
def _estimates(folder: str) -> dict:
    return read_estimates(folder)


def measure_agreement(blocks: dict[str, list[Group]]) -> None:
    """Replace each entry's agreement columns by its agreement with its teacher row's estimates
    (the mean over the teacher's seeds), where both estimates folders exist; otherwise the
    entry keeps what its ``overall.json`` says."""
    for block in blocks.values():
        teachers = [g for g in block if g.row == "teacher"]
        for group in block:
            teacher = None if group.row == "teacher" else reference(group, teachers)
            if teacher is not None:
                group.entries = [_with_agreement(e, teacher) for e in group.entries]


def _with_agreement(entry: Entry, teacher: Group) -> Entry:
    folders = [t.estimates for t in teacher.entries if t.estimates and t.estimates.is_dir()]
    if entry.estimates is None or not entry.estimates.is_dir() or not folders:
        return entry
    measured = [agreement(_estimates(str(f)), _estimates(str(entry.estimates))) for f in folders]
    measured = [m for m in measured if m.n_songs]
    if not measured:
        log.warning("%s: no song in common with the teacher's estimates", entry.source)
        return entry
    values = dict(entry.values)
    for column in AGREEMENT:
        found = [m.values[column] for m in measured if not math.isnan(m.values[column])]
        values[column] = float(np.mean(found)) if found else math.nan
    return replace(entry, values=values)


# --------------------------------------------------------------------------------------------
# the table


def build_table(entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """Student -> rows ``{"row", "kind", "n", "values", "std", ...}``; kind is ``score`` (%),
    ``ratio`` (% of teacher) or ``difference`` (percentage points)."""
    blocks = student_blocks(group_entries(entries))
    measure_agreement(blocks)
    return table_of(blocks)


def table_of(blocks: dict[str, list[Group]]) -> dict[str, list[dict[str, Any]]]:
    """The table rows of each block (see :func:`build_table`)."""
    table = {}
    for student, block in blocks.items():
        teachers = [g for g in block if g.row == "teacher"]
        baselines = [g for g in block if g.row == "baseline"]
        rows = [_score_row(g) for g in block]
        for g in block:
            if g.row == "stage1" and (t := reference(g, teachers)) is not None:
                rows.append(_derived(g, t, "ratio", lambda a, b: 100 * a / b if b else math.nan))
        for g in block:
            if g.row == "stage2":
                for ref in (reference(g, baselines), reference(g, teachers)):
                    if ref is not None:
                        rows.append(_derived(g, ref, "difference", lambda a, b: 100 * (a - b)))
        for g in block:
            if g.row != g.role:
                base = reference(g, [h for h in block if h.row == g.role])
                if base is not None:
                    rows.append(_derived(g, base, "difference", lambda a, b: 100 * (a - b)))
        table[student] = rows
    return table


def _score_row(g: Group) -> dict[str, Any]:
    mean, std = g.mean(), g.std()
    return {"row": g.label, "role": g.row, "tags": dict(g.tags), "kind": "score",
            "n": len(g.entries), "seeds": g.seeds,
            "source": "; ".join(e.source for e in g.entries),
            "values": {c: 100 * mean[c] for c in COLUMNS},
            "std": {c: 100 * std[c] for c in COLUMNS}}


def _derived(a: Group, b: Group, kind: str, op) -> dict[str, Any]:
    """A row of ``a`` against ``b``, on the seeds both have (``on_common_seeds``)."""
    a, b = on_common_seeds(a, b)
    am, bm = a.mean(), b.mean()
    sep = " / " if kind == "ratio" else " - "
    return {"row": f"{a.label}{sep}{b.label}", "role": a.row, "tags": dict(a.tags), "kind": kind,
            "n": len(a.entries), "seeds": a.seeds,
            "source": f"{'; '.join(e.source for e in a.entries)} vs "
                      f"{'; '.join(e.source for e in b.entries)}",
            "values": {c: op(am[c], bm[c]) for c in COLUMNS},
            "std": dict.fromkeys(COLUMNS, math.nan)}


def _fmt(row: dict[str, Any], column: str) -> str:
    value, std = row["values"][column], row["std"][column]
    if math.isnan(value):
        return "–"
    text = f"{value:+.2f}" if row["kind"] == "difference" else f"{value:.2f}"
    return text if math.isnan(std) else f"{text} ± {std:.2f}"


def render_markdown(table: dict[str, list[dict[str, Any]]]) -> str:
    parts = ["# Results\n\n",
             "Percent, mean ± std over seeds (`n` seeds; no ± for one). mir_eval WCSR pooled "
             "over songs and their mean; ACQA exact class and quality only (root ignored, as the "
             "paper's code counts); mir_eval segmentation; agreement with the teacher's "
             "estimates. `stage1 / teacher`: stage 1 as % of the teacher; `A - B`: difference "
             "of the means in percentage points.\n"]
    for student, rows in table.items():
        parts.append(f"\n## Student: {student}\n\n")
        parts.append(markdown_table(
            ["row", *WCSR_COLUMNS, "n"],
            [[r["row"], *(_fmt(r, c) for c in WCSR_COLUMNS), r["n"]] for r in rows]))
        parts.append("\n" + markdown_table(
            ["row", *(_HEADERS.get(c, c) for c in OTHER_COLUMNS)],
            [[r["row"], *(_fmt(r, c) for c in OTHER_COLUMNS)] for r in rows]))
    return "".join(parts)


def write_results(table: dict[str, list[dict[str, Any]]], out: str | os.PathLike) -> str:
    """Write ``results.{md,csv,json}`` under ``out``; return the Markdown."""
    out = Path(out)
    markdown = render_markdown(table)
    write_text(out / "results.md", markdown)
    write_text(out / "results.csv", csv_text(
        ["student", "row", "role", "tags", "kind", "n", "seeds", *COLUMNS,
         *(f"{c}_std" for c in COLUMNS), "source"],
        [[s, r["row"], r["role"], " ".join(f"{k}={v}" for k, v in r["tags"].items()), r["kind"],
          r["n"], " ".join("" if x is None else str(x) for x in r["seeds"]),
          *(r["values"][c] for c in COLUMNS), *(r["std"][c] for c in COLUMNS), r["source"]]
         for s, rows in table.items() for r in rows],
    ))
    write_json(out / "results.json", json_safe({"columns": list(COLUMNS), "units": {
        "score": "percent (mean over seeds; std: sample std over seeds)",
        "ratio": "percent of teacher", "difference": "percentage points"},
        "students": table}))
    return markdown


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", metavar="DIR",
                        help="folder searched recursively for `chordkd evaluate` overall.json")
    parser.add_argument("--entry", nargs=3, action="append", default=[],
                        metavar=("ROW", "STUDENT", "PATH[#MODEL]"),
                        help="add a row explicitly (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for results.*, paired.* and curve.*")
    parser.add_argument("--curve", metavar="KEY", default=None,
                        help="also draw stage 2 minus teacher and minus baseline against the tag "
                             "KEY (e.g. pool, from `chordkd evaluate --meta pool=4`)")
    parser.add_argument("--series", metavar="KEY", default="size",
                        help="tag that makes one line per value on the curve (default: size)")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help="bootstrap resamples of the songs (default: 10000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0,
                        help="seed of the bootstrap's random generator (default: 0)")


def run(args: argparse.Namespace) -> int:
    from chordkd.evaluation.curve import curve_rows, write_curve
    from chordkd.evaluation.paired import paired_comparisons, write_paired

    if not args.runs and not args.entry:
        raise ChordkdError("give --runs DIR or at least one --entry ROW STUDENT PATH")
    entries = discover(args.runs) if args.runs else []
    entries += [explicit_entry(*e) for e in args.entry]
    blocks = student_blocks(group_entries(entries))
    measure_agreement(blocks)
    parts = [write_results(table_of(blocks), args.out)]
    paired = paired_comparisons(blocks, resamples=args.resamples, seed=args.bootstrap_seed)
    parts.append(write_paired(paired, args.out))
    if args.curve:
        rows = curve_rows(blocks, paired, args.curve, args.series)
        if not rows:
            raise ChordkdError(f"--curve {args.curve}: no stage2 row is tagged {args.curve}=... "
                               f"(`chordkd evaluate --meta {args.curve}=VALUE`)")
        parts.append(write_curve(rows, args.curve, args.series, args.out))
    print("\n".join(parts))
    return 0
