"""Argmax and Viterbi decoding of frame scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from chordkd.decoding import argmax_decode, decode, log_softmax, viterbi_decode


def _dense_viterbi(logits: np.ndarray, p: float) -> np.ndarray:
    """Textbook O(T C^2) Viterbi with the full transition matrix, for comparison."""
    n_frames, n_classes = logits.shape
    trans = np.full((n_classes, n_classes), (1 - p) / (n_classes - 1))
    np.fill_diagonal(trans, p)
    with np.errstate(divide="ignore"):
        log_trans = np.log(trans)
    emissions = log_softmax(logits)
    delta = emissions[0]
    back = np.zeros((n_frames, n_classes), dtype=np.int64)
    for t in range(1, n_frames):
        cand = delta[:, None] + log_trans  # [from, to]
        back[t] = cand.argmax(axis=0)
        delta = cand.max(axis=0) + emissions[t]
    path = [int(delta.argmax())]
    for t in range(n_frames - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return np.array(path[::-1])


def _path_score(logits: np.ndarray, path, p: float) -> float:
    n_classes = logits.shape[1]
    emissions = log_softmax(logits)
    score = emissions[0, path[0]]
    for t in range(1, len(path)):
        stay = path[t] == path[t - 1]
        score += math.log(p if stay else (1 - p) / (n_classes - 1)) + emissions[t, path[t]]
    return score


def test_argmax_picks_the_top_class_per_frame():
    logits = np.array([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]])
    assert argmax_decode(logits).tolist() == [1, 0]


def test_uniform_transitions_reduce_viterbi_to_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 25))
    np.testing.assert_array_equal(viterbi_decode(logits, self_transition=1 / 25), argmax_decode(logits))


def test_strong_self_transition_removes_one_frame_blips():
    logits = np.full((30, 4), -2.0)
    logits[:, 0] = 2.0
    logits[[7, 19], 0] = -2.0
    logits[7, 2] = 2.5  # one-frame blips to class 2 and class 3
    logits[19, 3] = 2.5
    assert set(argmax_decode(logits).tolist()) == {0, 2, 3}
    assert viterbi_decode(logits, self_transition=0.99).tolist() == [0] * 30


def test_strong_self_transition_keeps_long_segments():
    logits = np.full((40, 3), -3.0)
    logits[:20, 0] = 3.0
    logits[20:, 1] = 3.0
    decoded = viterbi_decode(logits, self_transition=0.99)
    assert decoded.tolist() == [0] * 20 + [1] * 20


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_viterbi_matches_the_dense_recursion(p):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(60, 7))
    np.testing.assert_array_equal(viterbi_decode(logits, p), _dense_viterbi(logits, p))


def test_viterbi_finds_the_best_path_by_exhaustive_search():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 3))
    p = 0.7
    best = max(itertools.product(range(3), repeat=6), key=lambda q: _path_score(logits, q, p))
    assert viterbi_decode(logits, p).tolist() == list(best)


def test_log_probabilities_and_logits_decode_the_same():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(50, 10))
    log_probs = log_softmax(logits)
    np.testing.assert_array_equal(viterbi_decode(logits, 0.9), viterbi_decode(log_probs, 0.9))


def test_class_prior_favours_rare_classes():
    # Class 1 is slightly less probable per frame but ten times rarer a priori.
    logits = np.log(np.tile([0.55, 0.45], (5, 1)))
    assert viterbi_decode(logits, 0.5).tolist() == [0] * 5
    assert viterbi_decode(logits, 0.5, class_prior=np.array([0.9, 0.1])).tolist() == [1] * 5


def test_torch_tensors_are_accepted():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    assert decode(logits, "viterbi", self_transition=0.5).tolist() == [1, 0]
    assert decode(logits).tolist() == [1, 0]


def test_self_transition_outside_0_1_is_rejected():
    with pytest.raises(ValueError, match="self_transition"):
        viterbi_decode(np.zeros((3, 2)), self_transition=1.0)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown decoding method 'beam'"):
        decode(np.zeros((3, 2)), "beam")


def test_nan_scores_are_rejected_naming_the_frame():
    logits = np.zeros((4, 3))
    logits[2, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2"):
        argmax_decode(logits)


def test_empty_song_decodes_to_nothing():
    assert viterbi_decode(np.zeros((0, 5)), 0.9).shape == (0,)


# --------------------------------------------------------------------------------------------
# a linear-chain CRF's own decoding (madmom's convention), against exhaustive enumeration


def _crf_problem(seed: int, n_frames: int = 4, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_frames, n_classes)), rng.normal(size=(n_classes, n_classes)),
            rng.normal(size=n_classes), rng.normal(size=n_classes))


def _path_energies(scores, a, pi, tau):
    """Energy of every path, the virtual state before frame 0 maximised over (madmom's
    ConditionalRandomField.process) or summed over: {path: (max energy, log-sum energy)}."""
    from scipy.special import logsumexp

    n_frames, n_classes = scores.shape
    out = {}
    for path in itertools.product(range(n_classes), repeat=n_frames):
        rest = sum(scores[t, path[t]] for t in range(n_frames))
        rest += sum(a[path[t - 1], path[t]] for t in range(1, n_frames)) + tau[path[-1]]
        entry = pi + a[:, path[0]]  # over the virtual state y_-1
        out[path] = (rest + entry.max(), rest + logsumexp(entry))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_crf_decode_finds_the_highest_energy_path(seed):
    from chordkd.decoding import crf_decode

    problem = _crf_problem(seed)
    energies = _path_energies(*problem)
    best = max(energies, key=lambda p: energies[p][0])
    assert tuple(crf_decode(*problem).tolist()) == best


def test_crf_log_marginals_equal_the_enumerated_posteriors():
    from scipy.special import logsumexp

    from chordkd.decoding import crf_log_marginals

    problem = _crf_problem(7)
    energies = _path_energies(*problem)
    log_z = logsumexp([e[1] for e in energies.values()])
    n_frames, n_classes = problem[0].shape
    expected = np.full((n_frames, n_classes), -np.inf)
    for path, (_, e) in energies.items():
        for t, c in enumerate(path):
            expected[t, c] = np.logaddexp(expected[t, c], e - log_z)
    np.testing.assert_allclose(crf_log_marginals(*problem), expected, atol=1e-10)


def test_crf_potentials_of_the_wrong_size_are_refused():
    from chordkd.decoding import crf_decode

    scores, a, pi, tau = _crf_problem(0)
    with pytest.raises(ValueError, match="transitions"):
        crf_decode(scores, a[:2], pi, tau)
