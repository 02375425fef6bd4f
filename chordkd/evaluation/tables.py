"""Table text shared by the evaluation reports: Markdown, CSV, JSON-safe values, percents.

Fractions stay fractions in JSON and CSV (NaN as null / empty); Markdown shows percent.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN floats replaced by None, so the file is standard JSON (null)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def pct(value: float | None) -> str:
    """A fraction as percent with two decimals; ``–`` for None or NaN (nothing comparable)."""
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A GitHub Markdown table; the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join([":---"] * left + ["---:"] * (len(header) - left)) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return v
