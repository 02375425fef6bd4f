"""The rows ``chordkd results`` reads: one :class:`Entry` per evaluated model, grouped over seeds.

An entry is one model of one ``overall.json`` written by ``chordkd evaluate``: its row name
(``meta.role``, else the model name; ``+viterbi`` appended when it was decoded with Viterbi
smoothing, so ``stage2+viterbi`` is a row of its own), its student (``meta.student``), its seed
(``meta.seed``, ``--seed``) and its tags (``meta.tags``, ``--meta key=value``). Entries that
differ only in their seed form one :class:`Group`, the row of the table: mean ± std over seeds.
Two entries of one group with the same seed (or both without) are an error naming both files.

A group is compared with a **reference** group (the teacher, the baseline): the reference of
that role for the same student (the single teacher group serves every student when there is
one) whose tags all agree with the group's, the most specific one when several do. So
``stage2`` tagged ``pool=4 size=base`` takes the untagged teacher and the baseline tagged
``size=base``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import METRICS, metric_mean
from chordkd.evaluation.summary import COLUMNS, FORMAT, ROLES, column_values

log = logging.getLogger(__name__)

VITERBI = "+viterbi"
# rows named "<role>-<variant>" are variants of these rows: compared with them, listed after them
VARIANT_ROLES = ("baseline", "stage1", "stage2")


@dataclass(frozen=True)
class Entry:
    """One evaluated model: ``row`` for ``student``; ``values`` per ``COLUMNS`` in [0, 1]."""

    row: str
    student: str
    source: str  # "path#model"
    values: dict[str, float]
    seed: int | None = None
    tags: tuple[tuple[str, str], ...] = ()
    folder: Path | None = None  # the evaluation folder: songs.json, estimates/<model>/
    model: str = ""

    @property
    def estimates(self) -> Path | None:
        return None if self.folder is None else self.folder / "estimates" / self.model

    def song_values(self) -> dict[str, dict[str, float]]:
        """Song -> ``{metric: accuracy, "mean": mean of the seven}`` from ``songs.json`` beside
        the ``overall.json``; empty (with a warning) when that file is missing."""
        if self.folder is None:
            return {}
        return _song_values(str(self.folder / "songs.json"), self.model)


@functools.lru_cache(maxsize=256)
def _songs_file(path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("%s: missing; its rows get no per-song comparison", path)
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChordkdError(f"{path}: not a readable songs JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChordkdError(f"{path}: not written by `chordkd evaluate` (no format {FORMAT!r})")
    return data


def _song_values(path: str, model: str) -> dict[str, dict[str, float]]:
    data = _songs_file(path)
    if data is None:
        return {}
    try:
        songs = data["models"][model]
        out = {}
        for song, d in songs.items():
            accuracy = {m: math.nan if d["accuracy"][m] is None else float(d["accuracy"][m])
                        for m in METRICS}
            out[song] = {**accuracy, "mean": metric_mean(accuracy)}
    except (KeyError, TypeError, ValueError) as exc:
        raise ChordkdError(f"{path}: model {model!r}: missing or bad field {exc}") from None
    return out


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChordkdError(f"{path}: not a readable evaluation JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ChordkdError(f"{path}: not written by `chordkd evaluate` (no format {FORMAT!r})")
    return data


def _entry(path: Path, name: str, summary: dict[str, Any], row: str | None = None,
           student: str | None = None) -> Entry:
    where = f"{path}: model {name!r}"
    meta = summary.get("meta") or {}
    seed = meta.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ChordkdError(f"{where}: meta.seed must be an integer, got {seed!r}")
    tags = meta.get("tags") or {}
    if not isinstance(tags, dict):
        raise ChordkdError(f"{where}: meta.tags must be an object, got {tags!r}")
    if row is None:
        row = meta.get("role") or name
        if str(meta.get("decoding", "")).startswith("viterbi") and not row.endswith(VITERBI):
            row += VITERBI
    return Entry(
        row=row,
        student=(meta.get("student") or "") if student is None else student,
        source=f"{path}#{name}",
        values=column_values(summary, where),
        seed=seed,
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
        folder=path.parent,
        model=name,
    )  # fmt: skip


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
            entries.append(_entry(path, name, summary))
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
    return _entry(path, model, models[model], row=row, student=student)


# --------------------------------------------------------------------------------------------
# groups over seeds


@dataclass
class Group:
    """The entries of one row (student, row, tags) over seeds."""

    row: str
    student: str
    tags: tuple[tuple[str, str], ...]
    entries: list[Entry] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``stage2`` or ``stage2 (pool=4, size=base)``."""
        if not self.tags:
            return self.row
        return f"{self.row} ({', '.join(f'{k}={v}' for k, v in self.tags)})"

    @property
    def role(self) -> str:
        """The row this one is a variant of: without its decoding suffix (``stage2`` for
        ``stage2+viterbi``), and a ``<role>-<variant>`` row of an ablation or of the
        fine-tuning comparison is its role's (``stage2`` for ``stage2-nokd``)."""
        row = self.row.removesuffix(VITERBI)
        base, sep, _ = row.partition("-")
        return base if sep and base in VARIANT_ROLES else row

    def at_seeds(self, seeds: set) -> Group:
        """The group restricted to ``seeds`` (itself when that keeps every entry)."""
        kept = [e for e in self.entries if e.seed in seeds]
        return self if len(kept) == len(self.entries) else Group(self.row, self.student,
                                                                 self.tags, kept)

    @property
    def seeds(self) -> list[int | None]:
        return [e.seed for e in self.entries]

    def column(self, name: str) -> np.ndarray:
        """The entries' values of one column, NaN dropped."""
        values = np.array([e.values[name] for e in self.entries], dtype=np.float64)
        return values[~np.isnan(values)]

    def mean(self) -> dict[str, float]:
        """Column -> mean over seeds (NaN where no seed has a value)."""
        return {c: float(v.mean()) if (v := self.column(c)).size else math.nan for c in COLUMNS}

    def std(self) -> dict[str, float]:
        """Column -> sample standard deviation over seeds (ddof 1); NaN with fewer than two."""
        return {c: float(v.std(ddof=1)) if (v := self.column(c)).size > 1 else math.nan
                for c in COLUMNS}

    def song_values(self, column: str) -> list[dict[str, float]]:
        """Per seed: song -> value of ``column`` (``"mean"`` or a metric)."""
        return [{s: v[column] for s, v in e.song_values().items()} for e in self.entries]


