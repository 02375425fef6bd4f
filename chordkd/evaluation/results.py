"""``chordkd results``: the paper-style table from the files ``chordkd evaluate`` wrote.

    chordkd results --runs runs/ --out runs/results
    chordkd results --entry teacher btc runs/teacher/eval/overall.json#teacher \\
                    --entry stage1 btc runs/s1/eval/overall.json --out results/

**Convention.** Every ``overall.json`` under ``--runs`` (searched recursively) that has
``"format": "chordkd-evaluation/1"`` contributes one row per model in it. The row name is the
model's ``meta.role`` (``chordkd evaluate --roles``; by default the model name when that is
``teacher``, ``baseline``, ``stage1`` or ``stage2``; otherwise the model name, so rows such as
``feature-kd`` or ``noisy-student-2`` appear as they are named) and its student is
``meta.student`` (``--student``; default the network's name). ``--entry ROW STUDENT PATH[#MODEL]``
names rows explicitly instead (``#MODEL`` picks one model of a multi-model file). Two rows with
the same name for the same student are an error naming both files.

**Table.** One block per student; rows ``teacher``, ``baseline``, ``stage1``, ``stage2``, then any
other rows by name; columns the seven mir_eval WCSR metrics, their mean and ACQA, in percent.
The teacher row is shared by every student (a single teacher entry), or matched by student
when there are several. Derived rows follow: ``stage1 / teacher`` (stage 1 as % of the
teacher, per column), and ``stage2 - baseline`` and ``stage2 - teacher`` (differences in
percentage points). Written as ``results.md``, ``results.csv`` and ``results.json`` under
``--out`` (atomically), and the Markdown is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chordkd.atomic import write_json, write_text
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import METRICS
from chordkd.evaluation.report import FORMAT, ROLES, csv_text, json_safe, markdown_table

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (*METRICS, "mean", "acqa")


@dataclass(frozen=True)
class Entry:
    """One evaluated model placed in the table: ``row`` for ``student``, scores in [0, 1]."""

    row: str
    student: str
    source: str  # "path#model"
    values: dict[str, float]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChordkdError(f"{path}: not a readable evaluation JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChordkdError(f"{path}: not written by `chordkd evaluate` (no format {FORMAT!r})")
    return data


def _values(summary: dict[str, Any], where: str) -> dict[str, float]:
    try:
        values = {m: summary["metrics"][m] for m in METRICS}
        values["mean"] = summary["mean"]
        values["acqa"] = summary["acqa"]
    except (KeyError, TypeError) as exc:
        raise ChordkdError(f"{where}: missing field {exc}") from None
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def discover(runs: str | os.PathLike) -> list[Entry]:
    """Entries of every ``chordkd evaluate`` ``overall.json`` under ``runs`` (recursively)."""
    root = Path(runs)
    if not root.is_dir():
        raise ChordkdError(f"{root}: no such runs folder")
    entries = []
    for path in sorted(root.rglob("overall.json")):
        try:
            data = _load(path)
        except ChordkdError as exc:
            log.warning("ignoring %s", exc)
            continue
        for name, summary in data.get("models", {}).items():
            meta = summary.get("meta", {})
            entries.append(Entry(
                row=meta.get("role") or name,
                student=meta.get("student") or "",
                source=f"{path}#{name}",
                values=_values(summary, f"{path}: model {name!r}"),
            ))  # fmt: skip
    if not entries:
        raise ChordkdError(f"{root}: no overall.json written by `chordkd evaluate` below it")
    return entries


def explicit_entry(row: str, student: str, spec: str) -> Entry:
    """An entry from ``PATH`` or ``PATH#MODEL`` (a file holding one model needs no ``#``)."""
    path_text, _, model = spec.partition("#")
    path = Path(path_text)
    data = _load(path)
    models = data.get("models", {})
    if not model:
        if len(models) != 1:
            raise ChordkdError(f"{path}: holds models {sorted(models)}; name one as {path}#MODEL")
        model = next(iter(models))
    if model not in models:
        raise ChordkdError(f"{path}: no model {model!r} (has {sorted(models)})")
    return Entry(row, student, f"{path}#{model}", _values(models[model], f"{path}#{model}"))


def _row_order(row: str) -> tuple[int, str]:
    return (ROLES.index(row), "") if row in ROLES else (len(ROLES), row)


