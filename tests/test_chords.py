"""Chord vocabularies: BTC's class layout and label mapping, transposition, quality groups."""

from __future__ import annotations

import re

import mir_eval.chord
import numpy as np
import pytest

from chordkd.chords import (
    MAPPINGS,
    QUALITIES,
    QUALITY_GROUPS,
    ROOTS,
    get_vocabulary,
    quality_group_of_label,
    repair_label,
)
from chordkd.errors import ChordLabelError, ConfigError

ALL_VOCABULARIES = [(name, mapping) for name in ("large", "majmin") for mapping in MAPPINGS]

# Harte label -> class that BTC's own code assigns (jayg996/BTC-ISMIR19, utils/chords.py,
# get_converted_chord_voca): labels repaired by lab_file_error_modify, root from its pitch
# parser (spelling folded mod 12), quality from mir_eval.chord.split(label,
# reduce_extended_chords=True), class = root * 14 + offset in convert_to_id_voca (min 0, maj 1,
# dim 2, aug 3, min6 4, maj6 5, min7 6, minmaj7 7, maj7 8, 7 9, dim7 10, hdim7 11, sus2 12,
# sus4 13), any other quality 168, root -1 (N and X) 169. Values worked out by hand from that
# code; roots C0 C#1 D2 D#3 E4 F5 F#6 G7 G#8 A9 A#10 B11.
BTC_TABLE = [
    ("C", 1),
    ("C:maj", 1),
    ("C:min", 0),
    ("C:maj/3", 1),  # bass ignored
    ("C:maj7/7", 8),
    ("C:min(*5)", 0),
    ("C:maj(*3)", 1),  # omissions ignored: the shorthand decides
    ("C:maj(9)", 1),
    ("C:dim/b3", 2),
    ("C:min6", 4),
    ("C:hdim7", 11),
    ("C#:maj7", 1 * 14 + 8),
    ("Db:maj", 1 * 14 + 1),
    ("D:min7", 2 * 14 + 6),
    ("D:sus2", 2 * 14 + 12),
    ("D:7(b9)", 2 * 14 + 9),
    ("D#:dim", 3 * 14 + 2),
    ("Eb:aug", 3 * 14 + 3),
    ("E:7", 4 * 14 + 9),
    ("E:min(9)", 4 * 14 + 0),
    ("E:min7/5", 4 * 14 + 6),
    ("F:maj/5", 5 * 14 + 1),
    ("F#:hdim7", 6 * 14 + 11),
    ("Gb:maj", 6 * 14 + 1),
    ("G:7/3", 7 * 14 + 9),
    ("G:min/b3", 7 * 14 + 0),
    ("G:sus4(b7,9)", 7 * 14 + 13),
    ("G#:min7", 8 * 14 + 6),
    ("Ab:maj6", 8 * 14 + 5),
    ("Ab:min/b3", 8 * 14 + 0),
    ("A:maj", 9 * 14 + 1),
    ("A:dim7", 9 * 14 + 10),
    ("A:sus4(b7)", 9 * 14 + 13),
    ("A#:7", 10 * 14 + 9),
    ("Bb:min7/b7", 10 * 14 + 6),
    ("B:min", 11 * 14 + 0),
    ("B:hdim7/b7", 11 * 14 + 11),
    # spellings fold onto pitch classes
    ("Cb:maj", 11 * 14 + 1),
    ("E#:min", 5 * 14 + 0),
    ("Fb", 4 * 14 + 1),
    ("B#:maj", 0 * 14 + 1),
    ("Abb:maj", 7 * 14 + 1),
    ("C##:min", 2 * 14 + 0),
    # extended chords reduce to their tetrad (mir_eval's reduce_extended_chords)
    ("C:9", 9),
    ("C:maj9", 8),
    ("C:min9", 6),
    ("C:7(#9)", 9),
    ("C:11", 9),
    ("C:13", 9),
    ("C:min11", 6),
    ("C:min13", 6),
    ("C:maj13", 8),
    ("C:aug(b7)", 3),
    # BTC's label repairs
    ("C:4", 13),
    ("C:6", 5),
    ("F:6/2", 5 * 14 + 5),
    ("Emin/4", 4 * 14 + 0),
    ("A7/3", 9 * 14 + 9),
    ("Bb7/3", 10 * 14 + 9),
    ("Bb7/5", 10 * 14 + 9),
    ("Dmin", 2 * 14 + 0),
    ("F#min7", 6 * 14 + 6),
    # out-of-vocabulary qualities and bare interval lists are X
    ("C:(1,5)", 168),
    ("C:5", 168),
    ("C:1", 168),
    ("C:(3,5)", 168),
    ("C:(b3,5)", 168),
    ("G:(3,5,b7,9)", 168),
    ("N", 169),
    # the two labels the btc mapping corrects
    ("X", 169),
    ("Db:minmaj7/5", 1 * 14 + 0),
    ("C:minmaj7", 0),
]
BTC_CORRECTED = {"X", "Db:minmaj7/5", "C:minmaj7"}


