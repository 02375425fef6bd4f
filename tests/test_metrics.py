"""mir_eval WCSR per song and pooled, per-quality recall and ACQA."""

from __future__ import annotations

import math

import mir_eval
import numpy as np
import pytest

from chordkd.annotations import intervals_to_frames, read_lab
from chordkd.chords import get_vocabulary
from chordkd.errors import AnnotationError, ChordLabelError
from chordkd.evaluation.agreement import agreement
from chordkd.evaluation.metrics import (
    METRICS,
    SEGMENTATION,
    SongScore,
    aggregate,
    aggregate_segmentation,
    score_song,
)
from chordkd.evaluation.quality import (
    CONFUSION_COLUMNS,
    PAPER_GROUPS,
    acqa,
    count_qualities,
    quality_confusion,
    quality_recall,
)

REF_LAB = """0.0 2.0 C:maj
2.0 3.5 A:min7
3.5 5.0 F:maj/3
5.0 6.0 G:sus4
6.0 7.25 G:7
7.25 8.0 N
"""
EST_LAB = """0.0 0.5 N
0.5 2.5 C:maj7
2.5 4.0 A:min
4.0 6.1 F:maj
6.1 9.0 G:7
"""


def _lab(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return read_lab(path)


def test_song_scores_equal_mir_eval_evaluate_on_lab_files(tmp_path):
    ref = _lab(tmp_path, "ref.lab", REF_LAB)
    est = _lab(tmp_path, "est.lab", EST_LAB)
    expected = mir_eval.chord.evaluate(*ref, *est)
    got = score_song(*ref, *est).accuracy
    for metric in METRICS:
        assert got[metric] == pytest.approx(expected[metric], abs=1e-12), metric


def test_song_score_keeps_seconds_of_the_reference_span(tmp_path):
    ref = _lab(tmp_path, "ref.lab", REF_LAB)
    est = _lab(tmp_path, "est.lab", EST_LAB)
    score = score_song(*ref, *est)
    assert score.duration == pytest.approx(8.0)
    # Nothing is X, so all 8 s are comparable for root. Roots agree on 0.5-2.0 (C), 2.5-3.5 (A),
    # 4.0-5.0 (F) and 6.1-7.25 (G): 1.5 + 1.0 + 1.0 + 1.15 = 4.65 s.
    assert score.comparable["root"] == pytest.approx(8.0)
    assert score.correct["root"] == pytest.approx(4.65)


def test_estimate_is_padded_with_n_and_cropped_to_the_reference():
    ref_i, ref_l = np.array([[1.0, 3.0]]), ["N"]
    # The estimate says nothing for 1-2 s (so N there) and runs past the reference end.
    score = score_song(ref_i, ref_l, np.array([[2.0, 10.0]]), ["C:maj"])
    assert score.accuracy["root"] == pytest.approx(0.5)
    assert score.comparable["root"] == pytest.approx(2.0)


def test_empty_estimate_means_no_chord_everywhere():
    score = score_song(np.array([[0.0, 4.0]]), ["N"], np.zeros((0, 2)), [])
    assert score.accuracy["majmin"] == 1.0


def test_x_reference_is_excluded_from_every_metric():
    ref_i = np.array([[0.0, 1.0], [1.0, 4.0]])
    score = score_song(ref_i, ["C:maj", "X"], ref_i, ["C:maj", "D:min"])
    for metric in METRICS:
        assert score.comparable[metric] == pytest.approx(1.0), metric
        assert score.accuracy[metric] == 1.0, metric


def test_metric_with_nothing_comparable_is_nan_not_zero():
    # majmin (and sevenths) leave sus4 references out: a song of only C:sus4 has no
    # comparable majmin duration. mir_eval would report 0 here.
    ref_i = np.array([[0.0, 2.0]])
    score = score_song(ref_i, ["C:sus4"], ref_i, ["C:maj"])
    assert math.isnan(score.accuracy["majmin"])
    assert score.accuracy["root"] == 1.0
    with pytest.warns(RuntimeWarning, match="no comparable reference duration"):
        pooled = aggregate([score])
    assert math.isnan(pooled["majmin"])
    assert pooled["root"] == 1.0


def test_aggregate_is_duration_weighted_over_songs():
    short = score_song(np.array([[0.0, 2.0]]), ["C:maj"], np.array([[0.0, 2.0]]), ["D:maj"])
    long = score_song(
        np.array([[0.0, 6.0]]), ["A:min"], np.array([[0.0, 3.0], [3.0, 6.0]]), ["A:min", "E:min"]
    )
    pooled = aggregate([short, long])
    # root: (0 + 3) / (2 + 6); the mean of per-song accuracies would be 0.25.
    assert pooled["root"] == pytest.approx(3 / 8)


def test_song_score_round_trips_through_a_dict():
    score = score_song(np.array([[0.0, 2.0]]), ["C:maj"], np.array([[0.0, 1.0]]), ["C:min"])
    again = SongScore.from_dict(score.to_dict())
    assert again == score


def test_invalid_estimate_label_is_named():
    with pytest.raises(ChordLabelError, match=r"estimate label 'C:blah' \(interval 1, at 1 s\)"):
        score_song(
            np.array([[0.0, 2.0]]), ["C:maj"], np.array([[0.0, 1.0], [1.0, 2.0]]), ["N", "C:blah"]
        )


def test_zero_length_reference_interval_is_named():
    with pytest.raises(AnnotationError, match="reference interval 1"):
        score_song(np.array([[0.0, 1.0], [1.0, 1.0]]), ["C:maj", "D:maj"], np.zeros((0, 2)), [])


def test_label_count_must_match_interval_count():
    with pytest.raises(AnnotationError, match="2 intervals but 1 labels"):
        score_song(np.array([[0.0, 1.0], [1.0, 2.0]]), ["C:maj"], np.zeros((0, 2)), [])


# --------------------------------------------------------------------------------------------
# segmentation


def test_segmentation_equals_mir_eval_evaluate_on_lab_files(tmp_path):
    ref = _lab(tmp_path, "ref.lab", REF_LAB)
    est = _lab(tmp_path, "est.lab", EST_LAB)
    expected = mir_eval.chord.evaluate(*ref, *est)
    got = score_song(*ref, *est).segmentation
    for key in SEGMENTATION:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_an_estimate_that_splits_a_reference_chord_is_over_segmented_only():
    # one 4 s reference chord, estimated as 1 s + 3 s: the best-matching estimated segment
    # covers 3 of the 4 s (overseg 0.75); each estimated segment lies inside one reference
    # segment (underseg 1)
    score = score_song(np.array([[0.0, 4.0]]), ["C:maj"],
                       np.array([[0.0, 1.0], [1.0, 4.0]]), ["C:maj", "G:maj"])
    assert score.segmentation == pytest.approx({"overseg": 0.75, "underseg": 1.0, "seg": 0.75})


def test_runs_of_one_label_are_merged_before_segmentation():
    score = score_song(np.array([[0.0, 4.0]]), ["C:maj"],
                       np.array([[0.0, 1.0], [1.0, 4.0]]), ["C:maj", "C:maj"])
    assert score.segmentation["overseg"] == 1.0


def test_segmentation_pools_songs_by_duration():
    a = score_song(np.array([[0.0, 4.0]]), ["C:maj"],
                   np.array([[0.0, 1.0], [1.0, 4.0]]), ["C:maj", "G:maj"])  # 4 s, overseg 0.75
    b = score_song(np.array([[0.0, 12.0]]), ["C:maj"], np.array([[0.0, 12.0]]), ["C:maj"])
    assert aggregate_segmentation([a, b])["overseg"] == pytest.approx((4 * 0.75 + 12) / 16)
    assert SongScore.from_dict(a.to_dict()).segmentation == a.segmentation


# --------------------------------------------------------------------------------------------
# agreement with a teacher


def test_identical_estimates_agree_completely():
    est = (np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 3.0]]), ["N", "C:maj", "A:min7"])
    result = agreement({"s": est}, {"s": est})
    assert result.values == {"agree_majmin": 1.0, "agree_mirex": 1.0}
    assert result.n_songs == 1


