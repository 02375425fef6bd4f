"""TeacherDataModule: training windows joined with cached teacher outputs for the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chordkd.audio import load_audio
from chordkd.chords import QUALITIES, get_vocabulary
from chordkd.data.datamodule import TeacherDataModule
from chordkd.data.manifest import read_manifest
from chordkd.features import FeatureSettings, LogCQT
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter
from chordkd.training.losses import IGNORE

TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7)}


def template_teacher(features: torch.Tensor) -> torch.Tensor:
    """A transposition-equivariant 'teacher': chroma of the log-CQT matched to triad templates.

    ``features`` [T, 144] -> logits [T, 170]. Shifting the CQT by n semitones rolls the chroma,
    so its argmax moves by n semitones: what the data module's pitch shift must reproduce.
    """
    t = features.shape[0]
    chroma = features.exp().reshape(t, 6, 12, 2).sum(dim=(1, 3))
    chroma = chroma / chroma.sum(-1, keepdim=True)
    logits = torch.full((t, 170), -5.0)
    for root in range(12):
        for quality, steps in TRIADS.items():
            pcs = [(root + s) % 12 for s in steps]
            logits[:, root * 14 + QUALITIES.index(quality)] = 20 * chroma[:, pcs].sum(-1)
    return logits


@pytest.fixture(scope="module")
def cached_corpus(tone_corpus, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cqt, settings = LogCQT(), FeatureSettings()
    with CacheWriter(cache) as writer:
        for song in read_manifest(tone_corpus):
            logits = template_teacher(cqt(torch.from_numpy(load_audio(song.audio))))
            logz = torch.logsumexp(logits, -1)
            top = torch.topk(logits, 8, dim=-1)
            writer.write_logits(
                song.id, logz.numpy(), (top.values - logz[:, None]).numpy(), top.indices.numpy(),
                170, audio=AudioFingerprint.of(song.audio), teacher="template",
                features=settings.fingerprint(),
            )
    return tone_corpus, cache


def _window(dm: TeacherDataModule, index: int, shift: int) -> dict:
    item = dm.train_set[index]
    item["shift"] = torch.tensor(shift)
    return dm.on_after_batch_transfer({k: v[None] for k, v in item.items()}, 0)


def test_window_targets_are_the_cached_teacher_argmax_for_the_same_frames(cached_corpus):
    corpus, cache = cached_corpus
    dm = TeacherDataModule(str(corpus), teacher_cache=str(cache), pitch_shift=0, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    for i in range(len(dm.train_set)):
        batch = _window(dm, i, 0)
        own = template_teacher(batch["features"][0]).argmax(-1)
        valid = batch["labels"][0] != IGNORE
        assert torch.equal(batch["labels"][0][valid], own[valid])


@pytest.mark.parametrize("shift", [-5, -2, 3, 5])
def test_pitch_shift_transposes_the_teacher_as_it_shifts_the_features(cached_corpus, shift):
    corpus, cache = cached_corpus
    dm = TeacherDataModule(str(corpus), teacher_cache=str(cache), pitch_shift=5, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    agree, total = 0, 0
    for i in range(len(dm.train_set)):
        batch = _window(dm, i, shift)
        on_shifted = template_teacher(batch["features"][0]).argmax(-1)
        valid = batch["labels"][0] != IGNORE
        agree += int((batch["labels"][0][valid] == on_shifted[valid]).sum())
        total += int(valid.sum())
        # the cached top-K classes moved with the labels: top-1 index is the label
        best = batch["teacher_values"][0].float().argmax(-1)
        top1 = batch["teacher_indices"][0].gather(1, best[:, None])[:, 0]
        assert torch.equal(top1[valid], batch["labels"][0][valid])
    assert agree / total >= 0.95  # edges of the CQT range lose a little energy


def test_transposition_keeps_no_chord_and_other_fixed(cached_corpus):
    corpus, cache = cached_corpus
    dm = TeacherDataModule(str(corpus), teacher_cache=str(cache), pitch_shift=5, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    vocab = get_vocabulary("large")
    table = dm._transpose[3 + 12]
    assert int(table[vocab.n_index]) == vocab.n_index
    assert int(table[vocab.x_index]) == vocab.x_index
    assert sorted(table.tolist()) == list(range(vocab.size))
    assert np.array_equal(table.numpy(), vocab.transpose_index_map(3))