def on_common_seeds(a: Group, b: Group) -> tuple[Group, Group]:
    """``a`` and ``b`` restricted to the seeds both have, when they share some (an ablation
    run at seed 0 against stage 2's seed 0, not its mean over three seeds); else unchanged."""
    common = set(a.seeds) & set(b.seeds)
    return (a.at_seeds(common), b.at_seeds(common)) if common else (a, b)


def group_entries(entries: list[Entry]) -> list[Group]:
    """Entries grouped by (student, row, tags), in first-seen order; a seed twice in one group
    is an error naming both sources."""
    groups: dict[tuple, Group] = {}
    for e in entries:
        key = (e.student, e.row, e.tags)
        group = groups.setdefault(key, Group(e.row, e.student, e.tags))
        for other in group.entries:
            if other.seed == e.seed:
                seed = "" if e.seed is None else f" with seed {e.seed}"
                raise ChordkdError(f"two {group.label!r} rows for student {e.student!r}{seed}: "
                                   f"{other.source} and {e.source} (tell seeds apart with "
                                   "`chordkd evaluate --seed N`)")
        group.entries.append(e)
    return list(groups.values())


def row_order(group: Group) -> tuple:
    """Teacher, baseline, stage 1, stage 2 (each followed by its +viterbi row), then others by
    name; tags sorted within a row."""
    role = group.role
    rank = (ROLES.index(role), "") if role in ROLES else (len(ROLES), role)
    return (*rank, group.row != role, group.tags)


def teachers_for(student: str, groups: list[Group]) -> list[Group]:
    """The teacher groups that serve ``student``: all of them when they are of one student (or
    one group), else those of ``student``; none of ``student`` among several is an error."""
    teachers = [g for g in groups if g.row == "teacher"]
    if len({g.student for g in teachers}) <= 1:
        return teachers
    matching = [t for t in teachers if t.student == student]
    if not matching:
        raise ChordkdError(
            f"{len(teachers)} teacher rows ({', '.join(e.source for t in teachers for e in t.entries)})"
            f" and none of them for student {student!r}; keep one teacher per student"
        )
    return matching


def reference(group: Group, candidates: list[Group]) -> Group | None:
    """The candidate whose tags all agree with ``group``'s, the one with most tags; None when
    none agrees; an error when two agree equally."""
    own = dict(group.tags)
    fitting = [c for c in candidates if c is not group and all(own.get(k) == v for k, v in c.tags)]
    if not fitting:
        return None
    best = max(len(c.tags) for c in fitting)
    top = [c for c in fitting if len(c.tags) == best]
    if len(top) > 1:
        raise ChordkdError(f"{group.label!r} of student {group.student!r} fits several "
                           f"{top[0].row!r} rows equally: {', '.join(c.label for c in top)}")
    return top[0]


def student_blocks(groups: list[Group]) -> dict[str, list[Group]]:
    """Student (``-`` when unnamed) -> its groups and the teacher groups serving it, in
    :func:`row_order`."""
    others = [g for g in groups if g.row != "teacher"]
    students = sorted({g.student for g in others}) or sorted({g.student for g in groups})
    return {student or "-": sorted([g for g in others if g.student == student]
                                   + teachers_for(student, groups), key=row_order)
            for student in students}


def comparisons(block: list[Group]) -> list[tuple[Group, Group]]:
    """The (A, B) pairs of a block to compare as A - B: every row but the teacher against its
    teacher, every row but the teacher and the baseline against its baseline, each ``+viterbi``
    row against the same row decoded by argmax, each variant (``stage2-nokd``) against its row
    (``stage2``)."""
    teachers = [g for g in block if g.row == "teacher"]
    baselines = [g for g in block if g.row == "baseline"]
    pairs: list[tuple[Group, Group]] = []
    for g in block:
        candidates = []
        if g.row != "teacher":
            candidates.append(teachers)
        if g.row not in ("teacher", "baseline") and g.role != "baseline":
            candidates.append(baselines)
        if g.row != g.role:
            candidates.append([h for h in block if h.row == g.role])
        for refs in candidates:
            ref = reference(g, refs)
            if ref is not None and not any(a is g and b is ref for a, b in pairs):
                pairs.append((g, ref))
    return pairs