def test_agreement_is_duration_weighted_and_skips_chords_outside_the_level():
    teacher = (np.array([[0.0, 2.0], [2.0, 4.0]]), ["C:maj", "G:sus4"])
    model = (np.array([[0.0, 1.0], [1.0, 4.0]]), ["C:maj", "C:min"])
    values = agreement({"s": teacher}, {"s": model}).values
    # majmin: G:sus4 is outside its gamut, so 1 of the 2 comparable seconds agree
    assert values["agree_majmin"] == pytest.approx(0.5)
    # mirex compares every chord; C:min shares no 3 notes with C:maj or G:sus4: 1 of 4 s
    assert values["agree_mirex"] == pytest.approx(0.25)


# --------------------------------------------------------------------------------------------
# per-quality recall

LARGE = get_vocabulary("large")


def test_quality_recall_on_a_hand_made_frame_sequence():
    ref = ["C:maj", "C:maj", "C:maj", "C:maj", "A:min", "A:min", "G:7", "N", "X"]
    est = ["C:maj", "C:maj", "G:maj", "C:maj7", "A:min", "C:maj", "G:7", "C:maj", "C:maj"]
    recall = quality_recall(ref, est, LARGE)
    assert recall["Major"] == pytest.approx(2 / 4)  # G:maj and C:maj7 are wrong classes
    assert recall["Minor"] == pytest.approx(1 / 2)
    assert recall["Dom7"] == 1.0
    assert recall["No Chord"] == 0.0
    assert math.isnan(recall["Dim"])  # absent from the reference
    assert list(recall) == list(PAPER_GROUPS)
    assert acqa(recall) == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)


