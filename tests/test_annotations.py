"""Chord annotation files (.lab, JAMS) and the frame <-> interval conversions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chordkd.annotations import (
    frames_to_intervals,
    intervals_to_frames,
    read_annotation,
    read_jams,
    read_lab,
    write_jams,
    write_lab,
)
from chordkd.chords import get_vocabulary
from chordkd.errors import AnnotationError, ChordLabelError

DT = 2048 / 22050


def lab(tmp_path, text, name="song.lab"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_lab_accepts_tabs_spaces_comments_and_blank_lines(tmp_path):
    path = lab(tmp_path, "# header\n0.0\t1.5\tC:maj\n\n1.5  3.25   A:min7/b7\n   \n")
    intervals, labels = read_lab(path)
    assert intervals.dtype == np.float64
    np.testing.assert_array_equal(intervals, [[0.0, 1.5], [1.5, 3.25]])
    assert labels == ["C:maj", "A:min7/b7"]


def test_gaps_and_leading_silence_become_n(tmp_path):
    intervals, labels = read_lab(lab(tmp_path, "0.5 1 C\n2 3 G\n"))
    np.testing.assert_array_equal(intervals, [[0, 0.5], [0.5, 1], [1, 2], [2, 3]])
    assert labels == ["N", "C", "N", "G"]


def test_boundaries_within_a_millisecond_are_snapped(tmp_path):
    intervals, labels = read_lab(lab(tmp_path, "0.0004 1.0003 C\n1.0 2 G\n2.0006 3 D\n"))
    np.testing.assert_array_equal(intervals, [[0, 1.0], [1.0, 2.0006], [2.0006, 3]])
    assert labels == ["C", "G", "D"]


def test_zero_length_segment_is_dropped_with_a_warning_naming_the_line(tmp_path):
    path = lab(tmp_path, "0 1 C\n1 1 F\n1 2 G\n")
    with pytest.warns(UserWarning, match=f"{path}:2: "):
        intervals, labels = read_lab(path)
    np.testing.assert_array_equal(intervals, [[0, 1], [1, 2]])
    assert labels == ["C", "G"]


def test_btc_label_repairs_are_applied_on_reading(tmp_path):
    _, labels = read_lab(lab(tmp_path, "0 1 C:4\n1 2 D:6\n2 3 Emin7\n"))
    assert labels == ["C:sus4", "D:maj6", "E:min7"]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("0 1 C\n2 3 G\n1 1.5 D\n", 3, "not sorted"),
        ("0 2 C\n1 3 G\n", 2, "overlaps"),
        ("0 1 C\n1 2 G\n# note\n-1 3 D\n", 4, "negative"),
        ("0 1 C\n1 nan G\n", 2, "not finite"),
        ("0 1 C\n1 inf G\n", 2, "not finite"),
        ("0 1 C\n1 2 Csus7/G\n", 2, "invalid chord label 'Csus7/G'"),
        ("0 1 C\n1 2\n", 2, "expected 3 fields"),
        ("0 1 C\n1 2 G maj\n", 2, "expected 3 fields"),
        ("0 1 C\none 2 G\n", 2, "not a number"),
        ("0 1 C\n2 1 G\n", 2, "before start"),
    ],
    ids=[
        "unsorted",
        "overlap",
        "negative",
        "nan",
        "inf",
        "unparseable-label",
        "too-few-fields",
        "too-many-fields",
        "non-numeric",
        "end-before-start",
    ],
)
def test_bad_lab_raises_naming_file_and_line(tmp_path, text, line, problem):
    path = lab(tmp_path, text)
    with pytest.raises(AnnotationError) as err:
        read_lab(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert problem in str(err.value)


def test_overlap_message_names_the_previous_line(tmp_path):
    path = lab(tmp_path, "0 1 C\n# comment\n1 3 G\n2 4 D\n")
    with pytest.raises(AnnotationError, match=f"^{path}:4: .*{path}:3"):
        read_lab(path)


def test_overlap_beyond_a_millisecond_is_refused(tmp_path):
    with pytest.raises(AnnotationError, match="overlaps"):
        read_lab(lab(tmp_path, "0 1.002 C\n1.0 2 G\n"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_lab_raises_naming_the_file(tmp_path, text):
    path = lab(tmp_path, text)
    with pytest.raises(AnnotationError, match=f"^{path}: .*empty"):
        read_lab(path)


def test_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(AnnotationError, match="nope.lab"):
        read_lab(tmp_path / "nope.lab")


def test_lab_round_trips(tmp_path):
    intervals = np.array([[0.0, 0.5], [0.5, 2.123456], [2.123456, 7.0]])
    labels = ["N", "Bb:min7/b7", "F#:hdim7"]
    path = tmp_path / "out" / "song.lab"
    write_lab(path, intervals, labels)
    assert path.read_text().splitlines()[1] == "0.500000\t2.123456\tBb:min7/b7"
    read_intervals, read_labels = read_lab(path)
    np.testing.assert_array_equal(read_intervals, intervals)
    assert read_labels == labels


def test_write_lab_refuses_labels_with_whitespace(tmp_path):
    with pytest.raises(AnnotationError, match="whitespace"):
        write_lab(tmp_path / "x.lab", [[0, 1]], ["C maj"])


def test_jams_round_trips(tmp_path):
    intervals = np.array([[0.0, 1.25], [1.25, 2.5], [2.5, 4.0]])
    labels = ["C:maj7", "A:min(9)", "G:7/3"]
    path = tmp_path / "song.jams"
    write_jams(path, intervals, labels, duration=4.5, title="t", artist="a")
    read_intervals, read_labels = read_jams(path)
    np.testing.assert_allclose(read_intervals, intervals, atol=1e-9)
    assert read_labels == labels
    assert json.loads(path.read_text())["file_metadata"]["duration"] == 4.5


def test_jams_reader_accepts_the_chord_harte_namespace(tmp_path):
    import jams

    jam = jams.JAMS()
    jam.file_metadata.duration = 3.0
    annotation = jams.Annotation(namespace="chord_harte", time=0, duration=3.0)
    annotation.append(time=1.0, duration=2.0, value="D:min", confidence=None)
    jam.annotations.append(annotation)
    path = tmp_path / "harte.jams"
    jam.save(str(path))
    intervals, labels = read_jams(path)
    np.testing.assert_allclose(intervals, [[0, 1], [1, 3]])
    assert labels == ["N", "D:min"]


def test_jams_without_chords_raises_naming_the_file(tmp_path):
    path = tmp_path / "empty.jams"
    path.write_text('{"annotations": [], "file_metadata": {"duration": 1.0}, "sandbox": {}}')
    with pytest.raises(AnnotationError, match=f"^{path}: no chord annotation"):
        read_jams(path)


def test_bad_jams_label_raises_naming_the_observation(tmp_path):
    path = tmp_path / "bad.jams"
    write_jams(path, [[0, 1], [1, 2]], ["C", "D"], duration=2)
    path.write_text(path.read_text().replace('"D"', '"Dsus7"'))
    with pytest.raises(AnnotationError, match=f"^{path}: observation 1: .*Dsus7"):
        read_jams(path)


def test_read_annotation_dispatches_on_suffix(tmp_path):
    write_lab(tmp_path / "a.txt", [[0, 1]], ["C"])
    write_jams(tmp_path / "a.jams", [[0, 1]], ["D"], duration=1)
    assert read_annotation(tmp_path / "a.txt")[1] == ["C"]
    assert read_annotation(tmp_path / "a.jams")[1] == ["D"]
    with pytest.raises(AnnotationError, match="suffix"):
        read_annotation(tmp_path / "a.csv")


def test_frames_take_the_label_at_their_centre():
    vocab = get_vocabulary()
    # frame centres: 0, DT, 2 DT, ...; a boundary exactly on a centre belongs to the later one
    intervals = np.array([[0.0, 2 * DT], [2 * DT, 2.5 * DT], [3.5 * DT, 5 * DT]])
    classes = intervals_to_frames(intervals, ["C", "D:min", "E:7"], vocab, n_frames=7)
    expected = ["C:maj", "C:maj", "D:min", "N", "E:7", "N", "N"]
    assert classes.dtype == np.int64
    assert [vocab.decode(c) for c in classes] == expected


def test_frames_without_intervals_are_n():
    vocab = get_vocabulary("majmin")
    classes = intervals_to_frames(np.zeros((0, 2)), [], vocab, n_frames=4)
    assert classes.tolist() == [vocab.n_index] * 4


def test_intervals_to_frames_names_an_unknown_label():
    with pytest.raises(ChordLabelError, match="Csus7"):
        intervals_to_frames([[0, 1]], ["Csus7"], get_vocabulary(), n_frames=3)


def test_frames_to_intervals_merges_runs_and_clips_to_duration():
    vocab = get_vocabulary("majmin")
    classes = np.array([24, 0, 0, 0, 19, 19])
    intervals, labels = frames_to_intervals(classes, vocab, duration=5 * DT)
    np.testing.assert_allclose(intervals, [[0, 0.5 * DT], [0.5 * DT, 3.5 * DT], [3.5 * DT, 5 * DT]])
    assert labels == ["N", "C:maj", "A:min"]


def test_frames_to_intervals_ends_at_the_last_frame_by_default():
    intervals, _ = frames_to_intervals(np.array([1, 1, 1]), get_vocabulary())
    np.testing.assert_allclose(intervals, [[0, 2.5 * DT]])


def test_frames_and_intervals_agree_up_to_frame_quantisation():
    vocab = get_vocabulary()
    rng = np.random.default_rng(0)
    bounds = np.concatenate([[0.0], np.cumsum(rng.uniform(3 * DT, 20 * DT, size=40))])
    intervals = np.stack([bounds[:-1], bounds[1:]], axis=1)
    labels = [str(label) for label in rng.choice(vocab.labels, size=40)]
    n_frames = int(bounds[-1] / DT) + 1
    frames = intervals_to_frames(intervals, labels, vocab, n_frames)
    decoded, decoded_labels = frames_to_intervals(frames, vocab)
    # the same frames again, and every reference boundary moved by at most half a frame
    assert intervals_to_frames(decoded, decoded_labels, vocab, n_frames).tolist() == frames.tolist()
    centres = np.arange(n_frames) * DT
    segment = np.searchsorted(bounds, centres, side="right") - 1
    assert [vocab.decode(f) for f in frames] == [labels[s] if s < 40 else "N" for s in segment]
    inner = decoded[1:, 0]
    assert np.abs(inner[:, None] - bounds[None, 1:-1]).min(axis=1).max() <= DT / 2 + 1e-9


def test_intervals_to_frames_refuses_overlapping_intervals():
    with pytest.raises(AnnotationError, match="non-overlapping"):
        intervals_to_frames([[0, 2], [1, 3]], ["C", "D"], get_vocabulary(), n_frames=3)
