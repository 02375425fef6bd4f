"""Styles (what songs sound like) and presets (which corpora ``chordkd synth --preset`` makes).

**Tune the demo's size here**: :data:`PRESETS` holds, for every preset, the part sizes and the
song length in one table. The demo's budget: synthesis plus a ~6-8 minute teacher, labelling,
two student stages, a baseline and evaluation in about 20 minutes on 2 CPU cores.

A part is a sub-corpus folder with its own ``audio/``, ``labels/`` and ``manifest.csv``.
Parts take song indices from disjoint ranges (``first_index``), so their songs are distinct and
a part can be resized without changing the others. The ``teacher`` part comes from the same
generator as ``pool``, ``train``, ``valid`` and ``test``; ``train`` is deliberately small (the
paper's setting: far more unlabelled than labelled audio).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from chordkd.errors import ChordkdError


@dataclass(frozen=True)
class Style:
    """Distributions a song's arrangement is drawn from (weights need not sum to 1)."""

    name: str
    tempo_ranges: tuple[tuple[float, float], ...]  # bpm; drawn in proportion to width
    chord_timbres: dict[str, float]
    bass_timbres: dict[str, float]
    melody_timbres: dict[str, float]
    accompaniment: dict[str, float]  # patterns of chordkd.synth.patterns
    bass_patterns: dict[str, float]
    drum_patterns: dict[str, float]
    drums_prob: float
    melody_prob: float
    melody_density: tuple[float, float]  # share of beats split into 8ths (16ths above 0.5)
    passing_prob: tuple[float, float]  # non-chord scale tones on weak positions
    chromatic_prob: tuple[float, float]  # chromatic neighbours on weak positions
    major_prob: float = 0.65
    second_pattern_prob: float = 0.4  # a second accompaniment pattern for alternate 8-bar blocks

    def tempo(self, rng: np.random.Generator) -> float:
        widths = np.array([hi - lo for lo, hi in self.tempo_ranges])
        lo, hi = self.tempo_ranges[int(rng.choice(len(widths), p=widths / widths.sum()))]
        return float(rng.uniform(lo, hi))


def pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """Draw a key of ``weights`` with probability proportional to its value."""
    names = list(weights)
    w = np.array([weights[k] for k in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


STYLES: dict[str, Style] = {
    # Pop/jazz-flavoured default: piano, plucked string, organ, pad; block chords and
    # arpeggios; melody in two thirds of the songs; drums in most.
    "demo": Style(
        name="demo",
        tempo_ranges=((70.0, 160.0),),
        chord_timbres={"piano": 0.35, "pluck": 0.2, "organ": 0.2, "pad": 0.25},
        bass_timbres={"synth_bass": 0.4, "pluck": 0.35, "piano": 0.25},
        melody_timbres={"lead": 0.4, "piano": 0.2, "pluck": 0.2, "organ": 0.2},
        accompaniment={"block_sustain": 0.25, "block_quarters": 0.2, "block_pushed": 0.1,
                       "arp_up": 0.15, "arp_updown": 0.12, "alberti": 0.12, "arp_up16": 0.06},
        bass_patterns={"whole": 0.35, "beats_1_3": 0.25, "octaves": 0.15, "approach": 0.25},
        drum_patterns={"rock": 0.4, "pop16": 0.25, "half_time": 0.2, "four_floor": 0.15},
        drums_prob=0.7,
        melody_prob=0.65,
        melody_density=(0.1, 0.5),
        passing_prob=(0.2, 0.45),
        chromatic_prob=(0.0, 0.0),
    ),
    # Domain shift: timbres, patterns and tempi the demo style never uses.
    "shifted": Style(
        name="shifted",
        tempo_ranges=((50.0, 70.0), (160.0, 190.0)),
        chord_timbres={"fm_ep": 0.5, "brass": 0.25, "mallet": 0.25},
        bass_timbres={"fm_ep": 0.5, "brass": 0.5},
        melody_timbres={"brass": 0.4, "fm_ep": 0.3, "mallet": 0.3},
        accompaniment={"broken_332": 0.3, "offbeat_stabs": 0.25, "arp_down_triplets": 0.25,
                       "arp_random16": 0.2},
        bass_patterns={"syncopated": 0.5, "walking": 0.5},
        drum_patterns={"breakbeat": 0.5, "shuffle": 0.5},
        drums_prob=0.8,
        melody_prob=1.0,
        melody_density=(0.5, 0.9),
        passing_prob=(0.35, 0.6),
        chromatic_prob=(0.05, 0.15),
    ),
}


SOURCES = ("harmony", "music21")


@dataclass(frozen=True)
class Part:
    """One sub-corpus of a preset: ``songs`` songs from index ``first_index`` on.

    ``source``: ``harmony`` (the harmony model) or ``music21`` (score excerpts, always
    unlabelled); ``seconds``: song length (default: the preset's); ``pool``: resized by
    ``--pool-hours``; ``unseen_instruments``: GM programs no other part uses.
    """

    first_index: int
    songs: int
    labelled: bool = True  # False: empty labels column; labels aside in labels_aside/
    source: str = "harmony"
    seconds: float | None = None
    pool: bool = False
    unseen_instruments: bool = False


@dataclass(frozen=True)
class Preset:
    """``parts``: folder name -> one :class:`Part`, or several that share the folder."""

    style: str
    seconds: float
    parts: dict[str, Part | tuple[Part, ...]]
    renderer: str | None = None  # fixed renderer (None: the caller's --renderer)


def part_plan(preset: Preset, pool_hours: float | None = None) -> dict[str, tuple[Part, ...]]:
    """Each folder's parts, with ``pool`` parts resized so that all of them together hold
    ``pool_hours`` hours (in the proportions the preset gives them)."""
    plan = {k: (v,) if isinstance(v, Part) else tuple(v) for k, v in preset.parts.items()}
    if pool_hours is None:
        return plan
    if not pool_hours > 0:
        raise ValueError(f"pool hours must be positive, got {pool_hours}")
    pool = [p for parts in plan.values() for p in parts if p.pool]
    if not pool:
        raise ValueError("this preset has no pool to size")
    hours = sum(p.songs * (p.seconds or preset.seconds) for p in pool) / 3600
    scale = pool_hours / hours
    plan = {k: tuple(replace(p, songs=max(1, round(p.songs * scale))) if p.pool else p
                     for p in parts) for k, parts in plan.items()}
    check_disjoint(plan)
    return plan


def check_disjoint(plan: dict[str, tuple[Part, ...]]) -> None:
    """Raise :class:`ChordkdError` naming two folders whose song indices overlap within one source
    (a pool grown by ``--pool-hours`` must never reuse a valid or test song)."""
    spans = sorted((p.source, p.first_index, p.first_index + p.songs, name)
                   for name, parts in plan.items() for p in parts)
    for (s1, _, end1, name1), (s2, start2, _, name2) in zip(spans, spans[1:]):
        if s1 == s2 and end1 > start2:
            raise ChordkdError(f"{s1} songs of '{name1}' (up to index {end1 - 1}) overlap those of "
                             f"'{name2}' (from index {start2}): the pool is too large for this "
                             "preset's index ranges")


# ---------------------------------------------------------------------------------------------
# The sizes. demo: 180 songs x 40 s = 2 hours of audio.
PRESETS: dict[str, Preset] = {
    "demo": Preset(
        style="demo",
        seconds=40.0,
        parts={
            "teacher": Part(first_index=0, songs=48),
            "pool": Part(first_index=10_000, songs=96, labelled=False),
            "train": Part(first_index=20_000, songs=12),
            "valid": Part(first_index=30_000, songs=8),
            "test": Part(first_index=40_000, songs=16),
        },
    ),
    "shifted": Preset(
        style="shifted",
        seconds=40.0,
        parts={"test": Part(first_index=50_000, songs=16)},
    ),
    # realistic: sampled GM instruments (SoundFont) and real scores. 10 min labelled
    # (train: teacher and students), a 2-hour unlabelled pool (half score excerpts of up to
    # 60 s, some shorter, so 1.85 h, 11x; half harmony-model songs; --pool-hours scales it),
    # valid and test from the harmony model, and score excerpts on instruments no other part uses. ~2.5 h in all.
    "realistic": Preset(
        style="demo",
        seconds=30.0,
        renderer="soundfont",
        parts={
            "train": Part(first_index=60_000, songs=20),
            "pool": (Part(first_index=1_000_000, songs=120, labelled=False, pool=True),
                     Part(first_index=0, songs=60, labelled=False, source="music21",
                          seconds=60.0, pool=True)),
            "valid": Part(first_index=80_000, songs=8),
            "test": Part(first_index=90_000, songs=16),
            "test_scores": Part(first_index=10_000, songs=16, labelled=False, source="music21",
                                unseen_instruments=True),
        },
    ),
}
# ---------------------------------------------------------------------------------------------