def build_table(entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """Student -> rows ``{"row", "kind", "source", "values"}``; kind is ``score`` (%),
    ``ratio`` (% of teacher) or ``difference`` (percentage points)."""
    teachers = [e for e in entries if e.row == "teacher"]
    others = [e for e in entries if e.row != "teacher"]
    students = sorted({e.student for e in others}) or sorted({e.student for e in teachers})
    table: dict[str, list[dict[str, Any]]] = {}
    for student in students:
        rows: dict[str, Entry] = {}
        for e in others:
            if e.student != student:
                continue
            if e.row in rows:
                raise ChordkdError(f"two {e.row!r} rows for student {student!r}: "
                                   f"{rows[e.row].source} and {e.source}")
            rows[e.row] = e
        teacher = _teacher_for(student, teachers)
        if teacher is not None:
            rows["teacher"] = teacher
        block = [_score_row(rows[r]) for r in sorted(rows, key=_row_order)]
        if "teacher" in rows and "stage1" in rows:
            block.append(_derived("stage1 / teacher", "ratio", rows["stage1"], rows["teacher"],
                                  lambda a, b: 100 * a / b if b else math.nan))
        for ref in ("baseline", "teacher"):
            if "stage2" in rows and ref in rows:
                block.append(_derived(f"stage2 - {ref}", "difference", rows["stage2"], rows[ref],
                                      lambda a, b: 100 * (a - b)))
        table[student or "-"] = block
    return table


def _teacher_for(student: str, teachers: list[Entry]) -> Entry | None:
    if len(teachers) <= 1:
        return teachers[0] if teachers else None
    matching = [t for t in teachers if t.student == student]
    if len(matching) != 1:
        raise ChordkdError(
            f"{len(teachers)} teacher rows ({', '.join(t.source for t in teachers)}) and "
            f"{len(matching)} of them for student {student!r}; keep one teacher per student"
        )
    return matching[0]


def _score_row(e: Entry) -> dict[str, Any]:
    return {"row": e.row, "kind": "score", "source": e.source,
            "values": {c: 100 * e.values[c] for c in COLUMNS}}


def _derived(name: str, kind: str, a: Entry, b: Entry, op) -> dict[str, Any]:
    return {"row": name, "kind": kind, "source": f"{a.source} vs {b.source}",
            "values": {c: op(a.values[c], b.values[c]) for c in COLUMNS}}


def _fmt(value: float, kind: str) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.2f}" if kind == "difference" else f"{value:.2f}"


def render_markdown(table: dict[str, list[dict[str, Any]]]) -> str:
    parts = ["# Results\n\n",
             "mir_eval WCSR (%) pooled over songs, their mean, and ACQA (%). "
             "`stage1 / teacher`: stage 1 as % of the teacher; `stage2 - X`: difference in "
             "percentage points.\n"]
    for student, rows in table.items():
        parts.append(f"\n## Student: {student}\n\n")
        parts.append(markdown_table(
            ["row", *COLUMNS],
            [[r["row"], *(_fmt(r["values"][c], r["kind"]) for c in COLUMNS)] for r in rows],
        ))
    return "".join(parts)


def write_results(table: dict[str, list[dict[str, Any]]], out: str | os.PathLike) -> str:
    """Write ``results.{md,csv,json}`` under ``out``; return the Markdown."""
    out = Path(out)
    markdown = render_markdown(table)
    write_text(out / "results.md", markdown)
    write_text(out / "results.csv", csv_text(
        ["student", "row", "kind", *COLUMNS, "source"],
        [[s, r["row"], r["kind"], *(r["values"][c] for c in COLUMNS), r["source"]]
         for s, rows in table.items() for r in rows],
    ))
    write_json(out / "results.json", json_safe({"columns": list(COLUMNS), "units": {
        "score": "percent", "ratio": "percent of teacher", "difference": "percentage points"},
        "students": table}))
    return markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", metavar="DIR",
                        help="folder searched recursively for `chordkd evaluate` overall.json")
    parser.add_argument("--entry", nargs=3, action="append", default=[],
                        metavar=("ROW", "STUDENT", "PATH[#MODEL]"),
                        help="add a row explicitly (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results.*")


def run(args: argparse.Namespace) -> int:
    if not args.runs and not args.entry:
        raise ChordkdError("give --runs DIR or at least one --entry ROW STUDENT PATH")
    entries = discover(args.runs) if args.runs else []
    entries += [explicit_entry(*e) for e in args.entry]
    print(write_results(build_table(entries), args.out))
    return 0
