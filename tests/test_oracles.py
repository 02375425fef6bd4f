"""Window stitching and the KD path against independent oracles.

Expected values here come from hand computation, from scipy, or from a teacher's full logits:
never from the function under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import write_tone_corpus
from scipy.special import log_softmax, softmax
from scipy.stats import entropy

from chordkd.audio import load_audio
from chordkd.data.manifest import read_manifest
from chordkd.features import LogCQT
from chordkd.inference import song_logits, stitch, window_starts
from chordkd.labelling.label import label_corpus
from chordkd.labelling.teacher_cache import TeacherCache, rebuild_log_probs
from chordkd.models.loading import load_model
from chordkd.training.distillation import SelectiveKD
from chordkd.training.losses import kl_per_frame

T = 3.0
K = 8

# -- stitching -------------------------------------------------------------------------------


def _coded_windows(n_windows: int, width: int) -> torch.Tensor:
    """``[n_windows, width, 1]`` with value 100 * window + position: a stitched frame's value
    says which window and which position inside it supplied the frame."""
    w = torch.arange(n_windows)[:, None] * 100 + torch.arange(width)[None, :]
    return w[..., None].float()


def test_stitching_takes_each_frame_from_the_window_whose_centre_is_nearest():
    # 10 frames, windows of 4 at hop 2 start at 0, 2, 4, 6 (centres 1.5, 3.5, 5.5, 7.5):
    # frames 0-2 from window 0, 3-4 from window 1, 5-6 from window 2, 7-9 from window 3
    starts = window_starts(10, window=4)
    assert starts == [0, 2, 4, 6]
    got = stitch(_coded_windows(4, 4), starts, 10)[:, 0].tolist()
    assert got == [0, 1, 2, 101, 102, 201, 202, 301, 302, 303]


def test_stitching_a_last_window_flush_with_the_song_end_and_a_tie():
    # 9 frames: starts 0, 2, 4 and a last window flush with the end at 5 (centres 1.5, 3.5,
    # 5.5, 6.5); frame 6 is 0.5 from windows 2 and 3 and goes to the earlier one
    starts = window_starts(9, window=4)
    assert starts == [0, 2, 4, 5]
    got = stitch(_coded_windows(4, 4), starts, 9)[:, 0].tolist()
    assert got == [0, 1, 2, 101, 102, 201, 202, 302, 303]


def test_a_song_shorter_than_a_window_is_its_one_window():
    assert window_starts(3, window=4) == [0]
    assert stitch(_coded_windows(1, 3), [0], 3)[:, 0].tolist() == [0, 1, 2]


def test_song_logits_of_a_framewise_model_are_the_model_on_every_frame():
    # a model without context gives the same logits whatever window a frame sits in
    torch.manual_seed(0)
    frames = torch.randn(250, 144)
    proj = torch.randn(144, 5)
    got = song_logits(lambda x: x @ proj, frames, window=108)
    torch.testing.assert_close(got, frames @ proj)


# -- KL -----------------------------------------------------------------------------------------


def test_kl_per_frame_is_scipys_relative_entropy_of_the_tempered_distributions():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (2, 7, 170)), rng.normal(0, 3, (2, 7, 170))
    got = kl_per_frame(torch.from_numpy(log_softmax(teacher / T, -1)),
                       torch.from_numpy(student), T).numpy()
    want = entropy(softmax(teacher / T, -1), softmax(student / T, -1), axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# -- the production KD path on a real teacher's outputs ----------------------------------------


@pytest.fixture(scope="module")
def teacher_outputs(fixture_btc, tmp_path_factory):
    """The BTC fixture's full logits on two songs, and the cache ``chordkd label`` writes
    (top 8, logZ, logZ at T = 3) for the same songs."""
    root = tmp_path_factory.mktemp("kd")
    corpus = write_tone_corpus(root / "audio", songs=2, seconds=5.0)
    teacher = fixture_btc / "checkpoint.pt"
    label_corpus(teacher, corpus, root / "cache", num_workers=0,
                 trainer_kwargs={"accelerator": "cpu", "devices": 1})
    model, cqt = load_model(teacher).model, LogCQT()
    full = {s.id: song_logits(model, cqt(torch.from_numpy(load_audio(s.audio)))).double().numpy()
            for s in read_manifest(corpus)}
    return full, TeacherCache(root / "cache")


def _batch(cache: TeacherCache, song: str) -> dict[str, torch.Tensor]:
    out = cache.read(song)
    return {
        "teacher_values": torch.from_numpy(np.array(out.values))[None],
        "teacher_indices": torch.from_numpy(np.array(out.indices))[None],
        "teacher_logz": torch.from_numpy(np.array(out.logz))[None],
        "teacher_logz_t": torch.from_numpy(np.array(out.logz_t))[None],
        "teacher_tail_temperature": torch.tensor([out.tail_temperature]),
    }


def _missing(indices: np.ndarray, n_classes: int) -> np.ndarray:
    """Boolean ``[T, C]``: the classes the cache does not keep."""
    mask = np.ones((len(indices), n_classes), dtype=bool)
    np.put_along_axis(mask, indices.astype(np.int64), False, axis=1)
    return mask


@pytest.mark.slow
def test_rebuilt_tail_mass_at_t3_is_the_teachers_exact_tail_mass(teacher_outputs):
    full, cache = teacher_outputs
    for song, logits in full.items():
        b = _batch(cache, song)
        rebuilt = rebuild_log_probs(b["teacher_values"], b["teacher_indices"], b["teacher_logz"],
                                    170, temperature=T, logz_t=b["teacher_logz_t"],
                                    tail_temperature=T)[0].double().numpy()
        missing = _missing(b["teacher_indices"][0].numpy(), 170)
        want = (softmax(logits / T, -1) * missing).sum(-1)
        got = (np.exp(rebuilt) * missing).sum(-1)
        assert want.min() > 0.05  # a tail worth measuring: the fixture teacher is not peaked
        np.testing.assert_allclose(got, want, rtol=2e-3)


@pytest.mark.slow
def test_selective_kd_on_cached_top8_is_the_full_logit_kl_within_the_stored_tail_bound(
    teacher_outputs,
):
    # For a student whose logits are equal over the classes the cache drops, the cached
    # distribution q (kept classes exact, the tail's exact mass r spread uniformly over its M
    # classes) gives KL(q || s) = KL(p || s) - r * KL(p_tail / r || uniform), and the last
    # factor lies in [0, log M]: so KL(p || s) - r log M <= KL(q || s) <= KL(p || s), with r
    # the tempered tail mass the cache stores (through logZ at T). The gap itself, computed
    # from the full logits, pins the production value down exactly.
    full, cache = teacher_outputs
    kd = SelectiveKD(alpha=1.0, temperature=T, rule="all")
    rng = np.random.default_rng(1)
    for song, logits in full.items():
        b = _batch(cache, song)
        n = logits.shape[0]
        missing = _missing(b["teacher_indices"][0].numpy(), 170)
        student = rng.normal(0, 2, (n, 170))
        student[missing] = np.repeat(rng.normal(0, 2, (n, 1)), 170, 1)[missing]
        batch = {**b, "labels": torch.zeros(1, n, dtype=torch.long)}
        loss = kd.combine(None, batch, torch.from_numpy(student).float()[None],
                          torch.tensor(0.0), {})
        production = float(loss) / T**2  # mean over frames of KL(q || s)
        p = softmax(logits / T, -1)
        exact = entropy(p, softmax(student / T, -1), axis=-1)
        u = b["teacher_values"][0].double().numpy()
        c = b["teacher_logz_t"][0].double().numpy() - b["teacher_logz"][0].double().numpy() / T
        r = 1 - np.exp(u / T - c[:, None]).sum(-1)  # tail mass at T from the stored arrays
        bound = r * math.log(170 - K)
        assert exact.mean() - bound.mean() - 1e-3 <= production <= exact.mean() + 1e-3
        p_tail = p * missing
        r_true = p_tail.sum(-1)
        gap = r_true * entropy(p_tail / r_true[:, None], missing / (170 - K), axis=-1)
        assert production == pytest.approx((exact - gap).mean(), rel=1e-3, abs=1e-4)
