"""Noisy student's joint training: every batch mixes ground-truth and pseudo-labelled windows.

The labelled corpus is a tone corpus (its .lab files use the chords of ``TONE_CHORDS``); the
pool is another one whose hand-made teacher cache names one chord, ``POOL_CHORD``, that no
.lab file uses, on every frame. A window's targets therefore say where it came from, whatever
the batch's ``labelled`` flag claims.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TONE_CHORDS, write_tone_corpus

from chordkd.chords import get_vocabulary
from chordkd.data.datamodule import ChordDataModule
from chordkd.data.manifest import read_manifest
from chordkd.errors import ConfigError
from chordkd.features import FeatureSettings
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter
from chordkd.training.config import load_config
from chordkd.training.losses import IGNORE

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
POOL_CHORD = "C#:aug"
NOISE = {"time_masks": 1, "time_mask_width": 6, "freq_masks": 1, "freq_mask_width": 6}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(labelled corpus of 2 songs, pool of 5 songs, the pool's teacher cache)."""
    root = tmp_path_factory.mktemp("mixing")
    labelled = write_tone_corpus(root / "labelled", songs=2, seconds=12.0, seed=0)
    pool = write_tone_corpus(root / "pool", songs=5, seconds=12.0, seed=1)
    cache, settings = root / "cache", FeatureSettings()
    target = get_vocabulary("large").encode(POOL_CHORD)
    with CacheWriter(cache) as writer:
        for song in read_manifest(pool):
            frames = settings.n_frames(sf.info(song.audio).frames)
            logits = torch.zeros(frames, 170)
            logits[:, target] = 6.0  # top probability ~0.7
            values, indices = logits.log_softmax(-1).topk(8, dim=-1)
            writer.write_logits(song.id, np.zeros(frames, np.float32), values.numpy(),
                                indices.numpy(), 170, audio=AudioFingerprint.of(song.audio),
                                teacher="hand-made", features=settings.fingerprint())
    return labelled, pool, cache


def _module(corpora, ratio: float = 0.25, batch_size: int = 8, seed: int = 0,
            pitch_shift: int = 0, noise: dict | None = None) -> ChordDataModule:
    labelled, pool, cache = corpora
    dm = ChordDataModule(str(pool), targets="teacher", teacher_cache=str(cache),
                         labelled=str(labelled), labelled_ratio=ratio, batch_size=batch_size,
                         pitch_shift=pitch_shift, seed=seed, noise=noise)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _source(labels: torch.Tensor) -> str:
    """'pool' or 'labelled', from a window's targets alone."""
    vocab = get_vocabulary("large")
    classes = set(labels[labels != IGNORE].tolist())
    if classes == {vocab.encode(POOL_CHORD)}:
        return "pool"
    assert classes <= {vocab.encode(c) for c in TONE_CHORDS}, classes
    return "labelled"


def _epoch(dm: ChordDataModule) -> list[dict]:
    return list(dm.train_dataloader())


@pytest.mark.parametrize("ratio,batch_size,per_batch", [(0.25, 8, 2), (0.5, 6, 3), (0.1, 8, 1)])
def test_every_batch_holds_the_stated_share_of_ground_truth_windows(
    corpora, ratio, batch_size, per_batch
):
    dm = _module(corpora, ratio, batch_size)
    batches = _epoch(dm)
    pool_windows = len(dm.pool_set)
    # enough batches to draw every pool window once (the labelled songs are cycled)
    assert len(batches) == max(math.ceil(pool_windows / (batch_size - per_batch)),
                               math.ceil(len(dm.labelled_set) / per_batch))
    for batch in batches:
        sources = [_source(labels) for labels in batch["labels"]]
        assert len(sources) == batch_size
        assert sources.count("labelled") == per_batch
        assert batch["labelled"].tolist() == [s == "labelled" for s in sources]


def test_labelled_windows_carry_their_songs_ground_truth_and_pool_windows_the_pseudo_labels(
    corpora,
):
    labelled, pool, _ = corpora
    dm = _module(corpora)
    vocab, hop, sr = get_vocabulary("large"), dm.settings.hop, dm.settings.sr
    lab_files = {song.id: Path(song.labels) for song in read_manifest(labelled)}
    seen_pool: set[tuple[int, int]] = set()
    for batch in _epoch(dm):
        for j in range(len(batch["labels"])):
            song, start = int(batch["song"][j]), int(batch["start"][j])
            labels = batch["labels"][j].numpy()
            if not batch["labelled"][j]:
                assert (labels == vocab.encode(POOL_CHORD)).all()
                seen_pool.add((song, start))
                continue
            # the .lab line covering each frame's centre, read from the file itself
            lab = lab_files[dm.labelled_set.songs[song].id]
            rows = [line.split("\t") for line in lab.read_text().splitlines()]
            for i in range(0, len(labels), 9):
                t = (start + i + 0.5) * hop / sr
                name = next(n for a, b, n in rows if float(a) <= t < float(b))
                assert labels[i] == vocab.encode(name), (lab, t)
    # one epoch drew every pool song
    assert {song for song, _ in seen_pool} == set(range(len(read_manifest(pool))))