def test_large_vocabulary_has_btc_layout():
    vocab = get_vocabulary("large")
    assert (vocab.size, vocab.x_index, vocab.n_index) == (170, 168, 169)
    assert vocab.decode(0) == "C:min" and vocab.decode(1) == "C:maj"
    assert vocab.decode(10 * 14 + 9) == "A#:7"
    assert [vocab.decode(q).split(":")[1] for q in range(14)] == list(QUALITIES)


def test_majmin_vocabulary_has_btc_layout():
    vocab = get_vocabulary("majmin")
    assert (vocab.size, vocab.x_index, vocab.n_index) == (25, None, 24)
    assert vocab.labels[:4] == ("C:maj", "C:min", "C#:maj", "C#:min")
    assert vocab.labels[-1] == "N"


def test_get_vocabulary_caches_instances():
    assert get_vocabulary("large", "pitch") is get_vocabulary("large", "pitch")


@pytest.mark.parametrize("name, mapping", [("huge", "btc"), ("large", "nearest")])
def test_unknown_vocabulary_or_mapping_is_refused(name, mapping):
    with pytest.raises(ConfigError, match="huge|nearest"):
        get_vocabulary(name, mapping)


@pytest.mark.parametrize("name, mapping", [v for v in ALL_VOCABULARIES if v[1] != "btc_exact"])
def test_every_class_round_trips_through_its_label(name, mapping):
    vocab = get_vocabulary(name, mapping)
    for index in range(vocab.size):
        assert vocab.encode(vocab.decode(index)) == index


@pytest.mark.parametrize("name", ["large", "majmin"])
def test_btc_exact_round_trips_all_but_the_classes_btc_cannot_reach_by_name(name):
    # Uncorrected, minmaj7 labels become min and the label X becomes N: exactly the
    # minmaj7 classes and X fail to round-trip, every other class does.
    vocab = get_vocabulary(name, "btc_exact")
    failing = [i for i in range(vocab.size) if vocab.encode(vocab.decode(i)) != i]
    expected = [i for i in range(vocab.size) if vocab.quality_group(i) in ("minmaj7", "X")]
    assert failing == expected


@pytest.mark.parametrize("name, mapping", ALL_VOCABULARIES)
def test_decoded_labels_are_accepted_by_mir_eval(name, mapping):
    for label in get_vocabulary(name, mapping).labels:
        mir_eval.chord.encode(label)


@pytest.mark.parametrize("label, expected", BTC_TABLE)
def test_btc_exact_matches_btc_code(label, expected):
    assert get_vocabulary("large", "btc_exact").encode(label) == expected


@pytest.mark.parametrize("label, expected", [r for r in BTC_TABLE if r[0] not in BTC_CORRECTED])
def test_btc_matches_btc_code_outside_its_corrections(label, expected):
    assert get_vocabulary("large", "btc").encode(label) == expected


def test_minmaj7_keeps_its_class():
    vocab = get_vocabulary("large", "btc")
    assert vocab.encode("C:minmaj7") == 7
    assert vocab.encode("Db:minmaj7/5") == 1 * 14 + 7
    assert vocab.encode("A:minmaj7(9)") == 9 * 14 + 7


def test_btc_exact_reduces_minmaj7_to_min():
    vocab = get_vocabulary("large", "btc_exact")
    assert vocab.decode(vocab.encode("Db:minmaj7/5")) == "C#:min"


def test_x_label_is_x_in_btc_and_n_in_btc_exact():
    assert get_vocabulary("large", "btc").encode("X") == 168
    assert get_vocabulary("large", "btc_exact").encode("X") == 169


@pytest.mark.parametrize(
    "label, expected",
    [
        ("C:(3,5,b7)", "C:7"),
        ("C:(b3,5)", "C:min"),
        ("C:(b3,b5,bb7)", "C:dim7"),
        ("C:maj/b7", "C:7"),  # the bass is part of the pitch content
        ("G:(3,5,b7,9)", "G:7"),  # tensions above the octave are dropped, as mir_eval does
        ("Eb:minmaj7", "D#:minmaj7"),
        ("C:sus4(b7)", "C:sus4"),  # no exact match: the btc rule
        ("C:(1,5)", "X"),
        ("X", "X"),
    ],
)
def test_pitch_mapping_matches_interval_sets(label, expected):
    vocab = get_vocabulary("large", "pitch")
    assert vocab.decode(vocab.encode(label)) == expected


@pytest.mark.parametrize(
    "label, expected",
    [
        ("C:maj", "C:maj"),
        ("C:min", "C:min"),
        ("A:min7", "A:min"),
        ("Bb:7", "A#:maj"),
        ("C:maj7/3", "C:maj"),
        ("C:aug", "C:maj"),
        ("C:dim", "C:min"),
        ("C:hdim7", "C:min"),
        ("C:minmaj7", "C:min"),
        ("C:maj6", "C:maj"),
        ("C:sus4", "N"),
        ("C:sus2", "N"),
        ("C:5", "N"),
        ("C:(3,5,b7)", "N"),
        ("X", "N"),
        ("N", "N"),
    ],
)
def test_majmin_folds_qualities_by_their_third(label, expected):
    vocab = get_vocabulary("majmin")
    assert vocab.decode(vocab.encode(label)) == expected


