"""LogCQT against librosa.cqt (BTC's front end), framing, dtype, pitch shifting, statistics.

Test signals are harmonic tones and chord sequences with a -50 dB white-noise floor and short
fades. The noise floor is deliberate: in digital silence both transforms output values near
zero whose size is set by rounding and kernel leakage (float32 time-domain convolution here,
sparse FFT-domain kernels on resampled octaves in librosa), and ``log(|C| + 1e-6)`` magnifies
those into differences of several nats, so a log-domain comparison would measure numerical
noise rather than the transform. Real recordings always have a noise floor. The fades keep a
full-scale step at the file edges from dominating the first and last frames' low bins, where
librosa's per-octave resampler and nnAudio's 32768-tap kernels treat a hard edge differently.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import needs_module

from chordkd.features import FLOOR, LOG_EPS, FeatureSettings, FeatureStats, LogCQT, pitch_shift_cqt

try:
    import librosa
except ImportError:  # the tests that compare with librosa skip; the others still run
    librosa = None
needs_librosa = needs_module("librosa")

SR = 22050
SETTINGS = FeatureSettings()


@pytest.fixture(scope="module")
def logcqt() -> LogCQT:
    return LogCQT()


def harmonic_note(midi: float, n: int, rng: np.random.Generator, n_harmonics: int = 6) -> np.ndarray:
    """A note with ``n_harmonics`` partials at amplitude 1/h and random phases, ``[n]``."""
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(n) / SR
    x = np.zeros(n)
    for h in range(1, n_harmonics + 1):
        if f0 * h < SR / 2:
            x += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
    return x


def chord_sequence(
    chords: list[list[int]], seconds_each: float, rng: np.random.Generator, noise_db: float = -50.0
) -> np.ndarray:
    """Chords of harmonic notes played one after another, peak 0.5, with fades and noise."""
    n = int(seconds_each * SR)
    x = np.concatenate([sum(harmonic_note(m, n, rng) for m in chord) for chord in chords])
    x = 0.5 * x / np.abs(x).max()
    fade = np.sin(np.linspace(0, np.pi / 2, int(0.05 * SR))) ** 2
    x[: len(fade)] *= fade
    x[-len(fade) :] *= fade[::-1]
    x += 0.5 * 10 ** (noise_db / 20) * rng.standard_normal(len(x))
    return x.astype(np.float32)


def librosa_log_cqt(x: np.ndarray, **kwargs) -> np.ndarray:
    """BTC's features with librosa: ``log(|cqt| + 1e-6)`` as ``[frames, 144]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_fft too large for the shortest signals
        c = librosa.cqt(
            x,
            sr=SETTINGS.sr,
            hop_length=SETTINGS.hop,
            fmin=librosa.note_to_hz("C1"),
            n_bins=SETTINGS.n_bins,
            bins_per_octave=SETTINGS.bins_per_octave,
            **kwargs,
        )
    return np.log(np.abs(c) + LOG_EPS).T


