"""Corpus manifests: which songs exist, where their audio and labels are.

A corpus is either
- a ``manifest.csv`` (columns ``id,audio,labels,duration,...``; paths relative to the CSV's
  folder; ``labels`` may be empty for unlabelled audio), or a folder holding one, or
- a folder of audio files: ``NAME.{wav,flac,ogg,mp3}`` with labels ``NAME.lab`` (or ``.jams``)
  beside it or in a sibling ``labels/`` folder, audio at top level or in ``audio/``.

This is the layout users ask for to train on their own data (BTC-ISMIR19 issue #3).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from chordkd.atomic import write_text
from chordkd.audio import AUDIO_SUFFIXES
from chordkd.errors import ChordkdError

MANIFEST_NAME = "manifest.csv"
LABEL_SUFFIXES = (".lab", ".jams")


@dataclass(frozen=True)
class Song:
    """One song of a corpus. ``labels`` is None for unlabelled audio."""

    id: str
    audio: Path
    labels: Path | None = None
    duration: float | None = None
    extra: dict = field(default_factory=dict, compare=False)


def read_manifest(source: str | os.PathLike, require_labels: bool = False) -> list[Song]:
    """List the songs of a corpus (a manifest CSV, a folder with one, or a folder of audio).

    Songs come back sorted by id. Raises ChordkdError for a missing source, a CSV without
    ``id``/``audio`` columns (naming the file), duplicate ids (naming the line), or, with
    ``require_labels``, a song without a label file.
    """
    src = Path(source)
    if src.is_dir() and (src / MANIFEST_NAME).is_file():
        src = src / MANIFEST_NAME
    if src.is_file():
        songs = _read_csv(src)
    elif src.is_dir():
        songs = _scan_folder(src)
    else:
        raise ChordkdError(f"{src}: no such manifest or folder")
    if not songs:
        raise ChordkdError(f"{src}: the corpus lists no songs")
    if require_labels:
        missing = [s.id for s in songs if s.labels is None]
        if missing:
            raise ChordkdError(f"{src}: {len(missing)} songs have no labels (first: {missing[0]})")
    return sorted(songs, key=lambda s: s.id)


def _read_csv(path: Path) -> list[Song]:
    base = path.parent
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for required in ("id", "audio"):
            if required not in cols:
                raise ChordkdError(f"{path}: manifest has no '{required}' column (has {cols})")
        songs, seen = [], {}
        for lineno, row in enumerate(reader, start=2):
            sid = (row.get("id") or "").strip()
            if not sid:
                raise ChordkdError(f"{path}:{lineno}: empty song id")
            if sid in seen:
                raise ChordkdError(f"{path}:{lineno}: duplicate song id {sid!r} (first on line {seen[sid]})")
            seen[sid] = lineno
            audio = (row.get("audio") or "").strip()
            if not audio:
                # An empty path would resolve to the CSV's folder and fail far from here.
                raise ChordkdError(f"{path}:{lineno}: empty audio path for song {sid!r}")
            labels = (row.get("labels") or "").strip()
            duration = (row.get("duration") or "").strip()
            extra = {k: v for k, v in row.items() if k not in ("id", "audio", "labels", "duration")}
            try:
                dur = float(duration) if duration else None
            except ValueError:
                raise ChordkdError(f"{path}:{lineno}: duration {duration!r} is not a number") from None
            songs.append(
                Song(
                    id=sid,
                    audio=base / audio,
                    labels=(base / labels) if labels else None,
                    duration=dur,
                    extra=extra,
                )
            )
    return songs


def _scan_folder(folder: Path) -> list[Song]:
    audio_dirs = [folder] + ([folder / "audio"] if (folder / "audio").is_dir() else [])
    shared_label_dirs = [folder] + ([folder / "labels"] if (folder / "labels").is_dir() else [])
    songs, seen = [], set()
    for d in audio_dirs:
        # "Beside the audio" means in the audio file's own folder, which may be audio/.
        label_dirs = list(dict.fromkeys([d, *shared_label_dirs]))
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in AUDIO_SUFFIXES or not p.is_file():
                continue
            if p.stem in seen:
                raise ChordkdError(f"{p}: a second audio file for song id {p.stem!r}")
            seen.add(p.stem)
            labels = next(
                (ld / (p.stem + suf) for ld in label_dirs for suf in LABEL_SUFFIXES
                 if (ld / (p.stem + suf)).is_file()),
                None,
            )
            songs.append(Song(id=p.stem, audio=p, labels=labels))
    return songs


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a manifest CSV atomically; ``rows`` are dicts with at least ``id`` and ``audio``.

    Paths are written relative to the manifest's folder when they lie below it.
    """
    path = Path(path)
    cols = ["id", "audio", "labels", "duration"]
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = dict(row)
        for key in ("audio", "labels"):
            if out.get(key):
                out[key] = _relative(Path(out[key]), path.parent)
        writer.writerow(out)
    write_text(path, buf.getvalue())


def _relative(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)
