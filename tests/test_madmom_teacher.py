"""madmom's pre-trained chord models as chordkd teachers (needs the madmom extra).

The oracle is madmom itself: its own processors (``CNNChordFeatureProcessor`` +
``CRFChordRecognitionProcessor``, ``DeepChromaProcessor`` + its CRF) run on the same 44.1 kHz
signal, and the synthesizer's chord labels for the class mapping. madmom's own (numpy) CNN
network is slow here (~0.2-1x real time under load), so two 12-second songs are rendered once
and madmom's own features computed once, shared by the module; the teacher runs the torch port.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IN_CI

from chordkd.annotations import intervals_to_frames
from chordkd.audio import resample
from chordkd.chords import get_vocabulary
from chordkd.errors import ChordkdError

try:
    from chordkd.teachers.madmom import import_madmom

    import_madmom()
except ChordkdError as e:  # the extra is not installed: `make install` installs it
    if IN_CI:  # CI installs it: a missing extra there is a failure, not a skip
        pytest.fail(f"{e} (CI=true)", pytrace=False)
    pytest.skip(str(e), allow_module_level=True)

from chordkd.synth.song import synthesize_song  # noqa: E402
from chordkd.teachers import load_teacher  # noqa: E402
from chordkd.transcribe import transcribe_song  # noqa: E402

DT = 2048 / 22050
MADMOM_LABEL_SHIFT = 0.05  # madmom labels frame j over [j/10, (j+1)/10); it is centred at j/10
VOCAB = get_vocabulary("majmin")
SONGS = (1, 2)  # synthesize_song(seed=12, index=i, seconds=12): pad and organ timbres


@pytest.fixture(scope="module")
def songs():
    return [synthesize_song(seed=12, index=i, seconds=12.0) for i in SONGS]


@pytest.fixture(scope="module")
def cnn():
    return load_teacher("madmom:cnn")


@pytest.fixture(scope="module")
def madmom_own(songs):
    """madmom's own chord recognizer on each song: (CNN features [T', 128], segments)."""
    from madmom.audio.signal import Signal
    from madmom.features.chords import CNNChordFeatureProcessor, CRFChordRecognitionProcessor

    features, crf = CNNChordFeatureProcessor(), CRFChordRecognitionProcessor()
    out = []
    for audio, *_ in songs:
        feats = features(Signal(resample(audio, 22050, 44100), sample_rate=44100))
        out.append((feats, crf(feats)))
    return out


@pytest.fixture(scope="module")
def chordkd_crf(songs, cnn):
    return [transcribe_song(audio, cnn, decoding="crf") for audio, *_ in songs]


def test_torch_network_gives_madmoms_cnn_features(songs, madmom_own, cnn):
    # madmom's own CNNChordFeatureProcessor (numpy network) is the oracle; the teacher's
    # processor runs the same spectrogram into the torch port of the network
    from madmom.audio.signal import Signal

    from chordkd.teachers.madmom_torch import TorchChordCNN

    assert cnn.network == "torch"
    assert sum(isinstance(p, TorchChordCNN) for p in cnn._features.processors) == 1
    for (audio, *_), (theirs, _) in zip(songs, madmom_own):
        ours = cnn._features(Signal(resample(audio, 22050, 44100), sample_rate=44100))
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_numpy_network_is_madmoms_own_and_shares_the_cache_identity(cnn):
    from madmom.ml.nn import NeuralNetwork

    from chordkd.teachers.madmom import MadmomTeacher

    own = MadmomTeacher("cnn", network="numpy")
    assert own.network == "numpy"
    assert sum(isinstance(p, NeuralNetwork) for p in own._features.processors) == 1
    assert own.identity == cnn.identity  # same outputs: existing caches stay valid
    with pytest.raises(ChordkdError, match="madmom network 'onnx'"):
        MadmomTeacher("cnn", network="onnx")


def test_torch_port_refuses_a_layer_it_does_not_know():
    from madmom.ml.nn import NeuralNetwork
    from madmom.ml.nn.layers import FeedForwardLayer

    from chordkd.teachers.madmom_torch import TorchChordCNN

    dense = NeuralNetwork([FeedForwardLayer(np.zeros((4, 2), np.float32), np.zeros(2, np.float32))])
    with pytest.raises(ChordkdError, match="FeedForwardLayer not ported"):
        TorchChordCNN(dense)


def test_crf_path_equals_madmoms_viterbi_on_its_own_features(madmom_own, cnn):
    from madmom.ml.crf import ConditionalRandomField
    from madmom.models import CHORDS_CFCRF

    from chordkd.decoding import crf_decode

    crf = ConditionalRandomField.load(CHORDS_CFCRF[0])
    for feats, _ in madmom_own:
        ours = crf_decode(feats @ cnn.W + cnn.c, cnn.A, cnn.pi, cnn.tau)
        np.testing.assert_array_equal(ours, crf.process(feats))


def test_decode_crf_gives_madmoms_chord_sequence(chordkd_crf, madmom_own):
    for ours, (_, segments) in zip(chordkd_crf, madmom_own):
        assert [VOCAB.encode(label) for label in ours.labels] == \
            [VOCAB.encode(str(label)) for label in segments["label"]]


def test_decode_crf_boundaries_are_madmoms_within_half_a_chordkd_frame(chordkd_crf, madmom_own):
    # chordkd puts madmom's frames at their centres, 50 ms before madmom's label writer does;
    # so each boundary is madmom's minus 50 ms, to within half a chordkd frame (rounding onto
    # chordkd's frames), and within one chordkd frame plus those 50 ms of madmom's own.
    for ours, (_, segments) in zip(chordkd_crf, madmom_own):
        theirs = np.asarray(segments["start"][1:], dtype=float)
        np.testing.assert_array_less(np.abs(ours.intervals[1:, 0] - (theirs - MADMOM_LABEL_SHIFT)),
                                     DT / 2 + 1e-6)


def test_madmom_classes_land_on_the_known_chords_of_rendered_songs(songs, cnn):
    hits = total = 0
    for audio, intervals, labels, _ in songs:
        guess = cnn.logits(torch.from_numpy(audio)).argmax(1).numpy()
        truth = intervals_to_frames(intervals, labels, VOCAB, len(guess))
        chord = truth != VOCAB.n_index  # a wrong root or quality mapping would miss these
        hits += int((guess[chord] == truth[chord]).sum())
        total += int(chord.sum())
    assert hits / total > 0.7


def test_deepchroma_crf_gives_madmoms_chord_sequence(songs):
    from madmom.audio.chroma import DeepChromaProcessor
    from madmom.audio.signal import Signal
    from madmom.features.chords import DeepChromaChordRecognitionProcessor

    teacher = load_teacher("madmom:deepchroma")
    audio = songs[0][0]
    segments = DeepChromaChordRecognitionProcessor()(
        DeepChromaProcessor()(Signal(resample(audio, 22050, 44100), sample_rate=44100)))
    ours = transcribe_song(audio, teacher, decoding="crf")
    assert [VOCAB.encode(label) for label in ours.labels] == \
        [VOCAB.encode(str(label)) for label in segments["label"]]


def test_marginals_are_normalised_log_posteriors_on_chordkd_frames(songs):
    teacher = load_teacher("madmom:deepchroma-marginals")
    audio = songs[1][0]
    logits = teacher.logits(torch.from_numpy(audio))
    assert logits.shape == (teacher.grid.n_frames(len(audio)), 25)
    torch.testing.assert_close(torch.logsumexp(logits, 1), torch.zeros(len(logits)),
                               atol=1e-4, rtol=0)


@pytest.mark.slow
def test_madmom_labelling_is_cached_under_its_name_and_resumes(songs, cnn, tmp_path):
    import soundfile as sf

    from chordkd.labelling.label import label_corpus
    from chordkd.labelling.teacher_cache import TeacherCache

    audio = songs[0][0]
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "song.wav", audio, 22050)
    cpu = {"accelerator": "cpu", "devices": 1}
    first = label_corpus("madmom:cnn", tmp_path / "audio", tmp_path / "cache", num_workers=0,
                         trainer_kwargs=cpu)
    assert first.labelled == ["song"] and first.source == "madmom:cnn"
    cache = TeacherCache(tmp_path / "cache")
    entry = cache.entry("song")
    assert entry.teacher == cnn.identity and entry.teacher.startswith("madmom:cnn-")
    assert cache.n_classes == 25 and cache.frames("song") == cnn.grid.n_frames(len(audio))
    expected = cnn.logits(torch.from_numpy(audio)).argmax(1).numpy()
    np.testing.assert_array_equal(cache.read("song").best_class(), expected)
    again = label_corpus("madmom:cnn", tmp_path / "audio", tmp_path / "cache", num_workers=0,
                         trainer_kwargs=cpu)
    assert again.skipped == ["song"] and again.labelled == []


def test_evaluate_scores_the_argmax_and_crf_rows_of_one_teacher(songs, cnn, chordkd_crf, tmp_path):
    import soundfile as sf

    from chordkd.annotations import read_annotation, write_lab
    from chordkd.data.manifest import read_manifest
    from chordkd.evaluation.report import evaluate_models

    audio, intervals, labels, _ = songs[0]
    (tmp_path / "test").mkdir()
    sf.write(tmp_path / "test" / "song.wav", audio, 22050)
    write_lab(tmp_path / "test" / "song.lab", intervals, labels)
    result = evaluate_models({"teacher": cnn, "madmom-crf": cnn},
                             read_manifest(tmp_path / "test", require_labels=True),
                             tmp_path / "eval", decoding={"teacher": None, "madmom-crf": "crf"})
    meta = {name: m.meta for name, m in result.models.items()}
    assert meta["teacher"]["decoding"] == "argmax" and meta["madmom-crf"]["decoding"] == "crf"
    assert meta["teacher"]["checkpoint"] == "madmom:cnn"
    _, written = read_annotation(tmp_path / "eval" / "estimates" / "madmom-crf" / "song.lab")
    assert written == chordkd_crf[0].labels