@pytest.fixture(scope="module")
def test_signals() -> np.ndarray:
    """``[8, 4 s]``: A1..A6 as single notes, then two sequences of four 1-s chords."""
    rng = np.random.default_rng(0)
    tones = [chord_sequence([[m]], 4.0, rng) for m in (33, 45, 57, 69, 81, 93)]
    progressions = [
        [[48, 52, 55], [43, 59, 62, 65], [45, 57, 60, 64], [41, 57, 60, 65]],
        [[36, 55, 60, 64], [40, 47, 55, 59, 62], [29, 57, 60, 64, 67], [38, 54, 57, 62]],
    ]
    chords = [chord_sequence(p, 1.0, rng) for p in progressions]
    return np.stack(tones + chords)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Argmax agreement, per-frame Pearson correlation and relative magnitude error."""
    corr = np.array(
        [np.corrcoef(a, b)[0, 1] for fa, fb in zip(ours, theirs) for a, b in zip(fa, fb)]
    )
    mag_ours, mag_theirs = np.exp(ours) - LOG_EPS, np.exp(theirs) - LOG_EPS
    rel = np.linalg.norm(mag_ours - mag_theirs, axis=-1) / np.linalg.norm(mag_theirs, axis=-1)
    return {
        "argmax": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
        "corr_min": float(corr.min()),
        "corr_mean": float(corr.mean()),
        "rel_err_median": float(np.median(rel)),
    }


def direct_log_cqt(signals: np.ndarray, n_frames: int) -> np.ndarray:
    """The CQT by its definition, ``[batch, n_frames, 144]``: librosa's own wavelet filters
    applied at the full sample rate to centred, zero-padded frames (no resampling, no sparse
    kernels), scaled as ``librosa.cqt`` scales them (``sqrt(filter length)``)."""
    freqs = librosa.cqt_frequencies(144, fmin=librosa.note_to_hz("C1"), bins_per_octave=24)
    basis, lengths = librosa.filters.wavelet(
        freqs=freqs, sr=SR, filter_scale=1, norm=1, pad_fft=True, window="hann", dtype=np.complex64
    )
    width = basis.shape[1]
    padded = np.pad(signals, ((0, 0), (width // 2, width // 2 + SETTINGS.hop)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)
    frames = np.ascontiguousarray(frames[:, :: SETTINGS.hop][:, :n_frames])  # [B, T, width]
    real = frames @ np.ascontiguousarray(basis.real.T)
    imag = frames @ np.ascontiguousarray(basis.imag.T)
    mag = np.hypot(real, imag) * np.sqrt(lengths).astype(np.float32)
    return np.log(mag + LOG_EPS)


@needs_librosa
def test_logcqt_is_the_constant_q_transform(logcqt, test_signals):
    ours = logcqt(torch.from_numpy(test_signals)).numpy()
    reference = direct_log_cqt(test_signals, ours.shape[1])
    a = agreement(ours, reference)
    assert a["argmax"] >= 0.99, a
    assert a["corr_min"] >= 0.95, a  # every frame, the edges included
    assert a["rel_err_median"] <= 0.03, a


@needs_librosa
def test_logcqt_matches_dense_librosa_cqt_away_from_the_edges(logcqt, test_signals):
    # sparsity=0 turns off librosa's kernel truncation; what is left is its per-octave
    # resampling, whose filters see the file edges differently (first and last two frames).
    ours = logcqt(torch.from_numpy(test_signals)).numpy()
    theirs = np.stack([librosa_log_cqt(x, sparsity=0) for x in test_signals])
    assert ours.shape == theirs.shape
    every_frame = agreement(ours, theirs)
    interior = agreement(ours[:, 2:-2], theirs[:, 2:-2])
    assert every_frame["argmax"] >= 0.99, every_frame
    assert every_frame["corr_min"] >= 0.90, every_frame
    assert every_frame["corr_mean"] >= 0.99, every_frame
    assert interior["corr_min"] >= 0.95, interior
    assert every_frame["rel_err_median"] <= 0.03, every_frame


@needs_librosa
def test_logcqt_close_to_btc_librosa_features(logcqt, test_signals):
    # BTC used librosa's defaults, whose kernels drop the smallest 1% of their FFT mass: filter
    # skirts more than ~45 dB under a peak are cut, which lowers the log-domain correlation of
    # sparse spectra (single notes) to ~0.92 while peaks and magnitudes still agree.
    ours = logcqt(torch.from_numpy(test_signals)).numpy()
    theirs = np.stack([librosa_log_cqt(x) for x in test_signals])
    a = agreement(ours, theirs)
    assert a["argmax"] >= 0.99, a
    assert a["corr_min"] >= 0.90, a
    assert a["corr_mean"] >= 0.96, a
    assert a["rel_err_median"] <= 0.03, a


@needs_librosa
def test_logcqt_rejects_a_scale_offset(logcqt, test_signals):
    # Guards the magnitude check above: CQT2010v2's 1.42x offset would leave correlation and
    # argmax untouched; the relative magnitude error must see it.
    ours = logcqt(torch.from_numpy(test_signals[-1])).numpy() + math.log(1.42)
    a = agreement(ours[None], librosa_log_cqt(test_signals[-1])[None])
    assert a["argmax"] == 1.0 and a["rel_err_median"] > 0.3


@needs_librosa
@pytest.mark.parametrize(
    "n_samples", [100, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 22050, 22051, 30001]
)
def test_frame_count_matches_librosa(logcqt, n_samples):
    x = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32) * 0.1
    expected = librosa_log_cqt(x).shape[0]
    assert logcqt(torch.from_numpy(x)).shape[0] == expected
    assert SETTINGS.n_frames(n_samples) == expected


@needs_librosa
def test_frame_times_are_librosas():
    times = SETTINGS.frame_times(50)
    assert np.allclose(times, librosa.frames_to_time(np.arange(50), sr=SR, hop_length=2048))
    assert SETTINGS.frame_seconds == pytest.approx(2048 / 22050)


def test_output_is_float32_batch_frames_bins(logcqt):
    out = logcqt(torch.randn(3, SR) * 0.1)
    assert out.dtype == torch.float32
    assert out.shape == (3, SETTINGS.n_frames(SR), 144)


def test_one_dimensional_input_gives_frames_bins(logcqt):
    x = torch.randn(SR) * 0.1
    out = logcqt(x)
    assert out.shape == (SETTINGS.n_frames(SR), 144)
    assert torch.equal(out, logcqt(x[None])[0])


def test_bf16_autocast_gives_the_float32_result(logcqt):
    x = torch.randn(2, SR) * 0.1
    plain = logcqt(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = logcqt(x)
    assert autocast.dtype == torch.float32
    assert torch.equal(autocast, plain)


def test_batch_items_do_not_depend_on_each_other(logcqt):
    rng = np.random.default_rng(1)
    a = torch.from_numpy(chord_sequence([[57, 61, 64]], 1.0, rng))
    loud = torch.randn_like(a)  # a neighbour 20 dB louder, broadband
    alone = logcqt(a[None])[0]
    together = logcqt(torch.stack([loud, a, loud]))[1]
    assert torch.allclose(alone, together, atol=1e-5)


def test_silence_gives_the_floor_value(logcqt):
    out = logcqt(torch.zeros(SR))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full_like(out, FLOOR), atol=1e-3)


def test_three_dimensional_input_is_rejected(logcqt):
    with pytest.raises(ValueError, match="batch, samples"):
        logcqt(torch.zeros(1, 1, SR))


# ---- pitch_shift_cqt ----


def test_pitch_shift_moves_two_bins_per_semitone_and_fills_the_floor():
    x = torch.randn(1, 5, 144)
    up = pitch_shift_cqt(x, 3)
    assert torch.equal(up[..., 6:], x[..., :-6])
    assert torch.all(up[..., :6] == FLOOR)
    down = pitch_shift_cqt(x, -2)
    assert torch.equal(down[..., :-4], x[..., 4:])
    assert torch.all(down[..., -4:] == FLOOR)
    assert FLOOR == pytest.approx(math.log(1e-6))


def test_pitch_shift_by_zero_is_identity():
    x = torch.randn(2, 5, 144)
    assert torch.equal(pitch_shift_cqt(x, 0), x)


def test_pitch_shift_past_the_range_leaves_only_floor():
    assert torch.all(pitch_shift_cqt(torch.randn(1, 3, 144), 72) == FLOOR)


def test_pitch_shift_takes_one_shift_per_batch_item():
    x = torch.randn(3, 4, 144)
    shifts = torch.tensor([-2, 0, 5])
    out = pitch_shift_cqt(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        assert torch.equal(out[i], pitch_shift_cqt(x[i : i + 1], s)[0])


def test_feature_shift_puts_the_peak_where_an_audio_shift_does(logcqt):
    # A4 shifted by 3 semitones in audio (440 Hz -> C5, 523.25 Hz) and in the features.
    rng = np.random.default_rng(2)
    a4 = chord_sequence([[69]], 2.0, rng)
    c5 = chord_sequence([[72]], 2.0, rng)
    shifted = pitch_shift_cqt(logcqt(torch.from_numpy(a4))[None], 3)[0]
    direct = logcqt(torch.from_numpy(c5))
    interior = slice(3, -3)  # away from the fades at the ends
    assert torch.equal(shifted[interior].argmax(-1), direct[interior].argmax(-1))
    # The whole harmonic pattern moves, not just the fundamental.
    for frame_shifted, frame_direct in zip(shifted[interior], direct[interior]):
        top_shifted = set(frame_shifted.topk(4).indices.tolist())
        assert top_shifted == set(frame_direct.topk(4).indices.tolist())


# ---- FeatureSettings, FeatureStats ----


def test_settings_fingerprint_is_stable_and_tracks_every_field():
    assert FeatureSettings().fingerprint() == SETTINGS.fingerprint()
    assert FeatureSettings(hop=1024).fingerprint() != SETTINGS.fingerprint()
    assert FeatureSettings(n_bins=168).fingerprint() != SETTINGS.fingerprint()
    assert SETTINGS.bins_per_semitone == 2


def test_feature_stats_equal_numpy():
    rng = np.random.default_rng(3)
    chunks = [rng.normal(-5.0, 2.0, size=(n, 144)).astype(np.float32) for n in (7, 50, 1)]
    stats = FeatureStats()
    stats.update(chunks[0])
    stats.update(torch.from_numpy(chunks[1]))
    stats.update(chunks[2])
    everything = np.concatenate(chunks).astype(np.float64)
    assert stats.count == everything.size
    assert stats.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert stats.std == pytest.approx(everything.std(), rel=1e-9)


def test_feature_stats_without_frames_raise():
    with pytest.raises(ValueError, match="no frames"):
        _ = FeatureStats().mean
    with pytest.raises(ValueError, match="no frames"):
        _ = FeatureStats().std


def test_trimmed_octave_kernels_give_nnaudios_output():
    from nnAudio.features import CQT1992v2

    s = FeatureSettings()
    reference = CQT1992v2(sr=s.sr, hop_length=s.hop, fmin=s.fmin, n_bins=s.n_bins,
                          bins_per_octave=s.bins_per_octave, pad_mode="constant", verbose=False)
    audio = torch.randn(2, s.sr * 5, generator=torch.Generator().manual_seed(0)) * 0.1
    ours = LogCQT(s)(audio)
    theirs = torch.log(reference(audio) + LOG_EPS).transpose(1, 2)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours.exp(), theirs.exp(), rtol=1e-4, atol=1e-4)
