"""Chord progressions: a key-aware transition model over 12 roots x 14 qualities.

A song's harmony is a list of :class:`Chord` events on a 4/4 beat grid. Progressions come from
a Markov chain over the diatonic (and borrowed, secondary, rare) chords of a major or minor key:
the next chord is drawn with probability proportional to a function-to-function weight
(tonic -> subdominant -> dominant -> tonic) times the chord's own frequency, with the pull of a
secondary dominant, a suspension or a leading-tone chord towards its resolution. Phrases of 4 or
8 bars are repeated in a song form (A A B A ...), as in pop and jazz standards.

The frequencies give a long-tailed quality distribution like real annotations (maj and min
about three quarters of chord time, then the 7th chords, then the rest), and every song holds
at least one rare chord drawn in rotation by song index, so any 9 consecutive songs contain all
nine rare qualities (see :data:`RARE_QUALITIES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Semitones above the root of each quality's tones, root first (Harte shorthands).
QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "min6": (0, 3, 7, 9),
    "maj6": (0, 4, 7, 9),
    "min7": (0, 3, 7, 10),
    "minmaj7": (0, 3, 7, 11),
    "maj7": (0, 4, 7, 11),
    "7": (0, 4, 7, 10),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
}
QUALITIES: tuple[str, ...] = tuple(QUALITY_INTERVALS)
# Rare qualities, one of which every song is guaranteed to contain (in rotation by song index).
RARE_QUALITIES = ("dim", "aug", "sus2", "sus4", "maj6", "min6", "minmaj7", "dim7", "hdim7")

# Harte scale degrees of the chord tones a bass may take in an inversion. Inversions are written
# only for the qualities annotators commonly invert (Isophonics, Billboard, RWC Pop).
INVERSION_DEGREES: dict[str, dict[int, str]] = {
    "maj": {4: "3", 7: "5"},
    "min": {3: "b3", 7: "5"},
    "7": {4: "3", 7: "5", 10: "b7"},
    "maj7": {4: "3", 7: "5", 11: "7"},
    "min7": {3: "b3", 7: "5", 10: "b7"},
}

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor; V and vii(o) add the leading tone


@dataclass(frozen=True)
class Chord:
    """One chord event on the beat grid.

    ``root`` and ``bass`` are pitch classes (0 = C); ``bass`` differs from ``root`` for an
    inversion. ``start`` and ``beats`` count beats from the first chord of the song.
    """

    root: int
    quality: str
    bass: int
    start: int
    beats: int

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in QUALITY_INTERVALS[self.quality])

    @property
    def label(self) -> str:
        """The Harte label, e.g. ``C:maj``, ``A:min/b3``, ``G:7/b7``."""
        return harte_label(self.root, self.quality, self.bass)


def harte_label(root: int, quality: str, bass: int | None = None) -> str:
    """Harte label of a chord; ``bass`` (pitch class) other than the root gives an inversion.

    >>> harte_label(0, "maj", 4)
    'C:maj/3'
    """
    label = f"{PITCH_NAMES[root % 12]}:{quality}"
    if bass is not None and bass % 12 != root % 12:
        degree = INVERSION_DEGREES.get(quality, {}).get((bass - root) % 12)
        if degree is None:
            raise ValueError(f"{label}: no Harte inversion with bass {PITCH_NAMES[bass % 12]}")
        label += f"/{degree}"
    return label


@dataclass(frozen=True)
class Function:
    """A chord of a key: ``degree`` semitones above the tonic, its harmonic function
    (``T``, ``S``, ``D``), relative frequency ``weight``, and optionally the degree it
    resolves to (``resolves``, e.g. a secondary dominant's target)."""

    name: str
    degree: int
    quality: str
    function: str
    weight: float
    resolves: int | None = None
    resolves_quality: str | None = None


def _f(name, degree, quality, function, weight, resolves=None, resolves_quality=None):
    return Function(name, degree, quality, function, weight, resolves, resolves_quality)


# Chord frequencies within a key, hand-set so that corpus statistics resemble pop/jazz
# annotations (checked by tests/test_synth.py and printed by bench/synth_speed.py).
MAJOR_KEY: tuple[Function, ...] = (
    _f("I", 0, "maj", "T", 1.0),
    _f("ii", 2, "min", "S", 0.45),
    _f("iii", 4, "min", "T", 0.18),
    _f("IV", 5, "maj", "S", 0.85),
    _f("V", 7, "maj", "D", 0.8),
    _f("vi", 9, "min", "T", 0.6),
    _f("V7", 7, "7", "D", 0.32),
    _f("Imaj7", 0, "maj7", "T", 0.1),
    _f("IVmaj7", 5, "maj7", "S", 0.1),
    _f("ii7", 2, "min7", "S", 0.2),
    _f("vi7", 9, "min7", "T", 0.07),
    _f("iii7", 4, "min7", "T", 0.04),
    _f("bVII", 10, "maj", "S", 0.14),  # borrowed from the parallel minor
    _f("iv", 5, "min", "S", 0.07),  # borrowed
    _f("bVI", 8, "maj", "S", 0.07),  # borrowed
    _f("V7/V", 2, "7", "D", 0.08, 7, "maj"),
    _f("V7/vi", 4, "7", "D", 0.06, 9, "min"),
    _f("V7/ii", 9, "7", "D", 0.05, 2, "min"),
    _f("V7/IV", 0, "7", "D", 0.05, 5, "maj"),
    # the long tail
    _f("viio", 11, "dim", "D", 0.015, 0, "maj"),
    _f("viiø7", 11, "hdim7", "D", 0.01, 0, "maj"),
    _f("viio7", 11, "dim7", "D", 0.008, 0, "maj"),
    _f("#io7", 1, "dim7", "D", 0.006, 2, "min"),  # passing diminished
    _f("V+", 7, "aug", "D", 0.008, 0, "maj"),
    _f("Vsus4", 7, "sus4", "D", 0.03, 7, "maj"),
    _f("Isus4", 0, "sus4", "T", 0.012, 0, "maj"),
    _f("Isus2", 0, "sus2", "T", 0.015),
    _f("IVsus2", 5, "sus2", "S", 0.008),
    _f("I6", 0, "maj6", "T", 0.015),
    _f("IV6", 5, "maj6", "S", 0.01),
    _f("iv6", 5, "min6", "S", 0.008),  # borrowed
    _f("vi(maj7)", 9, "minmaj7", "T", 0.006, 9, "min7"),  # line cliche
)

MINOR_KEY: tuple[Function, ...] = (
    _f("i", 0, "min", "T", 1.0),
    _f("iv", 5, "min", "S", 0.7),
    _f("v", 7, "min", "D", 0.15),
    _f("V", 7, "maj", "D", 0.55),
    _f("V7", 7, "7", "D", 0.32),
    _f("bVI", 8, "maj", "S", 0.6),
    _f("bVII", 10, "maj", "D", 0.45),
    _f("bIII", 3, "maj", "T", 0.45),
    _f("i7", 0, "min7", "T", 0.1),
    _f("iv7", 5, "min7", "S", 0.09),
    _f("bVImaj7", 8, "maj7", "S", 0.12),
    _f("bIIImaj7", 3, "maj7", "T", 0.06),
    _f("bVII7", 10, "7", "D", 0.05, 3, "maj"),
    _f("IV", 5, "maj", "S", 0.05),  # dorian
    _f("V7/iv", 0, "7", "D", 0.04, 5, "min"),
    # the long tail
    _f("iio", 2, "dim", "S", 0.02, 7, "maj"),
    _f("iiø7", 2, "hdim7", "S", 0.02, 7, "7"),
    _f("viio7", 11, "dim7", "D", 0.012, 0, "min"),
    _f("viio", 11, "dim", "D", 0.006, 0, "min"),
    _f("bIII+", 3, "aug", "T", 0.008),
    _f("i6", 0, "min6", "T", 0.012),
    _f("iv6", 5, "min6", "S", 0.01),
    _f("i(maj7)", 0, "minmaj7", "T", 0.01, 0, "min7"),  # line cliche
    _f("Vsus4", 7, "sus4", "D", 0.03, 7, "maj"),
    _f("isus2", 0, "sus2", "T", 0.012),
    _f("bVI6", 8, "maj6", "S", 0.008),
    _f("bIII6", 3, "maj6", "T", 0.006),
)

# Function-to-function transition weights: tonic -> subdominant -> dominant -> tonic.
FUNCTION_TRANSITIONS = {
    "T": {"T": 0.25, "S": 0.5, "D": 0.25},
    "S": {"T": 0.2, "S": 0.25, "D": 0.55},
    "D": {"T": 0.8, "S": 0.15, "D": 0.05},
}
RESOLVE_PROB = 0.85  # a chord with a resolution moves to it this often
FIFTH_DOWN_BONUS = 1.5  # root motion down a fifth is the strongest progression

# How a bar of 4 beats is split into chords (beats per chord); changes mostly on bar lines.
BAR_SPLITS = ((4,), (2, 2), (2, 1, 1), (1, 1, 2), (1, 1, 1, 1))
# Harmonic rhythm of a song: probabilities of the bar splits above.
HARMONIC_RHYTHMS = {
    "bar": (0.88, 0.1, 0.01, 0.01, 0.0),
    "half": (0.35, 0.6, 0.03, 0.02, 0.0),
    "busy": (0.3, 0.45, 0.1, 0.1, 0.05),
}
HARMONIC_RHYTHM_PROBS = {"bar": 0.55, "half": 0.33, "busy": 0.12}
HOLD_PROB = 0.12  # a bar keeps the previous bar's chord (two-bar chords)
INVERSION_PROB = 0.1  # a chord of an invertible quality is inverted (more when the bass steps)


def key_functions(mode: str) -> tuple[Function, ...]:
    """The chords of a ``"major"`` or ``"minor"`` key, relative to its tonic."""
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    return MAJOR_KEY if mode == "major" else MINOR_KEY


def rare_quality_for(index: int) -> str:
    """The rare quality song ``index`` is guaranteed to contain (rotation over 9 qualities)."""
    return RARE_QUALITIES[index % len(RARE_QUALITIES)]


def _next_function(rng: np.random.Generator, funcs: tuple[Function, ...], cur: int) -> int:
    f = funcs[cur]
    if f.resolves is not None and rng.random() < RESOLVE_PROB:
        targets = [
            j for j, g in enumerate(funcs)
            if g.degree == f.resolves and g.quality == f.resolves_quality
        ]
        if targets:
            return targets[0]
    w = np.array([
        FUNCTION_TRANSITIONS[f.function][g.function] * g.weight
        * (FIFTH_DOWN_BONUS if (g.degree - f.degree) % 12 == 5 else 1.0)
        * (0.0 if (g.degree, g.quality) == (f.degree, f.quality) else 1.0)
        for g in funcs
    ])
    return int(rng.choice(len(funcs), p=w / w.sum()))


def _phrase(rng: np.random.Generator, funcs: tuple[Function, ...], bars: int,
            rhythm: str) -> list[tuple[int, int]]:
    """One phrase: a list of (function index, beats), starting on the tonic."""
    split_probs = np.array(HARMONIC_RHYTHMS[rhythm])
    out: list[tuple[int, int]] = []
    cur = 0  # funcs[0] is the tonic triad
    for bar in range(bars):
        if bar > 0 and rng.random() < HOLD_PROB:
            out.append((cur, 4))
            continue
        split = BAR_SPLITS[int(rng.choice(len(BAR_SPLITS), p=split_probs / split_probs.sum()))]
        for k, beats in enumerate(split):
            if out:
                cur = _next_function(rng, funcs, cur)
            # Phrases end on a dominant half the time, so the repeat is a cadence.
            if bar == bars - 1 and k == len(split) - 1 and rng.random() < 0.5:
                cur = int(rng.choice([j for j, g in enumerate(funcs) if g.name in ("V", "V7")]))
            out.append((cur, beats))
    return out


def _choose_bass(rng: np.random.Generator, root: int, quality: str, prev_bass: int | None) -> int:
    options = INVERSION_DEGREES.get(quality)
    if not options:
        return root
    inv = INVERSION_PROB
    # A bass line moving by step invites an inversion (C  G/B  Am); a leap to the root does not.
    stepwise = [
        (root + iv) % 12 for iv in options
        if prev_bass is not None and min((root + iv - prev_bass) % 12, (prev_bass - root - iv) % 12) in (1, 2)
    ]
    if stepwise and prev_bass is not None and min((root - prev_bass) % 12, (prev_bass - root) % 12) > 2:
        inv = 0.35
        if rng.random() < inv:
            return int(rng.choice(stepwise))
        return root
    if rng.random() < inv:
        return int((root + rng.choice(sorted(options))) % 12)
    return root


def generate_progression(
    rng: np.random.Generator, tonic: int, mode: str, total_beats: int, rare: str | None = None
) -> list[Chord]:
    """Chords filling ``total_beats`` beats of 4/4 in the key ``tonic`` (pitch class) ``mode``.

    The song is a form of two phrases (A and B, 4 or 8 bars each) repeated; the last chord is
    cut to end at ``total_beats``. With ``rare`` (a quality of :data:`RARE_QUALITIES`) one
    chord inside the song is replaced by a chord of that quality that fits the key (and, where
    it has one, followed by its resolution). Consecutive equal chords are merged.
    """
    if total_beats < 1:
        raise ValueError(f"total_beats must be >= 1, got {total_beats}")
    funcs = key_functions(mode)
    names = list(HARMONIC_RHYTHM_PROBS)
    rhythm = names[int(rng.choice(len(names), p=list(HARMONIC_RHYTHM_PROBS.values())))]
    bars_a, bars_b = (int(rng.choice([4, 8])) for _ in range(2))
    phrase_a = _phrase(rng, funcs, bars_a, rhythm)
    phrase_b = _phrase(rng, funcs, bars_b, rhythm)
    forms = (("A", "A", "B", "A"), ("A", "B", "A", "B"), ("A", "A", "B", "B"))
    form = forms[int(rng.choice(len(forms)))]
    seq: list[tuple[int, int]] = []
    while sum(b for _, b in seq) < total_beats:
        for part in form:
            seq.extend(phrase_a if part == "A" else phrase_b)
    # Cut to the song's length.
    steps: list[list[int]] = []  # [function index, beats]
    beats_so_far = 0
    for fi, beats in seq:
        if beats_so_far >= total_beats:
            break
        steps.append([fi, min(beats, total_beats - beats_so_far)])
        beats_so_far += beats
    if rare is not None:
        _insert_rare(rng, funcs, steps, rare)
    chords: list[Chord] = []
    start = 0
    prev_bass: int | None = None
    for fi, beats in steps:
        f = funcs[fi]
        root = (tonic + f.degree) % 12
        if chords and chords[-1].root == root and chords[-1].quality == f.quality:
            last = chords[-1]
            chords[-1] = Chord(last.root, last.quality, last.bass, last.start, last.beats + beats)
        else:
            bass = _choose_bass(rng, root, f.quality, prev_bass)
            chords.append(Chord(root, f.quality, bass, start, beats))
            prev_bass = bass
        start += beats
    return chords


def _insert_rare(rng: np.random.Generator, funcs: tuple[Function, ...], steps: list[list[int]],
                 rare: str) -> None:
    if rare not in RARE_QUALITIES:
        raise ValueError(f"rare must be one of {RARE_QUALITIES}, got {rare!r}")
    candidates = [j for j, g in enumerate(funcs) if g.quality == rare]
    fi = int(rng.choice(candidates))
    # Inside the song when possible (not the first chord, which states the key).
    pos = int(rng.integers(1, len(steps))) if len(steps) > 1 else 0
    steps[pos][0] = fi
    f = funcs[fi]
    if f.resolves is not None and pos + 1 < len(steps):
        target = [j for j, g in enumerate(funcs)
                  if g.degree == f.resolves and g.quality == f.resolves_quality]
        if target:
            steps[pos + 1][0] = target[0]


def scale_pitch_classes(tonic: int, mode: str) -> tuple[int, ...]:
    """Pitch classes of the key's scale (natural minor for ``"minor"``)."""
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    return tuple((tonic + s) % 12 for s in scale)