def test_pitch_shift_and_masks_apply_to_windows_of_both_sources(corpora):
    dm = _module(corpora, pitch_shift=5, noise=NOISE)
    batches = _epoch(dm)
    for source in (True, False):
        shifts = torch.cat([b["shift"][b["labelled"] == source] for b in batches])
        widths = torch.cat([b["time_masks"][b["labelled"] == source][..., 1] for b in batches])
        assert len(set(shifts.tolist())) > 1 and (widths > 0).any()
    batch = batches[0]
    pool_class = get_vocabulary("large").encode(POOL_CHORD)
    shift = batch["shift"].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["features"].shape == (8, dm.window, dm.settings.n_bins)
    for j in np.flatnonzero(~out["labelled"].numpy()):  # pool targets move with the audio
        expected = dm.vocab.transpose_index_map(int(shift[j]))[pool_class]
        assert (out["labels"][j] == expected).all()


def test_mixed_batches_depend_on_the_seed_and_epoch_alone(corpora):
    def starts(dm, epoch):
        dm.train_set.set_epoch(epoch)
        return [torch.stack([dm.train_set[i]["start"], dm.train_set[i]["shift"]]).tolist()
                for i in range(len(dm.train_set))]

    first, again = _module(corpora, pitch_shift=5), _module(corpora, pitch_shift=5)
    assert starts(first, 3) == starts(again, 3)  # what a resumed run draws for epoch 3
    assert starts(first, 3) != starts(first, 4)
    assert starts(first, 3) != starts(_module(corpora, pitch_shift=5, seed=1), 3)


def test_a_distributed_sampler_hands_each_rank_whole_mixed_batches(corpora):
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from lightning.pytorch.utilities.data import _update_dataloader

    dm = _module(corpora, ratio=0.25, batch_size=4)
    loader = dm.train_dataloader()
    whole = {tuple(b["start"].tolist() + b["song"].tolist()) for b in loader}
    ranks = []
    for rank in (0, 1):  # what Lightning injects under DDP with 2 processes
        sampler = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0,
                                           num_replicas=2, rank=rank)
        ranks.append(list(_update_dataloader(loader, sampler)))
    for batches in ranks:
        assert batches and all(int(b["labelled"].sum()) == 1 and len(b["labels"]) == 4
                               for b in batches)
    seen = {tuple(b["start"].tolist() + b["song"].tolist()) for batches in ranks for b in batches}
    assert seen == whole


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.25])
def test_a_labelled_ratio_outside_0_1_is_a_one_line_config_error_naming_the_key(ratio):
    with pytest.raises(ConfigError) as e:
        load_config(EXPERIMENTS / "noisy_student.yaml",
                    [f"data.labelled_ratio={ratio}"])
    assert "data.labelled_ratio" in str(e.value) and "\n" not in str(e.value)


def test_a_ratio_that_leaves_a_batch_without_one_source_is_a_config_error():
    with pytest.raises(ConfigError, match="data.labelled_ratio.*data.batch_size=16"):
        load_config(EXPERIMENTS / "noisy_student.yaml", ["data.labelled_ratio=0.02"])


def test_mixing_needs_pseudo_labelled_train_data_and_hard_targets():
    with pytest.raises(ConfigError, match="data.labelled.*data.targets=teacher"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.labelled=data/demo/train"])
    with pytest.raises(ConfigError, match="data.labelled.*kd"):
        load_config(EXPERIMENTS / "noisy_student.yaml", ["kd.enabled=true"])


def test_the_recipe_mixes_a_quarter_of_ground_truth_and_stops_early_on_validation():
    cfg = load_config(EXPERIMENTS / "noisy_student.yaml")
    assert cfg.data.labelled and cfg.data.labelled_ratio == 0.25
    assert cfg.data.valid and cfg.checkpoint.patience > 0
    assert 0 < cfg.trainer.min_epochs < cfg.trainer.max_epochs
    assert cfg.data.noise.time_masks > 0 and cfg.data.pitch_shift > 0
