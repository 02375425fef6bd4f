"""Chord vocabularies: Harte labels <-> class indices, transposition, quality groups.

Two vocabularies, both laid out as BTC lays them out (jayg996/BTC-ISMIR19, ``utils/chords.py``):

``large`` (170 classes)
    ``index = root * 14 + quality`` with roots C, C#, ..., B (pitch classes 0..11; flats and
    other spellings fold onto the same class) and ``QUALITIES`` in BTC's order
    (min, maj, dim, aug, min6, maj6, min7, minmaj7, maj7, 7, dim7, hdim7, sus2, sus4);
    168 = X (any other chord), 169 = N.

``majmin`` (25 classes)
    ``index = root * 2 + (0 major, 1 minor)``, 24 = N; there is no X class. A label is first
    mapped to its ``large`` class (same mapping), whose quality is then folded by its third:
    min, min6, min7, minmaj7, dim, dim7, hdim7 -> minor; maj, maj6, maj7, 7, aug -> major;
    sus2, sus4, X and N -> N. Chords without a third have no majmin class; mir_eval's majmin
    metric leaves such reference frames out of the score, so the fold only shapes training
    targets, and N keeps every frame a valid class (no ignore index threaded through losses).

How a Harte label becomes a ``large`` class (the ``mapping``):

``btc`` (default)
    BTC's rule, so numbers stay comparable with published ones: the label is repaired as BTC
    repairs it (``repair_label``), the bass is ignored, and the quality is the shorthand
    ``mir_eval.chord.split(label, reduce_extended_chords=True)`` returns (C:9 -> C:7,
    C:maj9 -> C:maj7, C:min11 -> C:min7, C:7(#9) -> C:7, E:min(9) -> E:min); any other
    quality (1, 5, a bare interval list such as ``C:(3,5,b7)``) is X. Two corrections:
    ``minmaj7`` keeps its class (mir_eval's reduction turns it into ``min``, so BTC's code
    never produces its own minmaj7 class), and the label ``X`` is X (BTC's code gives it N).
``btc_exact``
    BTC's rule without those corrections (minmaj7 -> min, X -> N), for exact reproduction.
``pitch``
    By pitch content as mir_eval's metrics see it (``mir_eval.chord.encode`` without
    reducing extended chords: root plus the semitone bitmap, bass included, tensions above
    the octave dropped): the quality whose interval set equals the chord's (``C:(3,5,b7)``
    -> C:7, ``C:maj/b7`` -> C:7, ``C:(b3,5)`` -> C:min); otherwise the ``btc`` rule.

A label is valid when, after ``repair_label``, ``mir_eval.chord.encode`` accepts it: that is
what mir_eval's metrics need, and it is the set of labels BTC's code handles without crashing.
Invalid labels raise ``ChordLabelError`` naming the label; callers add the file and line.

>>> vocab = get_vocabulary("large")
>>> vocab.encode("Bb:min7/b7"), vocab.decode(146)
(146, 'A#:min7')
>>> vocab.transpose(vocab.encode("C:maj"), 2) == vocab.encode("D:maj")
True
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import mir_eval.chord
import numpy as np

from chordkd.errors import ChordLabelError, ConfigError

ROOTS: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
QUALITIES: tuple[str, ...] = (
    "min", "maj", "dim", "aug", "min6", "maj6", "min7",
    "minmaj7", "maj7", "7", "dim7", "hdim7", "sus2", "sus4",
)  # fmt: skip
QUALITY_GROUPS: tuple[str, ...] = (
    "maj", "min", "7", "maj7", "min7", "dim", "dim7", "hdim7",
    "aug", "sus2", "sus4", "min6", "maj6", "minmaj7", "N", "X",
)  # fmt: skip
VOCABULARIES: tuple[str, ...] = ("large", "majmin")
MAPPINGS: tuple[str, ...] = ("btc", "btc_exact", "pitch")

_MINOR_THIRD = frozenset({"min", "min6", "min7", "minmaj7", "dim", "dim7", "hdim7"})
_MAJOR_THIRD = frozenset({"maj", "maj6", "maj7", "7", "aug"})
_N_LARGE = 12 * len(QUALITIES) + 1
_X_LARGE = 12 * len(QUALITIES)

# Typos in public annotation sets that BTC's loader repairs (``lab_file_error_modify``).
_BTC_WHOLE_LABEL_REPAIRS = {
    "Emin/4": "E:min/4",
    "A7/3": "A:7/3",
    "Bb7/3": "Bb:7/3",
    "Bb7/5": "Bb:7/5",
}


def repair_label(label: str) -> str:
    """Apply BTC's repairs of known typos in public annotations, in BTC's order.

    ``X:4`` -> ``X:sus4``, ``X:6`` -> ``X:maj6``, ``X:6/2`` -> ``X:maj6/2``, four whole-label
    fixes (``Emin/4``, ``A7/3``, ``Bb7/3``, ``Bb7/5``), and a missing colon before ``min``
    (``Emin7`` -> ``E:min7``). Any other label is returned unchanged.
    """
    if label.endswith(":4"):
        return label[:-2] + ":sus4"
    if label.endswith(":6"):
        return label[:-2] + ":maj6"
    if label.endswith(":6/2"):
        return label[:-4] + ":maj6/2"
    if label in _BTC_WHOLE_LABEL_REPAIRS:
        return _BTC_WHOLE_LABEL_REPAIRS[label]
    if ":" not in label and "min" in label:
        cut = label.find("min")
        return label[:cut] + ":" + label[cut:]
    return label


def validate_label(label: str) -> str:
    """Return ``label`` repaired (``repair_label``) if mir_eval can encode it; else raise.

    Raises ``ChordLabelError`` naming the label.
    """
    return _validated(str(label))


@functools.lru_cache(maxsize=65536)
def _validated(label: str) -> str:
    repaired = repair_label(label)
    try:
        mir_eval.chord.encode(repaired)
    except mir_eval.chord.InvalidChordException as exc:
        seen = f" (read as {repaired!r} after BTC's repairs)" if repaired != label else ""
        raise ChordLabelError(f"invalid chord label {label!r}{seen}: {exc}") from None
    return repaired


# Bitmap (root first) of each quality, for the ``pitch`` mapping.
_QUALITY_BY_BITMAP = {tuple(mir_eval.chord.QUALITIES[q]): i for i, q in enumerate(QUALITIES)}


@functools.lru_cache(maxsize=65536)
def _large_class(label: str, mapping: str) -> int:
    """Class of ``label`` in the 170-class layout under ``mapping``."""
    label = _validated(label)
    if label == mir_eval.chord.NO_CHORD:
        return _N_LARGE
    if label == mir_eval.chord.X_CHORD:
        # BTC's parser gives X root -1, which its class assignment turns into N.
        return _N_LARGE if mapping == "btc_exact" else _X_LARGE
    if mapping == "pitch":
        root, bitmap, _ = mir_eval.chord.encode(label)
        quality = _QUALITY_BY_BITMAP.get(tuple(int(b) for b in bitmap))
        if quality is not None:
            return root * len(QUALITIES) + quality
    root_name, reduced, _, _ = mir_eval.chord.split(label, reduce_extended_chords=True)
    if mapping != "btc_exact" and mir_eval.chord.split(label)[1] == "minmaj7":
        reduced = "minmaj7"
    if reduced not in QUALITIES:
        return _X_LARGE
    root = mir_eval.chord.pitch_class_to_semitone(root_name)
    return root * len(QUALITIES) + QUALITIES.index(reduced)


@dataclass(frozen=True)
class Vocabulary:
    """A chord vocabulary: ``12 * len(qualities)`` rooted classes, then X (if any), then N.

    Rooted classes are ``root * len(qualities) + quality``. Build with ``get_vocabulary``.
    """

    name: str
    mapping: str
    qualities: tuple[str, ...]
    has_x: bool

    @property
    def size(self) -> int:
        return 12 * len(self.qualities) + (2 if self.has_x else 1)

    @property
    def n_index(self) -> int:
        """Class of N (no chord): the last class."""
        return self.size - 1

    @property
    def x_index(self) -> int | None:
        """Class of X (a chord outside the vocabulary), or None (majmin)."""
        return 12 * len(self.qualities) if self.has_x else None

    @functools.cached_property
    def labels(self) -> tuple[str, ...]:
        """Decoded label of every class, in class order: ``[size]``."""
        return tuple(self.decode(i) for i in range(self.size))

    @functools.cached_property
    def _from_large(self) -> np.ndarray:
        # int64 [170]: large class -> class in this vocabulary.
        if self.name == "large":
            return np.arange(_N_LARGE + 1, dtype=np.int64)
        table = np.full(_N_LARGE + 1, self.n_index, dtype=np.int64)
        for root in range(12):
            for q, quality in enumerate(QUALITIES):
                if quality in _MAJOR_THIRD:
                    table[root * len(QUALITIES) + q] = root * 2
                elif quality in _MINOR_THIRD:
                    table[root * len(QUALITIES) + q] = root * 2 + 1
        return table

    def encode(self, harte_label: str) -> int:
        """Class index of a Harte label (``"Bb:min7/b7"``); raises ``ChordLabelError``."""
        return int(self._from_large[_large_class(str(harte_label), self.mapping)])

    def encode_many(self, labels: Iterable[str]) -> np.ndarray:
        """Class indices of many labels: int64 ``[len(labels)]``."""
        large = [_large_class(str(label), self.mapping) for label in labels]
        return self._from_large[np.asarray(large, dtype=np.int64)]

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(
                f"class {index} is outside vocabulary {self.name!r} (0..{self.size - 1})"
            )
        return index

    def decode(self, index: int) -> str:
        """Harte label of a class, as mir_eval accepts it: ``"C#:maj7"``, ``"N"``, ``"X"``."""
        index = self._check(index)
        if index == self.n_index:
            return mir_eval.chord.NO_CHORD
        if index == self.x_index:
            return mir_eval.chord.X_CHORD
        root, quality = divmod(index, len(self.qualities))
        return f"{ROOTS[root]}:{self.qualities[quality]}"

    def root_of(self, index: int) -> int | None:
        """Root pitch class (0 = C .. 11 = B) of a class; None for N and X."""
        index = self._check(index)
        if index >= 12 * len(self.qualities):
            return None
        return index // len(self.qualities)

    def quality_group(self, index: int) -> str:
        """Quality group (one of ``QUALITY_GROUPS``) of a class."""
        index = self._check(index)
        if index == self.n_index:
            return "N"
        if index == self.x_index:
            return "X"
        return self.qualities[index % len(self.qualities)]

    def transpose(self, index: int, semitones: int) -> int:
        """The class with its root moved by ``semitones`` (mod 12), same quality; N, X fixed."""
        index = self._check(index)
        if index >= 12 * len(self.qualities):
            return index
        root, quality = divmod(index, len(self.qualities))
        return ((root + semitones) % 12) * len(self.qualities) + quality

    def transpose_index_map(self, semitones: int) -> np.ndarray:
        """int64 ``[size]`` with ``map[i] = transpose(i, semitones)``: a permutation.

        Transposes a class distribution ``old`` of shape ``[..., size]`` with
        ``new[..., map] = old`` (or ``new = old[..., argsort(map)]``).
        """
        n_q = len(self.qualities)
        index = np.arange(self.size, dtype=np.int64)
        rooted = index < 12 * n_q
        moved = ((index // n_q + semitones) % 12) * n_q + index % n_q
        return np.where(rooted, moved, index)


_MAJMIN_QUALITIES = ("maj", "min")


@functools.cache
def get_vocabulary(name: str = "large", mapping: str = "btc") -> Vocabulary:
    """The vocabulary ``name`` ("large" or "majmin") under ``mapping`` (see module docstring).

    Instances are cached: equal arguments give the same object.
    """
    if name not in VOCABULARIES:
        raise ConfigError(f"vocabulary {name!r} is not one of {', '.join(VOCABULARIES)}")
    if mapping not in MAPPINGS:
        raise ConfigError(f"chord mapping {mapping!r} is not one of {', '.join(MAPPINGS)}")
    if name == "large":
        return Vocabulary(name, mapping, QUALITIES, has_x=True)
    return Vocabulary(name, mapping, _MAJMIN_QUALITIES, has_x=False)


def quality_group_of_label(harte_label: str, mapping: str = "btc") -> str:
    """Quality group (one of ``QUALITY_GROUPS``) of a reference label, via the large vocabulary."""
    vocab = get_vocabulary("large", mapping)
    return vocab.quality_group(vocab.encode(harte_label))
