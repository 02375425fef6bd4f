"""One synthetic song: its score (chords, notes, labels) and its audio.

Song ``index`` of seed ``seed`` depends on nothing else (besides its length and style): every
random draw comes from ``np.random.default_rng([seed, index, stream])``, with separate streams
for the plan, the harmony, the notes and the sound, so a corpus can be generated in any order,
in parallel, or extended, and the score does not depend on the renderer.

Layout in time: ``N`` for 1-3 s (silence, or a drum count-in), then chords on a 4/4 beat grid,
then ``N`` to the end (at least 1-3 s). Labels are contiguous and end exactly at the audio's
duration.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from chordkd.synth import harmony, patterns
from chordkd.synth.harmony import Chord
from chordkd.synth.presets import STYLES, Style, pick
from chordkd.synth.render import SR, draw_mix, render_builtin

RENDERERS = ("builtin", "soundfont")
MIN_SECONDS = 5.0  # room for 0.5-0.75 s of N at each end and a few beats of chords
_PLAN, _HARMONY, _NOTES, _SOUND = range(4)


@dataclass
class Score:
    """Everything about a song but its sound.

    ``intervals``: float ``[n, 2]`` seconds, contiguous from 0 to ``n_samples / SR``;
    ``labels``: Harte labels (``N`` first and last). ``notes``/``drums``: event columns.
    """

    chords: list[Chord]
    intervals: np.ndarray
    labels: list[str]
    notes: dict[str, np.ndarray]
    drums: dict[str, np.ndarray]
    n_samples: int
    timbres: dict[str, str]
    melody_loud: bool
    meta: dict


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def style_by_name(style: str | Style) -> Style:
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} (known: {', '.join(STYLES)})")
    return STYLES[style]


def compose_song(seed: int, index: int, seconds: float = 40.0, style: str | Style = "demo") -> Score:
    """The score of song ``index``: chords, labels, note and drum events, no audio (fast).

    Raises ValueError for ``seconds`` below :data:`MIN_SECONDS` or a negative seed/index.
    """
    if seconds < MIN_SECONDS:
        raise ValueError(f"seconds must be at least {MIN_SECONDS}, got {seconds}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    st = style_by_name(style)
    rng = _rng(seed, index, _PLAN)
    tonic = int(rng.integers(12))
    mode = "major" if rng.random() < st.major_prob else "minor"
    tempo = st.tempo(rng)
    beat = 60.0 / tempo
    edge = min(3.0, max(0.5, 0.15 * seconds))
    intro = float(rng.uniform(min(1.0, edge), edge))
    outro = float(rng.uniform(min(1.0, edge), edge))
    n_samples = int(round(seconds * SR))
    duration = n_samples / SR
    total_beats = int(math.floor((duration - intro - outro) / beat))
    timbres = {
        "chords": pick(rng, st.chord_timbres),
        "bass": pick(rng, st.bass_timbres),
        "melody": pick(rng, st.melody_timbres),
    }
    accompaniment = [pick(rng, st.accompaniment)]
    if rng.random() < st.second_pattern_prob:
        accompaniment.append(pick(rng, st.accompaniment))
    bass_pattern = pick(rng, st.bass_patterns)
    has_melody = rng.random() < st.melody_prob
    melody_loud = has_melody and rng.random() < 0.6
    density = float(rng.uniform(*st.melody_density))
    passing = float(rng.uniform(*st.passing_prob))
    chromatic = float(rng.uniform(*st.chromatic_prob))
    drum_pattern = pick(rng, st.drum_patterns) if rng.random() < st.drums_prob else None
    count_in = drum_pattern is not None and rng.random() < 0.5
    drums_in_outro = drum_pattern is not None and rng.random() < 0.3
    swing = 1 / 6 if rng.random() < 0.15 else 0.0  # swung eighths in arpeggios
    tuning = float(rng.uniform(-30.0, 30.0))

    rare = harmony.rare_quality_for(index)
    chords = harmony.generate_progression(_rng(seed, index, _HARMONY), tonic, mode, total_beats, rare)
    grid = patterns.Grid(t0=intro, beat=beat)

    rng = _rng(seed, index, _NOTES)
    events = patterns.NoteEvents()
    patterns.accompany(rng, chords, grid, accompaniment, events, level=1.0, swing=swing)
    patterns.bass_line(rng, chords, grid, bass_pattern, events, level=1.0)
    if has_melody:
        patterns.melody(rng, chords, grid, harmony.scale_pitch_classes(tonic, mode), events,
                        level=1.0, density=density, passing=passing, chromatic=chromatic)
    hits = patterns.DrumHits()
    if drum_pattern is not None:
        first = -int(intro // beat) if count_in else 0
        last = total_beats
        if drums_in_outro:  # drums play on (N: no chord sounds) while there is room
            last += max(0, int((duration - grid.time(total_beats) - 0.3) // beat))
        patterns.drums(rng, grid, first, last, drum_pattern, hits, level=1.0)

    end = grid.time(total_beats)
    bounds = [0.0] + [grid.time(c.start) for c in chords] + [end, duration]
    labels = ["N"] + [c.label for c in chords] + ["N"]
    intervals = np.array(list(zip(bounds[:-1], bounds[1:])), dtype=np.float64)

    qualities = sorted({c.quality for c in chords})
    meta = {
        "seed": seed, "index": index, "seconds": round(duration, 6), "style": st.name,
        "key": f"{harmony.PITCH_NAMES[tonic]}:{mode}", "tempo": round(tempo, 3),
        "timbre": timbres["chords"], "bass_timbre": timbres["bass"],
        "melody_timbre": timbres["melody"] if has_melody else "",
        "accompaniment": "+".join(accompaniment), "bass_pattern": bass_pattern,
        "drums": drum_pattern or "", "tuning_cents": round(tuning, 3),
        "rare_quality": rare, "qualities": " ".join(qualities),
        "n_chords": len(chords),
    }
    if not has_melody:
        timbres = {k: v for k, v in timbres.items() if k != "melody"}
    return Score(chords, intervals, labels, events.arrays(), _drum_columns(hits), n_samples,
                 timbres, melody_loud, meta)


def _drum_columns(hits: patterns.DrumHits) -> dict[str, np.ndarray]:
    return {"onset": np.asarray(hits.onset, dtype=np.float64),
            "kind": np.asarray(hits.kind, dtype=np.int64),
            "velocity": np.asarray(hits.velocity, dtype=np.float64)}


def synthesize_song(
    seed: int,
    index: int,
    seconds: float = 40.0,
    style: str | Style = "demo",
    renderer: str = "builtin",
    soundfont: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Song ``index`` of seed ``seed``: ``(audio, intervals, labels, meta)``.

    ``audio``: float32 ``[round(seconds * 22050)]`` mono at 22,050 Hz, peak below 1;
    ``intervals``: float ``[n, 2]`` seconds covering the audio exactly; ``labels``: Harte;
    ``meta``: key, tempo, timbres, patterns, tuning offset and the like (for the manifest).

    >>> audio, intervals, labels, meta = synthesize_song(seed=0, index=3, seconds=12)
    """
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r} (known: {', '.join(RENDERERS)})")
    score = compose_song(seed, index, seconds, style)
    rng = _rng(seed, index, _SOUND)
    mix = draw_mix(rng, score.melody_loud)
    if renderer == "builtin":
        audio = render_builtin(rng, score.notes, score.drums, score.n_samples, score.timbres,
                               score.meta["tuning_cents"], mix)
        meta = dict(score.meta, renderer=renderer, source="harmony model")
    else:
        audio, instruments = render_soundfont(score, rng, soundfont)
        meta = dict(score.meta, renderer=renderer, source="harmony model", **instruments)
    return audio, score.intervals, score.labels, meta


