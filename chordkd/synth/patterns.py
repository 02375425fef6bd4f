"""From chords to notes: voicings, accompaniment patterns, a bass line, a melody, drums.

Everything here is symbolic (MIDI pitches, seconds); :mod:`chordkd.synth.render` turns it into
sound, and the SoundFont renderer plays the very same events. Registers: bass in octave 2
(MIDI 36-47), chord tones in octaves 3-5 (MIDI 48-84), melody above (MIDI 72-91).

The labels stay what a careful annotator would write: accompaniment and bass only sound chord
tones (the bass the labelled inversion), while the melody adds passing and neighbour tones on
weak beats, sometimes louder than any accompaniment note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chordkd.synth.harmony import Chord

PARTS = ("bass", "chords", "melody")
DRUMS = ("kick", "snare", "hat")
CHORD_LOW, CHORD_HIGH = 48, 84  # C3 .. C6
MELODY_LOW, MELODY_HIGH = 72, 91  # C5 .. G6
BASS_OCTAVE = 36  # C2


@dataclass
class NoteEvents:
    """Notes of a song as columns, one entry per note.

    ``onset``/``duration`` in seconds, ``pitch`` MIDI note numbers, ``velocity`` in (0, 1],
    ``part`` an index into :data:`PARTS`.
    """

    onset: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    pitch: list[int] = field(default_factory=list)
    velocity: list[float] = field(default_factory=list)
    part: list[int] = field(default_factory=list)

    def add(self, onset: float, duration: float, pitch: int, velocity: float, part: str) -> None:
        self.onset.append(float(onset))
        self.duration.append(float(duration))
        self.pitch.append(int(pitch))
        self.velocity.append(float(np.clip(velocity, 0.05, 1.0)))
        self.part.append(PARTS.index(part))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "onset": np.asarray(self.onset, dtype=np.float64),
            "duration": np.asarray(self.duration, dtype=np.float64),
            "pitch": np.asarray(self.pitch, dtype=np.int64),
            "velocity": np.asarray(self.velocity, dtype=np.float64),
            "part": np.asarray(self.part, dtype=np.int64),
        }


@dataclass
class DrumHits:
    """Drum hits: ``onset`` seconds, ``kind`` an index into :data:`DRUMS`, ``velocity`` (0, 1]."""

    onset: list[float] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    velocity: list[float] = field(default_factory=list)

    def add(self, onset: float, kind: str, velocity: float) -> None:
        if onset < 0:
            return
        self.onset.append(float(onset))
        self.kind.append(DRUMS.index(kind))
        self.velocity.append(float(np.clip(velocity, 0.05, 1.0)))


@dataclass(frozen=True)
class Grid:
    """The beat grid: chord beat ``b`` starts at ``t0 + b * beat`` seconds."""

    t0: float
    beat: float

    def time(self, beats: float) -> float:
        return self.t0 + beats * self.beat


# ----------------------------------------------------------------------------- voicings

def voice_chord(rng: np.random.Generator, chord: Chord, prev_low: int | None) -> list[int]:
    """A voicing of ``chord``'s tones in MIDI 48-84, lowest note first, every tone present.

    The lowest note stays near ``prev_low`` (smooth voice leading); the spread (close or
    open) and doublings (root, fifth, top-octave) vary per chord.
    """
    pcs = list(chord.pitch_classes)
    low = int(np.clip((prev_low if prev_low is not None else rng.integers(50, 58))
                      + rng.integers(-3, 4), CHORD_LOW, 60))
    # Upper-structure inversion: which chord tone sits lowest.
    k = int(rng.integers(len(pcs)))
    order = pcs[k:] + pcs[:k]
    open_voicing = rng.random() < 0.35
    notes: list[int] = []
    p = low + (order[0] - low) % 12
    notes.append(p)
    for i, pc in enumerate(order[1:]):
        p = p + 1 + (pc - p - 1) % 12
        if open_voicing and i % 2 == 0 and p + 12 <= CHORD_HIGH:
            p += 12
        notes.append(p)
    # Doublings: the root or fifth an octave up, sometimes the lowest tone on top.
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        cand = notes[int(rng.integers(len(notes)))] + 12
        if cand <= CHORD_HIGH and cand not in notes:
            notes.append(cand)
    notes = [n - 12 if n > CHORD_HIGH else n for n in notes]
    return sorted(set(notes))


# ----------------------------------------------------------------------------- accompaniment

def _arp_order(pattern: str, n: int, steps: int, rng: np.random.Generator) -> list[int]:
    up = list(range(n))
    if pattern in ("arp_up", "arp_up16"):
        return [up[i % n] for i in range(steps)]
    if pattern == "arp_updown":
        cycle = up + up[-2:0:-1] if n > 2 else up
        return [cycle[i % len(cycle)] for i in range(steps)]
    if pattern == "alberti":  # low, high, mid, high
        cycle = [0, n - 1, n // 2, n - 1]
        return [cycle[i % 4] for i in range(steps)]
    if pattern == "arp_down_triplets":
        down = up[::-1]
        return [down[i % n] for i in range(steps)]
    if pattern == "arp_random16":
        return [int(rng.integers(n)) for _ in range(steps)]
    raise ValueError(f"unknown arpeggio pattern {pattern!r}")


# Step (in beats) of each arpeggio pattern.
ARP_STEPS = {"arp_up": 0.5, "arp_updown": 0.5, "alberti": 0.5, "arp_up16": 0.25,
             "arp_down_triplets": 1 / 3, "arp_random16": 0.25}
# Onsets within a bar (beats) of each block pattern; None: once per chord.
BLOCK_RHYTHMS = {
    "block_sustain": None,
    "block_quarters": (0, 1, 2, 3),
    "block_pushed": (0, 1.5, 2.5),  # the 3+3+2 feel, held
    "broken_332": (0, 1.5, 3),
    "offbeat_stabs": (0.5, 1.5, 2.5, 3.5),
}
ACCOMPANIMENT_PATTERNS = tuple(BLOCK_RHYTHMS) + tuple(ARP_STEPS)


def accompany(rng: np.random.Generator, chords: list[Chord], grid: Grid, patterns: list[str],
              events: NoteEvents, level: float, swing: float = 0.0) -> None:
    """Chord-tone notes for every chord; ``patterns[j]`` plays the chords of 8-bar block ``j``.

    Arpeggiated notes ring on (pedal) or are detached, as chosen per song.
    """
    pedal = rng.random() < 0.6
    prev_low: int | None = None
    for chord in chords:
        voicing = voice_chord(rng, chord, prev_low)
        prev_low = voicing[0]
        pattern = patterns[(chord.start // 32) % len(patterns)]
        end = chord.start + chord.beats
        if pattern in ARP_STEPS:
            step = ARP_STEPS[pattern]
            n_steps = int(round(chord.beats / step))
            for i, v in enumerate(_arp_order(pattern, len(voicing), n_steps, rng)):
                b = chord.start + i * step
                if swing and abs((b % 1) - 0.5) < 1e-9:
                    b += swing
                dur = (end - b) if pedal else step * 1.2
                accent = 1.0 if abs(b - round(b)) < 1e-9 else 0.85
                events.add(grid.time(b) + rng.normal(0, 0.004), dur * grid.beat, voicing[v],
                           level * accent * rng.uniform(0.85, 1.05), "chords")
            continue
        rhythm = BLOCK_RHYTHMS[pattern]
        if rhythm is None:
            onsets = [float(chord.start)]
        else:
            bar0 = chord.start - chord.start % 4
            onsets = [bar0 + 4 * k + r for k in range(chord.beats // 4 + 2) for r in rhythm]
            onsets = [b for b in onsets if chord.start <= b < end] or [float(chord.start)]
        short = pattern == "offbeat_stabs"
        for j, b in enumerate(onsets):
            nxt = onsets[j + 1] if j + 1 < len(onsets) else end
            dur = (0.35 if short else 0.95 * (nxt - b)) * grid.beat
            spread = rng.uniform(0, 0.012)  # a strum: low to high
            for k, p in enumerate(voicing):
                events.add(grid.time(b) + k * spread / len(voicing) + rng.normal(0, 0.003),
                           dur, p, level * rng.uniform(0.8, 1.0), "chords")


# ----------------------------------------------------------------------------- bass

BASS_PATTERNS = ("whole", "beats_1_3", "octaves", "approach", "syncopated", "walking")


def bass_line(rng: np.random.Generator, chords: list[Chord], grid: Grid, pattern: str,
              events: NoteEvents, level: float) -> None:
    """Bass notes in octave 2 on the labelled bass (the inversion's note when inverted).

    ``approach`` adds a soft passing note a step from the next chord's bass just before the
    change; ``walking`` (shifted preset only) walks chord tones on beats 2-4.
    """
    for i, chord in enumerate(chords):
        b0, end = chord.start, chord.start + chord.beats
        pitch = BASS_OCTAVE + chord.bass
        if pattern == "whole":
            events.add(grid.time(b0), chord.beats * grid.beat * 0.98, pitch, level, "bass")
        elif pattern in ("beats_1_3", "octaves", "syncopated"):
            step = {"beats_1_3": 2.0, "octaves": 1.0, "syncopated": 1.5}[pattern]
            b, k = float(b0), 0
            while b < end - 1e-9:
                up = 12 if pattern == "octaves" and k % 2 else 0
                dur = min(step, end - b) * grid.beat * 0.9
                events.add(grid.time(b), dur, pitch + up, level * (1.0 if k == 0 else 0.85), "bass")
                b, k = b + step, k + 1
        elif pattern == "approach":
            has_next = i + 1 < len(chords) and chord.beats >= 2
            held = chord.beats - (0.5 if has_next else 0)
            events.add(grid.time(b0), held * grid.beat * 0.98, pitch, level, "bass")
            if has_next:
                target = BASS_OCTAVE + chords[i + 1].bass
                events.add(grid.time(end - 0.5), 0.45 * grid.beat,
                           target + int(rng.choice([-2, -1, 1, 2])), level * 0.6, "bass")
        elif pattern == "walking":
            tones = [chord.bass] + [pc for pc in chord.pitch_classes if pc != chord.bass]
            for k in range(chord.beats):
                pc = tones[0] if k == 0 else tones[int(rng.integers(len(tones)))]
                events.add(grid.time(b0 + k), 0.9 * grid.beat, BASS_OCTAVE + pc,
                           level * (1.0 if k == 0 else 0.8), "bass")
        else:
            raise ValueError(f"unknown bass pattern {pattern!r}")


# ----------------------------------------------------------------------------- melody

def melody(rng: np.random.Generator, chords: list[Chord], grid: Grid, scale: tuple[int, ...],
           events: NoteEvents, level: float, density: float, passing: float,
           chromatic: float = 0.0, rest: float = 0.15) -> None:
    """A melody over the chords, MIDI 72-91.

    On beats it sings chord tones (moving mostly by small steps); between beats, with
    probability ``passing``, a scale tone that is not in the chord (passing or neighbour
    tone), or with probability ``chromatic`` a chromatic neighbour. ``density`` in [0, 1] is
    the share of beats split into eighths (and, above 0.5, some into sixteenths).
    """
    cur = int(rng.integers(MELODY_LOW + 4, MELODY_HIGH - 6))
    for chord in chords:
        tones = [p for p in range(MELODY_LOW, MELODY_HIGH + 1) if p % 12 in chord.pitch_classes]
        others = [p for p in range(MELODY_LOW, MELODY_HIGH + 1)
                  if p % 12 in scale and p % 12 not in chord.pitch_classes]
        for k in range(chord.beats):
            if rng.random() < rest:
                continue
            r = rng.random()
            subdiv = 4 if (density > 0.5 and r < density - 0.5) else (2 if r < density else 1)
            for j in range(subdiv):
                b = chord.start + k + j / subdiv
                strong = j == 0
                if not strong and rng.random() < chromatic:
                    nearest = min(tones, key=lambda p: abs(p - cur))
                    pitch = nearest + int(rng.choice([-1, 1]))
                elif not strong and others and rng.random() < passing:
                    near = sorted(others, key=lambda p: abs(p - cur))[:2]
                    pitch = int(near[int(rng.integers(len(near)))])
                else:
                    w = np.exp(-np.abs(np.array(tones) - cur) / 3.0)
                    pitch = int(tones[int(rng.choice(len(tones), p=w / w.sum()))])
                cur = int(np.clip(pitch, MELODY_LOW, MELODY_HIGH))
                dur = grid.beat / subdiv * (0.9 if strong else 0.8)
                vel = level * (1.0 if strong else 0.8) * rng.uniform(0.85, 1.1)
                events.add(grid.time(b) + rng.normal(0, 0.005), dur, cur, vel, "melody")


# ----------------------------------------------------------------------------- drums

# Per bar (beats): kick, snare, hi-hat onsets.
DRUM_PATTERNS = {
    "rock": ((0, 2), (1, 3), tuple(i / 2 for i in range(8))),
    "pop16": ((0, 1.5, 2), (1, 3), tuple(i / 4 for i in range(16))),
    "half_time": ((0, 2.5), (2,), tuple(i / 2 for i in range(8))),
    "four_floor": ((0, 1, 2, 3), (1, 3), (0.5, 1.5, 2.5, 3.5)),
    "breakbeat": ((0, 1.75, 2.5), (1, 3, 3.75), tuple(i / 4 for i in range(16))),
    "shuffle": ((0, 2), (1, 3), tuple(b + t for b in range(4) for t in (0, 2 / 3))),
}


def drums(rng: np.random.Generator, grid: Grid, first_beat: int, last_beat: int, pattern: str,
          hits: DrumHits, level: float) -> None:
    """Drum hits on every bar from beat ``first_beat`` (may be negative: a count-in during the
    intro) up to ``last_beat`` (exclusive); off-beat hits a little softer."""
    kick, snare, hat = DRUM_PATTERNS[pattern]
    bar = first_beat - first_beat % 4
    while bar < last_beat:
        for name, onsets, gain in (("kick", kick, 0.7), ("snare", snare, 0.8), ("hat", hat, 0.4)):
            for o in onsets:
                b = bar + o
                if first_beat <= b < last_beat:
                    accent = 1.0 if abs(o - round(o)) < 1e-9 else 0.75
                    hits.add(grid.time(b) + rng.normal(0, 0.003), name,
                             level * gain * accent * rng.uniform(0.85, 1.05))
        bar += 4
