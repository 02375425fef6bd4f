"""load_audio: formats, mono mixdown, resampling, and an AudioError naming the file for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chordkd.audio import SAMPLE_RATE, audio_info, is_audio_file, load_audio, resample
from chordkd.errors import AudioError

SR = SAMPLE_RATE


def sine(freq: float, seconds: float, sr: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT bin (Hann window), to 1/len(x) * sr Hz resolution."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def written(path: Path, x: np.ndarray, sr: int = SR, **kwargs) -> Path:
    sf.write(str(path), x, sr, **kwargs)
    return path


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_files_load_as_mono_float32_unchanged(tmp_path, suffix):
    x = sine(440, 0.5, SR)
    y = load_audio(written(tmp_path / f"a{suffix}", x))
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_allclose(y, x, atol=1e-4)  # 16-bit quantisation


@pytest.mark.parametrize(
    "suffix",
    [
        ".ogg",
        pytest.param(
            ".mp3",
            marks=pytest.mark.skipif(
                "MP3" not in sf.available_formats(), reason="libsndfile built without mp3"
            ),
        ),
    ],
)
def test_lossy_files_load_with_the_tone_in_place(tmp_path, suffix):
    x = sine(440, 1.0, SR)
    y = load_audio(written(tmp_path / f"a{suffix}", x))
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 0.01 * SR  # encoder padding is trimmed (or nearly)
    assert abs(peak_hz(y, SR) - 440) <= 2
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.05)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = sine(440, 0.5, SR), sine(660, 0.5, SR, amplitude=0.2)
    y = load_audio(written(tmp_path / "s.wav", np.stack([left, right], axis=1), subtype="FLOAT"))
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("file_sr", [8000, 44100])
def test_other_rates_are_resampled_and_keep_their_pitch(tmp_path, file_sr):
    y = load_audio(written(tmp_path / "r.wav", sine(440, 2.0, file_sr), sr=file_sr))
    assert len(y) == pytest.approx(2.0 * SR, abs=1)
    assert abs(peak_hz(y, SR) - 440) <= 0.5  # 0.5 Hz bins over 2 s


def test_resample_returns_float32_at_the_new_length():
    out = resample(sine(1000, 1.0, 44100), 44100, SR)
    assert out.dtype == np.float32 and len(out) == SR
    assert abs(peak_hz(out, SR) - 1000) <= 1


def test_audio_info_reads_the_header(tmp_path):
    path = written(tmp_path / "i.flac", np.zeros((44100, 2), np.float32), sr=44100)
    assert audio_info(path) == (1.0, 44100, 2)


def test_audio_suffixes_are_recognised_case_blind():
    assert is_audio_file("a/b.FLAC") and is_audio_file("x.mp3")
    assert not is_audio_file("song.lab") and not is_audio_file("manifest.csv")


# ---- errors: each one an AudioError that names the file ----


def test_missing_file_is_an_audio_error(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioError, match="nowhere.wav.*no such"):
        load_audio(path)


def test_empty_file_is_an_audio_error(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        load_audio(path)


def test_text_renamed_wav_is_an_audio_error(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("id,audio\nsong,song.wav\n")
    with pytest.raises(AudioError, match="notes.wav.*not readable as audio"):
        load_audio(path)
    with pytest.raises(AudioError, match="notes.wav"):
        audio_info(path)


def test_truncated_flac_is_an_audio_error(tmp_path):
    full = written(tmp_path / "full.flac", sine(440, 2.0, SR))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioError, match="cut.flac.*not readable"):
        load_audio(cut)


def test_too_short_file_is_an_audio_error(tmp_path):
    path = written(tmp_path / "blip.wav", sine(440, 0.05, SR))
    with pytest.raises(AudioError, match="blip.wav.*too short"):
        load_audio(path)
    # The same file is fine when the caller lowers the minimum.
    assert len(load_audio(path, min_seconds=0.01)) == int(0.05 * SR)


def test_minimum_length_is_judged_after_resampling(tmp_path):
    # 0.12 s at 8 kHz is 960 samples, fewer than 0.1 s at 22050 Hz (2205), yet long enough.
    path = written(tmp_path / "short8k.wav", sine(440, 0.12, 8000), sr=8000)
    assert len(load_audio(path)) == pytest.approx(0.12 * SR, abs=1)


def test_nan_samples_are_an_audio_error(tmp_path):
    x = sine(440, 0.5, SR)
    x[1000] = np.nan
    path = written(tmp_path / "nan.wav", x, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(path)


def test_audio_errors_are_chordkd_errors(tmp_path):
    from chordkd.errors import ChordkdError

    with pytest.raises(ChordkdError):
        load_audio(tmp_path / "missing.flac")
