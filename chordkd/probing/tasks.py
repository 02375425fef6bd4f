"""Probe tasks from a corpus's metadata, and their fixed held-out split by song.

=================  ======  =========================================================
task               level   target (manifest column)
=================  ======  =========================================================
``chord_majmin``   frame   the chord at the frame's centre (``labels``: .lab/.jams), 25 classes
``chord_large``    frame   the same in the 170-class vocabulary
``key``            song    ``key`` (``TONIC:major`` / ``TONIC:minor``): 24 classes
``tempo``          song    ``tempo`` (BPM): right within 4%, octave errors counted apart
``instrument``     song    GM family of the ``comping`` role in ``families``
``composer``       song    ``composer`` (score-rendered songs; empty elsewhere)
=================  ======  =========================================================

Song-level metadata that ``chordkd synth`` keeps aside for unlabelled parts (the ``key`` of
score excerpts, in ``manifest_aside.csv``) is read from there (:func:`with_aside_metadata`);
aside chord labels are not (they are for analysis, not ground truth).
A task takes part only with the songs that have its metadata; a task no song has metadata
for (or too few songs or classes) is skipped with a one-line reason. The split is fixed:
songs ranked by the sha1 of their id, the first quarter held out, so a task's test songs
never reach its probes' training and every encoder is scored on the same songs.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import mir_eval
import numpy as np

from chordkd.annotations import read_annotation
from chordkd.chords import get_vocabulary
from chordkd.data.manifest import Song
from chordkd.errors import ChordkdError

TASKS = ("chord_majmin", "chord_large", "key", "tempo", "instrument", "composer")
FRAME_TASKS = ("chord_majmin", "chord_large")
HELD_OUT = 0.25
COLUMN = {"key": "key", "tempo": "tempo", "instrument": "families", "composer": "composer"}
INSTRUMENT_ROLE = "comping"


@dataclass
class TaskData:
    """A task's targets: per song, one target (song tasks) or the frames' centre times'
    targets are computed later from ``intervals`` (frame tasks). ``classes``: class names for
    classification, empty for tempo (a regression of log2 BPM)."""

    name: str
    level: str  # frame | song
    targets: dict[str, object]  # song id -> class index, BPM, or (intervals, labels)
    classes: list[str] = field(default_factory=list)
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


class Skipped(ChordkdError):
    """A task this corpus cannot score; the message is the one-line reason."""


def held_out_split(song_ids: list[str], fraction: float = HELD_OUT) -> tuple[list[str], list[str]]:
    """(train, test) song ids: ranked by sha1 of the id, the first ``ceil(fraction * n)``
    held out (at least one song on each side). The same song always lands on the same side
    of every task that holds it."""
    if len(song_ids) < 2:
        raise Skipped(f"{len(song_ids)} song(s) with this metadata; a split needs at least 2")
    ranked = sorted(song_ids, key=lambda s: hashlib.sha1(f"chordkd-probe:{s}".encode()).hexdigest())
    n_test = min(max(math.ceil(fraction * len(ranked)), 1), len(ranked) - 1)
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def build_task(name: str, songs: list[Song], source: str) -> TaskData:
    """The targets of task ``name`` on ``songs`` (from ``source``, named in messages) with its
    split; raises :class:`Skipped` with the reason when the corpus cannot score it."""
    if name not in TASKS:
        raise ChordkdError(f"unknown probe task {name!r}; choose from {', '.join(TASKS)}")
    if name in FRAME_TASKS:
        have = [s for s in songs if s.labels is not None]
        if not have:
            raise Skipped(f"{name}: no song of {source} has a chord annotation (labels column)")
        task = TaskData(name, "frame", {s.id: read_annotation(s.labels) for s in have},
                        list(get_vocabulary(name.split("_")[1]).labels))
    else:
        column = COLUMN[name]
        values = {s.id: (s.extra.get(column) or "").strip() for s in songs}
        values = {k: v for k, v in values.items() if v}
        if name == "instrument":
            values = {k: r for k, v in values.items() if (r := _role_family(v)) is not None}
        if not values:
            raise Skipped(f"{name}: no song of {source} has a '{column}' value"
                          + (f" with a {INSTRUMENT_ROLE} role" if name == "instrument" else ""))
        where = {s.id: s for s in songs}
        if name == "tempo":
            task = TaskData(name, "song", {k: _bpm(v, where[k]) for k, v in values.items()})
        else:
            if name == "key":
                values = {k: _key_class(v, where[k]) for k, v in values.items()}
                classes = [f"{r}:{m}" for m in ("major", "minor") for r in _ROOTS]
            else:
                classes = sorted(set(values.values()))
                values = {k: classes.index(v) for k, v in values.items()}
            if len(set(values.values())) < 2:
                raise Skipped(f"{name}: every song of {source} has the same {column}; nothing to tell apart")
            task = TaskData(name, "song", values, classes)
    try:
        task.train, task.test = held_out_split(sorted(task.targets))
    except Skipped as e:
        raise Skipped(f"{name}: {e}") from None
    return task


def with_aside_metadata(songs: list[Song], source: str | Path) -> list[Song]:
    """``songs`` with the song-level metadata columns (key, tempo, families, composer) of the
    corpus's ``manifest_aside.csv`` filled in where ``manifest.csv`` leaves them empty."""
    src = Path(source)
    aside = (src if src.is_dir() else src.parent) / "manifest_aside.csv"
    if not aside.is_file():
        return songs
    with open(aside, newline="", encoding="utf-8") as f:
        rows = {r.get("id", ""): r for r in csv.DictReader(f)}
    out = []
    for s in songs:
        row = rows.get(s.id, {})
        fill = {c: row[c] for c in COLUMN.values() if not s.extra.get(c) and row.get(c)}
        out.append(replace(s, extra={**s.extra, **fill}) if fill else s)
    return out