def test_x_reference_frames_count_in_no_group():
    counts = count_qualities(["X", "X", "C:maj"], ["C:maj", "C:maj", "C:maj"], LARGE)
    assert counts.frames.sum() == 1


def test_sus2_and_sus4_form_one_group():
    recall = quality_recall(["C:sus2", "C:sus4"], ["C:sus2", "C:maj"], LARGE)
    assert recall["Sus"] == 0.5


def test_quality_recall_accepts_class_indices():
    ref = LARGE.encode_many(["C:maj", "D:dim", "D:dim"])
    est = LARGE.encode_many(["C:maj", "D:dim", "D:min"])
    assert quality_recall(ref, est, LARGE)["Dim"] == 0.5


def test_confusion_counts_reference_group_by_estimated_group():
    ref = ["C:maj", "C:maj", "C:maj", "E:min"]
    est = ["D:maj", "C:7", "X", "E:min"]
    confusion = quality_confusion(ref, est, LARGE)
    assert confusion.shape == (len(PAPER_GROUPS), len(CONFUSION_COLUMNS))
    major, dom7, minor = (PAPER_GROUPS.index(g) for g in ("Major", "Dom7", "Minor"))
    assert confusion[major, major] == 1  # D:maj for C:maj: right group, wrong chord
    assert confusion[major, dom7] == 1
    assert confusion[major, CONFUSION_COLUMNS.index("X")] == 1
    assert confusion[minor, minor] == 1
    assert confusion.sum() == 4


def test_quality_counts_add_over_songs():
    a = count_qualities(["C:maj", "C:maj"], ["C:maj", "D:maj"], LARGE)
    b = count_qualities(["C:maj", "A:min"], ["C:maj", "A:min"], LARGE)
    total = a + b
    assert total.recall()["Major"] == pytest.approx(2 / 3)
    assert total.acqa() == pytest.approx((2 / 3 + 1.0) / 2)


def test_acqa_of_nothing_is_nan_with_a_warning():
    with pytest.warns(RuntimeWarning, match="ACQA"):
        assert math.isnan(acqa(quality_recall(["X"], ["C:maj"], LARGE)))


def test_majmin_vocabulary_groups_into_major_minor_and_no_chord():
    majmin = get_vocabulary("majmin")
    recall = quality_recall(["C:maj", "A:min", "N"], ["C:maj", "A:maj", "N"], majmin)
    present = {g: r for g, r in recall.items() if not math.isnan(r)}
    assert present == {"Major": 1.0, "Minor": 0.0, "No Chord": 1.0}


# The paper's code counts a quality recall hit when the quality is right, whatever the root.
PAPER_REF_LAB = """0.0 1.0 C:maj
1.0 2.0 A:min
2.0 3.0 G:7
3.0 4.0 N
"""
PAPER_EST_LAB = """0.0 1.0 D:maj
1.0 1.5 A:min
1.5 2.0 A:maj
2.0 3.0 G:maj
3.0 3.5 N
3.5 4.0 B:dim
"""
HOP, SR = 2205, 22050  # 0.1 s frames: 40 frames, 10 per second


def _frames(tmp_path, text, name):
    return intervals_to_frames(*_lab(tmp_path, name, text), LARGE, 40, HOP, SR)


def test_quality_recall_on_lab_files_counts_the_right_quality_with_the_wrong_root(tmp_path):
    ref = _frames(tmp_path, PAPER_REF_LAB, "ref.lab")
    est = _frames(tmp_path, PAPER_EST_LAB, "est.lab")
    counts = count_qualities(ref, est, LARGE)
    paper = counts.recall("quality")
    assert paper["Major"] == 1.0  # D:maj for C:maj: quality right, root wrong
    assert paper["Minor"] == 0.5 and paper["Dom7"] == 0.0 and paper["No Chord"] == 0.5
    exact = counts.recall("class")
    assert exact["Major"] == 0.0  # the exact-class figure beside it does not count it
    assert exact["Minor"] == 0.5 and exact["No Chord"] == 0.5


def test_quality_acqa_averages_the_groups_of_the_reference_no_chord_included(tmp_path):
    ref = _frames(tmp_path, PAPER_REF_LAB, "ref.lab")
    est = _frames(tmp_path, PAPER_EST_LAB, "est.lab")
    counts = count_qualities(ref, est, LARGE)
    # Major 1, Minor 0.5, Dom7 0, No Chord 0.5; Dim is only estimated: not a group here
    assert math.isnan(counts.recall("quality")["Dim"])
    assert counts.acqa("quality") == pytest.approx((1.0 + 0.5 + 0.0 + 0.5) / 4)
    assert counts.acqa("class") == pytest.approx((0.0 + 0.5 + 0.0 + 0.5) / 4)
    summary = counts.summary()
    assert summary["acqa_quality"] == counts.acqa("quality")
    assert summary["acqa"] == counts.acqa("class")


def test_sus2_for_sus4_is_the_right_quality_group():
    assert quality_recall(["C:sus4"], ["D:sus2"], LARGE, match="quality")["Sus"] == 1.0