# MIDI channels of a SoundFont arrangement (drums on the GM percussion channel).
_CHANNEL = {"bass": 0, "chords": 1, "pad": 2, "melody": 3}
_ROLE = {"bass": "bass", "chords": "comping", "pad": "pad", "melody": "melody"}


def render_soundfont(score: Score, rng: np.random.Generator,
                     soundfont: str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """Play a song's score on sampled GM instruments drawn per song (see ``synth.gm``).

    The arrangement: the score's bass, comping (its accompaniment pattern) and melody, plus
    a sustained pad or strings holding each chord's tones for the chord's span, and the
    drums on a GM kit. Onsets and velocities are humanised (a few milliseconds, so labels
    stay exact at the frame rate). Returns float32 ``[n_samples]`` audio and the manifest's
    instrument columns (``instruments``, ``families``, ``timbre``, ``bass_timbre``,
    ``melody_timbre`` as GM names).
    """
    from chordkd.synth import gm
    from chordkd.synth.soundfont import DRUM_CHANNEL, Channel, humanise, render_events

    programs = {part: gm.draw(rng, gm.SONG_ROLES[_ROLE[part]]) for part in _CHANNEL}
    # MIDI volume (CC7, about 40 log10(v) dB). GM basses are sampled loud, and a low note's
    # energy spreads over neighbouring CQT bins, so the bass sits ~10 dB under the comping.
    gains = {"bass": rng.uniform(0.4, 0.6), "chords": rng.uniform(0.75, 1.0),
             "pad": rng.uniform(0.55, 0.8),
             "melody": rng.uniform(0.5, 0.7) if score.melody_loud else rng.uniform(0.35, 0.5)}
    has_melody = bool((score.notes["part"] == patterns.PARTS.index("melody")).any())
    used = [p for p in _CHANNEL if p != "melody" or has_melody]
    channels = {_CHANNEL[p]: Channel(programs[p], gain=float(gains[p])) for p in used}
    columns = [np.asarray(score.notes[k]) for k in ("onset", "duration", "pitch", "velocity")]
    part_channel = np.array([_CHANNEL[p] for p in patterns.PARTS])[score.notes["part"]]
    pad = _pad_events(score)
    drum_kit = None
    if len(score.drums["onset"]):
        drum_kit = gm.draw(rng, gm.DRUM_KITS)
        channels[DRUM_CHANNEL] = Channel(drum_kit, drums=True, gain=float(rng.uniform(0.25, 0.4)))
        keys = np.array([36, int(rng.choice([38, 40])), int(rng.choice([42, 44, 51]))])
        drums = {"onset": score.drums["onset"], "duration": np.full(len(score.drums["onset"]), 0.1),
                 "pitch": keys[score.drums["kind"]], "velocity": score.drums["velocity"],
                 "channel": np.full(len(score.drums["onset"]), DRUM_CHANNEL)}
    else:
        drums = {k: np.zeros(0) for k in ("onset", "duration", "pitch", "velocity", "channel")}
    events = {k: np.concatenate([col, pad[k], drums[k]]) for k, col in
              zip(("onset", "duration", "pitch", "velocity"), columns)}
    events["channel"] = np.concatenate([part_channel, pad["channel"], drums["channel"]]).astype(int)
    events["pitch"] = events["pitch"].astype(int)
    audio = render_events(humanise(rng, events), channels, score.n_samples,
                          score.meta["tuning_cents"], rng, soundfont)
    roles = {_ROLE[p]: programs[p] for p in used}
    names = {k: gm.program_name(programs[p]) for k, p in
             (("timbre", "chords"), ("bass_timbre", "bass"), ("melody_timbre", "melody"))}
    if not has_melody:
        names["melody_timbre"] = ""
    return audio, {**gm.describe(roles, drum_kit), **names}


def _pad_events(score: Score) -> dict[str, np.ndarray]:
    """One sustained close voicing of every chord (its tones from G3 up), over its span."""
    rows = []
    for chord, (start, end) in zip(score.chords, score.intervals[1:-1]):
        for pc in chord.pitch_classes:
            rows.append((start, end - start, 55 + (pc - 55) % 12, 0.6))
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return {"onset": a[:, 0], "duration": a[:, 1], "pitch": a[:, 2].astype(int),
            "velocity": a[:, 3], "channel": np.full(len(a), _CHANNEL["pad"])}