_ROOTS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _key_class(value: str, song: Song) -> int:
    """``"Eb:major"`` -> 3, ``"A:minor"`` -> 21: pitch class, + 12 for minor."""
    tonic, _, mode = value.partition(":")
    try:
        pc = mir_eval.chord.pitch_class_to_semitone(tonic) % 12
    except mir_eval.chord.InvalidChordException:
        pc = None
    if pc is None or mode not in ("major", "minor"):
        raise ChordkdError(f"{song.audio}: key {value!r} is not TONIC:major or TONIC:minor")
    return pc + (12 if mode == "minor" else 0)


def _bpm(value: str, song: Song) -> float:
    try:
        bpm = float(value)
    except ValueError:
        bpm = float("nan")
    if not (math.isfinite(bpm) and bpm > 0):
        raise ChordkdError(f"{song.audio}: tempo {value!r} is not a positive number of BPM")
    return bpm


def _role_family(value: str) -> str | None:
    """``"bass:Bass;comping:Guitar;drums:Drums"`` -> ``"Guitar"``."""
    for pair in value.split(";"):
        role, _, family = pair.partition(":")
        if role == INSTRUMENT_ROLE and family:
            return family
    return None


def frame_targets(task: TaskData, song_id: str, n_frames: int, hop_seconds: float,
                  offset_seconds: float) -> np.ndarray:
    """int64 ``[n_frames]``: the class at each embedding frame's centre, -1 where the
    annotation has no chord (past its end) or an X chord."""
    intervals, labels = task.targets[song_id]
    vocab = get_vocabulary(task.name.split("_")[1])
    classes = vocab.encode_many(labels)
    if vocab.x_index is not None:
        classes = np.where(classes == vocab.x_index, -1, classes)
    t = offset_seconds + hop_seconds * np.arange(n_frames)
    i = np.searchsorted(intervals[:, 0], t, side="right") - 1
    inside = (i >= 0) & (t < intervals[np.clip(i, 0, None), 1])
    return np.where(inside, classes[np.clip(i, 0, None)], -1).astype(np.int64)
