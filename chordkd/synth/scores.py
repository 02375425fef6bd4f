"""Real scores as unlabelled music: polyphonic works of the music21 corpus, rendered on GM
instruments through a SoundFont (``chordkd synth --source music21``).

Works come from the corpus inside the ``music21`` wheel (BSD; the works are public domain).
Held-out works (:mod:`chordkd.synth.holdout`) are never candidates and are refused by name.
Excerpt ``index`` of seed ``seed`` depends on nothing else: the work, the excerpt's start, the
tempo (the score's metronome mark when it has one, else drawn), the GM program of every part
and the room are all drawn from ``np.random.default_rng([seed, index, stream])``. Repeats
are not expanded (notes at their written offsets).

Parsing is the slow step (a chorale takes well under a second, a quartet movement seconds),
so what is derived from a score (its notes in quarter notes, key, tempo mark, composer,
title) is cached as one ``.npz`` per work under ``cache_dir``.

Score-derived labels (:mod:`chordkd.synth.score_labels`: per beat, the chord whose template
best holds all sounding notes, with the bass) are a by-product for analysis; they are written
aside and never used for training or as ground truth.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chordkd.atomic import write_bytes
from chordkd.errors import ChordkdError
from chordkd.synth import gm
from chordkd.synth.harmony import PITCH_NAMES
from chordkd.synth.holdout import is_held_out, refuse_held_out
from chordkd.synth.render import SR
from chordkd.synth.score_labels import label_beats

# Folders of the corpus that hold polyphonic works (the folk and fiddle-tune collections are
# mostly single melodies; Monteverdi's folder holds only held-out madrigals).
POLYPHONIC_FOLDERS = (
    "bach", "beach", "beethoven", "chopin", "ciconia", "corelli", "cpebach", "handel", "haydn",
    "johnson_j_r", "joplin", "josquin", "luca", "lusitano", "mozart", "palestrina", "schoenberg",
    "schubert", "schumann_clara", "schumann_robert", "trecento", "verdi", "weber", "webern",
)
SCORE_FORMATS = (".mxl", ".xml", ".musicxml", ".krn")
CACHE_VERSION = 1
_PLAN, _SOUND = 10, 11  # rng streams (distinct from the harmony model's)

log = logging.getLogger(__name__)


@dataclass
class Work:
    """What chordkd derives from one parsed score (quarter-note time, offsets as written)."""

    path: str  # relative to the corpus root, e.g. "bach/bwv66.6.mxl"
    onset: np.ndarray  # float [n] quarter notes
    duration: np.ndarray  # float [n] quarter notes
    pitch: np.ndarray  # int [n] MIDI
    velocity: np.ndarray  # float [n] in (0, 1]; 0.7 where the score gives none
    part: np.ndarray  # int [n] part index
    n_parts: int
    quarter_bpm: float | None  # the score's first metronome mark, if it has one
    key: str  # e.g. "F#:minor" (music21's key analysis of the whole work)
    composer: str
    title: str


def corpus_root() -> Path:
    from music21 import corpus

    return Path(os.path.commonpath([str(p) for p in corpus.getCorePaths()]))


def test_work(path: str) -> bool:
    """Whether ``path`` belongs to the works reserved for score-rendered *test* parts (about
    one in ten, by a hash of the path), so that no test excerpt comes from a pooled work."""
    return int(hashlib.sha1(path.encode()).hexdigest(), 16) % 10 == 0


def candidate_works(split: str | None = None) -> list[str]:
    """Every work free to render: corpus paths (relative, sorted) in the polyphonic folders,
    in a score format, held-out works excluded; ``split="test"`` keeps only test works
    (:func:`test_work`), ``"pool"`` only the others, ``None`` all."""
    from music21 import corpus

    root = corpus_root()
    out = []
    for p in corpus.getCorePaths():
        rel = Path(p).relative_to(root).as_posix()
        if (rel.split("/")[0] in POLYPHONIC_FOLDERS and Path(rel).suffix in SCORE_FORMATS
                and not is_held_out(rel)
                and (split is None or test_work(rel) == (split == "test"))):
            out.append(rel)
    return sorted(out)


def _cache_file(cache_dir: Path, path: str) -> Path:
    digest = hashlib.sha1(f"{CACHE_VERSION}:{path}".encode()).hexdigest()[:12]
    return cache_dir / f"{Path(path).stem}-{digest}.npz"


def load_work(path: str, cache_dir: str | os.PathLike | None = None) -> Work:
    """Parse work ``path`` (relative to the corpus root) or read it from ``cache_dir``.

    Raises ChordkdError for a held-out work, one music21 cannot read, an opus of several
    scores, or one with fewer than two sounding parts.
    """
    refuse_held_out(path)
    cached = _cache_file(Path(cache_dir), path) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if "unusable" in meta:
                    raise ChordkdError(meta["unusable"])
                return Work(path=path, onset=z["onset"], duration=z["duration"], pitch=z["pitch"],
                            velocity=z["velocity"], part=z["part"], **meta)
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, ChordkdError):
                raise
            log.warning("%s: unreadable score cache; parsing again", cached)
    try:
        work = _parse(path)
    except ChordkdError as e:  # remembered, so a later run does not parse it again
        if cached is not None:
            buf = io.BytesIO()
            np.savez(buf, meta=np.array(json.dumps({"unusable": str(e)})))
            write_bytes(cached, buf.getvalue())
        raise
    if cached is not None:
        buf = io.BytesIO()
        meta = {k: getattr(work, k) for k in ("n_parts", "quarter_bpm", "key", "composer", "title")}
        np.savez(buf, onset=work.onset, duration=work.duration, pitch=work.pitch,
                 velocity=work.velocity, part=work.part, meta=np.array(json.dumps(meta)))
        write_bytes(cached, buf.getvalue())
    return work


def _parse(path: str) -> Work:
    from music21 import chord, corpus, stream, tempo

    try:
        score = corpus.parse(str(corpus_root() / path))
    except Exception as e:  # music21 raises many types for unreadable files
        raise ChordkdError(f"{path}: music21 cannot parse this work ({type(e).__name__})") from None
    if not isinstance(score, stream.Score):
        raise ChordkdError(f"{path}: not a single score ({type(score).__name__})")
    cols: list[tuple[float, float, int, float, int]] = []
    part_index = 0
    for p in score.parts:
        rows = []
        for n in p.stripTies().flatten().notes:
            ql = float(n.quarterLength)
            if ql <= 0:  # grace notes
                continue
            vel = n.volume.velocity
            v = 0.7 if vel is None else float(np.clip(vel / 127, 0.05, 1.0))
            pitches = n.pitches if isinstance(n, chord.Chord) else [n.pitch]
            rows += [(float(n.offset), ql, int(x.midi), v, part_index) for x in pitches]
        if rows:
            cols += rows
            part_index += 1
    if part_index < 2:
        raise ChordkdError(f"{path}: fewer than two sounding parts")
    a = np.array(cols, dtype=np.float64)
    marks = [m.getQuarterBPM() for m in score.flatten().getElementsByClass(tempo.MetronomeMark)
             if m.number is not None]
    key = score.analyze("key")
    md = score.metadata
    return Work(
        path=path, onset=a[:, 0], duration=a[:, 1], pitch=a[:, 2].astype(np.int64),
        velocity=a[:, 3], part=a[:, 4].astype(np.int64), n_parts=part_index,
        quarter_bpm=float(marks[0]) if marks and marks[0] else None,
        key=f"{PITCH_NAMES[key.tonic.pitchClass]}:{key.mode}",
        composer=(md.composer if md is not None and md.composer else path.split("/")[0]),
        title=(md.title if md is not None and md.title else Path(path).stem),
    )


def choose_work(rng: np.random.Generator, works: list[str]) -> list[str]:
    """Works in the order to try: a folder drawn with weight sqrt(its size), so Palestrina's
    1,300 files do not drown the rest, then a work within it, then its successors in the
    folder, then every other work from there on (for when the first choices are unusable)."""
    folders = sorted({w.split("/")[0] for w in works})
    sizes = np.array([sum(w.startswith(f + "/") for w in works) for f in folders], float)
    folder = folders[int(rng.choice(len(folders), p=np.sqrt(sizes) / np.sqrt(sizes).sum()))]
    members = [w for w in works if w.startswith(folder + "/")]
    k = int(rng.integers(len(members)))
    first = members[k:] + members[:k]
    seen, at = set(first), works.index(first[0])
    return first + [w for w in works[at:] + works[:at] if w not in seen]


@dataclass
class Excerpt:
    """A rendered-to-be excerpt: note events in seconds (``channel`` per part), its GM
    channels, length, score-derived labels (for analysis only) and manifest metadata."""

    events: dict[str, np.ndarray]
    channels: dict
    n_samples: int
    intervals: np.ndarray
    labels: list[str]
    meta: dict


def compose_excerpt(seed: int, index: int, seconds: float, cache_dir: str | os.PathLike | None,
                    unseen_instruments: bool = False, work: str | None = None,
                    works: list[str] | None = None) -> Excerpt:
    """Excerpt ``index`` of seed ``seed``: at most ``seconds`` long, from a drawn work (or
    ``work``), every part on a GM program drawn per piece (:data:`gm.UNSEEN_PROGRAMS` when
    ``unseen_instruments``, which also draws from the test works, else from the pool works;
    see :func:`test_work`)."""
    from chordkd.synth.soundfont import Channel

    rng = np.random.default_rng([seed, index, _PLAN])
    if work is not None:
        refuse_held_out(work)
        order = [work]
    else:
        split = "test" if unseen_instruments else "pool"
        order = choose_work(rng, works if works is not None else candidate_works(split))
    w, errors = None, []
    for path in order[:20]:
        try:
            w = load_work(path, cache_dir)
            break
        except ChordkdError as e:
            errors.append(str(e))
    if w is None:
        raise ChordkdError(f"score excerpt {index}: no usable work ({'; '.join(errors[:3])})")
    qpm = w.quarter_bpm if (w.quarter_bpm and rng.random() < 0.7) else float(rng.uniform(70, 120))
    qpm = float(np.clip(qpm, 40, 200))
    intro, tail = float(rng.uniform(0.5, 1.5)), float(rng.uniform(1.0, 2.0))
    end_ql = float((w.onset + w.duration).max())
    span_ql = max(1.0, math.floor((seconds - intro - tail) * qpm / 60))
    starts = np.arange(0.0, max(0.0, end_ql - span_ql) + 1e-9, 4.0)
    start = float(starts[int(rng.integers(len(starts)))])
    span_ql = min(span_ql, end_ql - start)
    sel = (w.onset >= start) & (w.onset < start + span_ql)
    spq = 60.0 / qpm  # seconds per quarter note
    onset = intro + (w.onset[sel] - start) * spq
    duration = np.minimum(w.duration[sel], start + span_ql - w.onset[sel]) * spq
    pitch = w.pitch[sel]
    part = w.part[sel]
    low, voices = ((gm.UNSEEN_LOW_PROGRAMS, gm.UNSEEN_PROGRAMS) if unseen_instruments
                   else (gm.SCORE_LOW_VOICES, gm.SCORE_VOICES))
    means = [w.pitch[w.part == p].mean() for p in range(w.n_parts)]
    lowest = int(np.argmin(means))
    channels, programs = {}, {}
    for p in range(min(w.n_parts, 15)):
        ch = p if p < 9 else p + 1  # skip the percussion channel
        programs[f"part{p + 1}"] = gm.draw(rng, low if p == lowest else voices)
        channels[ch] = Channel(programs[f"part{p + 1}"], gain=float(rng.uniform(0.6, 0.9)))
    keep = part < 15
    chan = np.where(part < 9, part, part + 1)
    events = {"onset": onset[keep], "duration": duration[keep], "pitch": pitch[keep],
              "velocity": w.velocity[sel][keep], "channel": chan[keep]}
    total = intro + span_ql * spq + tail
    n_samples = int(round(total * SR))
    intervals, labels = label_beats(w, start, span_ql, intro, spq, n_samples / SR)
    meta = {
        "seed": seed, "index": index, "seconds": round(n_samples / SR, 6), "style": "score",
        "source": "music21", "composer": w.composer, "work": w.path, "title": w.title,
        "key": w.key, "tempo": round(qpm, 3), "tempo_from_score": bool(qpm == w.quarter_bpm),
        "excerpt_start_ql": start, "tuning_cents": round(float(rng.uniform(-30, 30)), 3),
        **gm.describe(programs, None),
    }
    return Excerpt(events, channels, n_samples, intervals, labels, meta)


def render_excerpt(seed: int, index: int, seconds: float, cache_dir: str | os.PathLike | None,
                   soundfont: str | os.PathLike | None = None, unseen_instruments: bool = False,
                   work: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """``(audio, intervals, labels, meta)`` like :func:`chordkd.synth.song.synthesize_song`;
    the labels are score-derived (analysis only). ``audio``: float32 ``[n]`` at 22,050 Hz."""
    from chordkd.synth.soundfont import humanise, render_events

    ex = compose_excerpt(seed, index, seconds, cache_dir, unseen_instruments, work)
    rng = np.random.default_rng([seed, index, _SOUND])
    audio = render_events(humanise(rng, ex.events), ex.channels, ex.n_samples,
                          ex.meta["tuning_cents"], rng, soundfont)
    return audio, ex.intervals, ex.labels, dict(ex.meta, renderer="soundfont")