def test_majmin_pitch_mapping_folds_interval_lists_by_their_third():
    vocab = get_vocabulary("majmin", "pitch")
    assert vocab.decode(vocab.encode("C:(3,5,b7)")) == "C:maj"


@pytest.mark.parametrize("label", ["Csus7/G", "H:maj", "C:maj7sus", "C:aug7", "", "c:maj", "C:b9"])
def test_labels_mir_eval_cannot_encode_raise_naming_the_label(label):
    with pytest.raises(ChordLabelError, match=re.escape(repr(label))):
        get_vocabulary().encode(label)


def test_repair_label_leaves_valid_labels_alone():
    for label in ["C:min6", "C:maj6", "C:sus4", "C:maj/4", "C:7/4", "N", "X"]:
        assert repair_label(label) == label


def test_encode_many_matches_encode():
    vocab = get_vocabulary()
    labels = [label for label, _ in BTC_TABLE]
    encoded = vocab.encode_many(labels)
    assert encoded.dtype == np.int64 and encoded.shape == (len(labels),)
    assert encoded.tolist() == [vocab.encode(label) for label in labels]


@pytest.mark.parametrize("name", ["large", "majmin"])
def test_transpose_agrees_with_mir_eval_root_arithmetic(name):
    vocab = get_vocabulary(name)
    for index in range(vocab.size):
        label = vocab.decode(index)
        if label in ("N", "X"):
            continue
        root, bitmap, _ = mir_eval.chord.encode(label)
        for shift in range(-12, 13):
            moved_root, moved_bitmap, _ = mir_eval.chord.encode(
                vocab.decode(vocab.transpose(index, shift))
            )
            assert moved_root == (root + shift) % 12
            assert (moved_bitmap == bitmap).all()


@pytest.mark.parametrize("name", ["large", "majmin"])
def test_transpose_keeps_n_and_x(name):
    vocab = get_vocabulary(name)
    fixed = [vocab.n_index] + ([vocab.x_index] if vocab.x_index is not None else [])
    for shift in range(-12, 13):
        assert [vocab.transpose(i, shift) for i in fixed] == fixed


@pytest.mark.parametrize("name", ["large", "majmin"])
def test_transpose_index_map_is_the_transpose_permutation(name):
    vocab = get_vocabulary(name)
    for shift in range(-12, 13):
        mapping = vocab.transpose_index_map(shift)
        assert mapping.dtype == np.int64 and mapping.shape == (vocab.size,)
        assert sorted(mapping.tolist()) == list(range(vocab.size))
        assert mapping.tolist() == [vocab.transpose(i, shift) for i in range(vocab.size)]


def test_transpose_index_map_rolls_a_distribution():
    vocab = get_vocabulary()
    old = np.zeros((3, vocab.size))
    old[0, vocab.encode("C:maj")] = 1
    old[1, vocab.encode("A:min7")] = 1
    old[2, vocab.n_index] = 1
    new = np.empty_like(old)
    new[..., vocab.transpose_index_map(3)] = old
    assert [vocab.decode(i) for i in new.argmax(-1)] == ["D#:maj", "C:min7", "N"]


def test_root_of_gives_pitch_class_or_none():
    vocab = get_vocabulary()
    assert vocab.root_of(vocab.encode("Bb:min7")) == 10
    assert vocab.root_of(vocab.x_index) is None and vocab.root_of(vocab.n_index) is None
    assert get_vocabulary("majmin").root_of(23) == 11


def test_quality_group_of_every_class_is_a_known_group():
    vocab = get_vocabulary()
    groups = [vocab.quality_group(i) for i in range(vocab.size)]
    assert set(groups) == set(QUALITY_GROUPS)
    assert groups[:14] == list(QUALITIES)
    assert groups[168:] == ["X", "N"]


@pytest.mark.parametrize(
    "label, group",
    [("C:9", "7"), ("F#:hdim7", "hdim7"), ("C:5", "X"), ("N", "N"), ("C:minmaj7", "minmaj7")],
)
def test_quality_group_of_label_uses_the_mapping(label, group):
    assert quality_group_of_label(label) == group


def test_quality_group_of_label_under_btc_exact():
    assert quality_group_of_label("C:minmaj7", mapping="btc_exact") == "min"


def test_out_of_range_class_is_refused():
    with pytest.raises(IndexError, match="170"):
        get_vocabulary().decode(170)


def test_roots_are_sharp_spelled_pitch_classes():
    assert [mir_eval.chord.pitch_class_to_semitone(r) for r in ROOTS] == list(range(12))
