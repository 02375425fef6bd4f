"""Chord annotations: .lab and JAMS files, and the frame <-> interval conversions.

Intervals are float64 ``[n, 2]`` arrays of (start, end) in seconds; labels are Harte strings.
Readers return intervals that are sorted, non-overlapping and cover ``[0, last end]``:

- a gap between segments (or before the first) longer than ``TOLERANCE`` becomes an N segment;
- a boundary off by at most ``TOLERANCE`` (a gap or an overlap of up to 1 ms, as rounding in
  public .lab files leaves) is snapped to the later segment's start;
- a zero-length segment is dropped with a warning: it covers no time, so it changes neither
  frame targets nor mir_eval's duration-weighted scores; its label is still validated;
- labels come back as mir_eval accepts them (``chords.validate_label``: BTC's typo repairs,
  such as ``C:4`` -> ``C:sus4``, applied).

Anything else malformed raises ``AnnotationError`` whose message starts ``"{path}:{line}: "``
(JAMS: ``"{path}: observation {k}: "``).

Against its audio (``clip_to_audio``, applied wherever audio and annotation meet): labels past
the audio's end are dropped; the tail of an annotation that ends early is N in frame targets
(``intervals_to_frames``) and, as mir_eval scores over the reference's span, not scored.

Frame convention (docs/architecture.md): frame ``i`` is centred at ``t_i = i * hop / sr``
seconds, takes the label sounding at ``t_i``, and a decoded frame covers
``[t_i - dt/2, t_i + dt/2)`` with ``dt = hop / sr``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chordkd.atomic import atomic_write, write_text
from chordkd.chords import Vocabulary, validate_label
from chordkd.errors import AnnotationError, ChordLabelError

TOLERANCE = 1e-3  # seconds; boundaries closer than this are the same boundary
# seconds of annotation past the audio's end worth a warning; decoders disagree on a file's
# length by far less (MP3 encoder padding is a few hundredths of a second)
OVERHANG_WARNING = 1.0
_JAMS_NAMESPACES = ("chord", "chord_harte")

Segment = tuple[float, float, str]


def read_lab(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read a ``start end label`` file (whitespace- or tab-separated, seconds).

    Blank lines and lines starting with ``#`` are skipped; labels cannot contain spaces.
    Returns intervals float64 ``[n, 2]`` and ``n`` labels, normalised as the module docstring
    says. Raises ``AnnotationError`` (``"{path}:{line}: ..."``) on malformed input.

    >>> intervals, labels = read_lab("song.lab")  # doctest: +SKIP
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read: {exc}") from None
    segments: list[Segment] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}: "
        fields = stripped.split()
        if len(fields) != 3:
            raise AnnotationError(
                f"{where}expected 3 fields 'start end label', got {len(fields)}: {stripped!r}"
            )
        start = _parse_time(fields[0], "start", where)
        end = _parse_time(fields[1], "end", where)
        segments.append((start, end, fields[2]))
        lines.append(lineno)
    if not segments:
        raise AnnotationError(f"{path}: no chord segments (the file is empty or all comments)")
    return _normalise(segments, lambda k: f"{path}:{lines[k]}: ")


def _parse_time(field: str, name: str, where: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise AnnotationError(f"{where}{name} time {field!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}{name} time {field!r} is not finite")
    if value < 0:
        raise AnnotationError(f"{where}{name} time {field!r} is negative")
    return value


def _normalise(
    segments: Sequence[Segment], where: Callable[[int], str]
) -> tuple[np.ndarray, list[str]]:
    """Validate segments in file order; fill gaps with N, snap near boundaries, drop empties.

    ``where(k)`` is the message prefix naming segment ``k`` (file and line).
    """
    out: list[list] = []  # [start, end, label], mutable so a boundary can be snapped
    last_start = 0.0  # of any segment, zero-length ones included: for the sort check
    prev_end = 0.0
    prev_k = -1
    for k, (start, end, label) in enumerate(segments):
        for t, name in ((start, "start"), (end, "end")):
            if not (math.isfinite(t) and t >= 0):
                raise AnnotationError(f"{where(k)}{name} time {t!r} is not a finite time >= 0")
        if end < start:
            raise AnnotationError(f"{where(k)}end {end:g} is before start {start:g}")
        try:
            label = validate_label(label)
        except ChordLabelError as exc:
            raise AnnotationError(f"{where(k)}{exc}") from None
        if start < last_start:
            raise AnnotationError(
                f"{where(k)}segments are not sorted: start {start:g} is before the previous "
                f"start {last_start:g}"
            )
        last_start = start
        if end == start:
            warnings.warn(
                f"{where(k)}dropping zero-length segment {label!r} at {start:g}", stacklevel=3
            )
            continue
        if start < prev_end - TOLERANCE:
            raise AnnotationError(
                f"{where(k)}segment starting at {start:g} overlaps the previous one "
                f"({where(prev_k)[:-2]}), which ends at {prev_end:g}"
            )
        if abs(start - prev_end) <= TOLERANCE:
            if out:
                out[-1][1] = start
            else:
                start = 0.0
        elif start > prev_end:
            out.append([prev_end, start, "N"])
        out.append([start, end, label])
        prev_end, prev_k = end, k
    # Snapping can only empty a segment shorter than TOLERANCE; such a segment covers no frame.
    out = [s for s in out if s[1] > s[0]]
    intervals = np.array([s[:2] for s in out], dtype=np.float64).reshape(-1, 2)
    return intervals, [s[2] for s in out]


def write_lab(path: str | os.PathLike, intervals: np.ndarray, labels: Sequence[str]) -> None:
    """Write ``%.6f\\t%.6f\\t%s`` lines atomically. ``intervals``: float ``[n, 2]`` seconds."""
    intervals = _check_for_writing(path, intervals, labels)
    text = "".join(
        f"{start:.6f}\t{end:.6f}\t{label}\n" for (start, end), label in zip(intervals, labels)
    )
    write_text(path, text)


def _check_for_writing(path, intervals, labels) -> np.ndarray:
    intervals = np.asarray(intervals, dtype=np.float64)
    if intervals.ndim != 2 or intervals.shape[1] != 2:
        raise AnnotationError(f"{path}: intervals must have shape [n, 2], got {intervals.shape}")
    if len(labels) != len(intervals):
        raise AnnotationError(f"{path}: {len(intervals)} intervals but {len(labels)} labels")
    if not np.isfinite(intervals).all() or (intervals < 0).any():
        raise AnnotationError(f"{path}: interval times must be finite and >= 0")
    if (intervals[:, 1] < intervals[:, 0]).any():
        raise AnnotationError(f"{path}: an interval ends before it starts")
    for label in labels:
        if not label or any(c.isspace() for c in label):
            raise AnnotationError(f"{path}: label {label!r} is empty or contains whitespace")
    return intervals


def read_jams(path: str | os.PathLike, index: int = 0) -> tuple[np.ndarray, list[str]]:
    """Read the ``index``-th chord annotation (namespace ``chord`` or ``chord_harte``) of a JAMS
    file. Returns intervals float64 ``[n, 2]`` seconds and labels, normalised like ``read_lab``.
    """
    import jams

    try:
        jam = jams.load(os.fspath(path), validate=False)
    except (OSError, ValueError, TypeError, KeyError, jams.JamsError) as exc:
        raise AnnotationError(f"{path}: cannot read JAMS: {exc}") from None
    chords = [a for a in jam.annotations if a.namespace in _JAMS_NAMESPACES]
    if not chords:
        raise AnnotationError(f"{path}: no chord annotation (namespace 'chord' or 'chord_harte')")
    if not -len(chords) <= index < len(chords):
        raise AnnotationError(
            f"{path}: chord annotation {index} requested, the file has {len(chords)}"
        )
    segments = []
    for k, obs in enumerate(chords[index].data):
        try:
            start, length = float(obs.time), float(obs.duration)
        except (TypeError, ValueError):
            raise AnnotationError(
                f"{path}: observation {k}: time {obs.time!r} or duration {obs.duration!r} "
                "is not a number"
            ) from None
        segments.append((start, start + length, str(obs.value)))
    if not segments:
        raise AnnotationError(f"{path}: chord annotation {index} has no observations")
    return _normalise(segments, lambda k: f"{path}: observation {k}: ")


def write_jams(
    path: str | os.PathLike,
    intervals: np.ndarray,
    labels: Sequence[str],
    duration: float,
    *,
    title: str = "",
    artist: str = "",
    annotator: str = "chordkd",
) -> None:
    """Write one ``chord`` annotation as a JAMS file, atomically.

    ``intervals``: float ``[n, 2]`` seconds; ``duration``: the track's length in seconds
    (at least the last interval's end).
    """
    import jams

    intervals = _check_for_writing(path, intervals, labels)
    if len(intervals) and duration < intervals[:, 1].max() - TOLERANCE:
        raise AnnotationError(
            f"{path}: duration {duration:g} s is shorter than the last interval's end "
            f"{intervals[:, 1].max():g} s"
        )
    jam = jams.JAMS()
    jam.file_metadata.duration = float(duration)
    jam.file_metadata.title = title
    jam.file_metadata.artist = artist
    annotation = jams.Annotation(namespace="chord", time=0.0, duration=float(duration))
    annotation.annotation_metadata.annotator = {"name": annotator}
    annotation.annotation_metadata.annotation_tools = "chordkd"
    for (start, end), label in zip(intervals, labels):
        annotation.append(time=float(start), duration=float(end - start), value=str(label))
    jam.annotations.append(annotation)
    try:
        with atomic_write(path, "w", encoding="utf-8") as f:
            jam.save(f)
    except jams.SchemaError as exc:
        raise AnnotationError(f"{path}: not a valid JAMS chord annotation: {exc}") from None


def read_annotation(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read a chord annotation, by suffix: ``.lab``/``.txt`` (``read_lab``), ``.jams``."""
    suffix = Path(path).suffix.lower()
    if suffix in (".lab", ".txt"):
        return read_lab(path)
    if suffix == ".jams":
        return read_jams(path)
    raise AnnotationError(f"{path}: unknown annotation suffix {suffix!r} (use .lab, .txt, .jams)")


def clip_to_audio(
    intervals: np.ndarray, labels: Sequence[str], duration: float, source: str | os.PathLike = ""
) -> tuple[np.ndarray, list[str]]:
    """The annotation restricted to its audio, ``[0, duration]`` seconds.

    Segments that start at or after ``duration`` are dropped and the last one kept ends at
    ``duration``: labels for time the audio does not have are neither trained on nor scored
    (mir_eval would score them against an N-padded estimate). An annotation that ends early is
    returned as it is. More than ``OVERHANG_WARNING`` seconds cut off warns, naming ``source``:
    the audio and the annotation may not belong together.

    ``intervals``: sorted float ``[n, 2]`` seconds (as the readers return them). Raises
    ``AnnotationError`` naming ``source`` if every segment starts after the audio ends.
    """
    intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if len(intervals) == 0 or intervals[-1, 1] <= duration:
        return intervals, list(labels)
    keep = intervals[:, 0] < duration
    if not keep.any():
        raise AnnotationError(
            f"{source}: every segment starts after the audio ends ({duration:.3f} s)"
        )
    overhang = intervals[-1, 1] - duration
    if overhang > OVERHANG_WARNING:
        warnings.warn(
            f"{source}: the annotation runs {overhang:.2f} s past the end of its audio "
            f"({duration:.2f} s); the labels after the audio are ignored", stacklevel=2
        )
    clipped = intervals[keep].copy()
    clipped[-1, 1] = duration
    return clipped, [label for label, k in zip(labels, keep) if k]


def intervals_to_frames(
    intervals: np.ndarray,
    labels: Sequence[str],
    vocab: Vocabulary,
    n_frames: int,
    hop: int = 2048,
    sr: int = 22050,
) -> np.ndarray:
    """Class of the label sounding at each frame centre: int64 ``[n_frames]``.

    ``intervals``: sorted, non-overlapping float ``[n, 2]`` seconds, half-open ``[start, end)``
    (a frame centred exactly on a boundary takes the later segment). Frames outside every
    interval, after the last one included, are N. Invalid labels raise ``ChordLabelError``
    naming the label.
    """
    intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if len(labels) != len(intervals):
        raise AnnotationError(f"{len(intervals)} intervals but {len(labels)} labels")
    starts, ends = intervals[:, 0], intervals[:, 1]
    if (np.diff(starts) < 0).any() or (ends[:-1] > starts[1:] + TOLERANCE).any():
        raise AnnotationError("intervals must be sorted and non-overlapping")
    # One extra entry, N, for frames that fall in no interval.
    classes = np.append(vocab.encode_many(labels), vocab.n_index)
    times = np.arange(n_frames, dtype=np.float64) * (hop / sr)
    segment = np.searchsorted(starts, times, side="right") - 1
    ends = np.append(ends, np.inf)  # segment -1 (before the first start) reads this and is N
    inside = (segment >= 0) & (times < ends[segment])
    return classes[np.where(inside, segment, len(intervals))]


def frames_to_intervals(
    classes: np.ndarray,
    vocab: Vocabulary,
    hop: int = 2048,
    sr: int = 22050,
    duration: float | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Merge runs of equal frame classes into labelled intervals.

    ``classes``: int ``[n_frames]``. Frame ``i`` covers ``[t_i - dt/2, t_i + dt/2)``, clipped to
    ``[0, duration]`` seconds; ``duration`` defaults to the last frame's end. Returns intervals
    float64 ``[n_runs, 2]`` and their decoded labels.
    """
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"classes must have shape [n_frames], got {classes.shape}")
    if classes.size == 0:
        return np.zeros((0, 2), dtype=np.float64), []
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integers, got dtype {classes.dtype}")
    if classes.min() < 0 or classes.max() >= vocab.size:
        raise ValueError(f"classes must lie in 0..{vocab.size - 1} for vocabulary {vocab.name!r}")
    dt = hop / sr
    n = classes.size
    cuts = np.flatnonzero(classes[1:] != classes[:-1]) + 1
    first = np.concatenate([[0], cuts])
    stop = np.concatenate([cuts, [n]])
    if duration is None:
        duration = (n - 0.5) * dt
    intervals = np.clip(np.stack([(first - 0.5) * dt, (stop - 0.5) * dt], axis=1), 0.0, duration)
    keep = intervals[:, 1] > intervals[:, 0]
    return intervals[keep], [vocab.decode(c) for c in classes[first[keep]]]
