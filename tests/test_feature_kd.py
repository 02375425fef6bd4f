"""Feature-space KD: the losses, the frame-rate pooling, the embeddings cache, the callback, a fit."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_tone_corpus

from chordkd.audio import load_audio
from chordkd.cli import main as cli
from chordkd.data.datasets import SongRecord
from chordkd.data.manifest import read_manifest
from chordkd.errors import CacheError, ConfigError
from chordkd.features import FeatureSettings, LogCQT
from chordkd.inference import song_logits
from chordkd.labelling.embeddings import (
    EMBEDDINGS,
    EmbeddingCache,
    HiddenLayer,
    embed_corpus,
    write_embedding,
)
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter, consolidate
from chordkd.models.loading import load_model
from chordkd.training.feature_kd import (
    PROJECTION,
    FeatureKD,
    cosine_loss,
    distance_matrix_loss,
    embedding_frames,
    pool_to_embedding_frames,
)
from chordkd.training.student import StudentModule

CPU = {"accelerator": "cpu", "devices": 1}
DT = FeatureSettings().frame_seconds  # 2048 / 22050 s per student frame


def all_valid(b: int, n: int) -> torch.Tensor:
    return torch.ones(b, n, dtype=torch.bool)


# -- losses -----------------------------------------------------------------------------------


def test_distance_matrix_loss_is_zero_for_identical_features():
    x = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(0))
    assert distance_matrix_loss(x, x.clone(), all_valid(2, 9)).item() == pytest.approx(0.0, abs=1e-6)


def test_distance_matrix_loss_ignores_scale_offset_rotation_and_width():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 12, 6, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    embedded = torch.cat([teacher @ rotation, torch.zeros(2, 12, 3)], -1)  # 9-dim student
    student = 7.5 * embedded + 3.0
    loss = distance_matrix_loss(student, teacher, all_valid(2, 12))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_distance_matrix_loss_is_positive_when_frames_are_permuted():
    teacher = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(2))
    student = teacher[:, torch.randperm(10, generator=torch.Generator().manual_seed(3))]
    assert distance_matrix_loss(student, teacher, all_valid(1, 10)).item() > 0.05


def test_distance_matrix_loss_skips_masked_frames_and_structureless_windows():
    g = torch.Generator().manual_seed(4)
    teacher = torch.randn(2, 8, 4, generator=g)
    student = teacher.clone()
    student[0, 6:] = 100 * torch.randn(2, 4, generator=g)  # garbage where the mask is off
    teacher[1] = 1.0  # window 1: all teacher frames alike, nothing to match
    student[1] = torch.randn(8, 4, generator=g)
    mask = all_valid(2, 8)
    mask[0, 6:] = False
    assert distance_matrix_loss(student, teacher, mask).item() == pytest.approx(0.0, abs=1e-5)


def test_distance_matrix_loss_matches_its_formula():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(1, 5, 3, generator=g), torch.randn(1, 5, 2, generator=g)
    ds, dt = torch.cdist(s[0], s[0]), torch.cdist(t[0], t[0])
    off = ~torch.eye(5, dtype=torch.bool)
    expected = ((ds / ds[off].mean() - dt / dt[off].mean())[off] ** 2).mean()
    torch.testing.assert_close(distance_matrix_loss(s, t, all_valid(1, 5)), expected,
                               rtol=1e-4, atol=1e-6)


def test_cosine_loss_is_zero_when_aligned_and_two_when_opposite():
    t = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(6))
    assert cosine_loss(3 * t, t, all_valid(1, 4)).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(-t, t, all_valid(1, 4)).item() == pytest.approx(2.0, abs=1e-6)


# -- frame rates ------------------------------------------------------------------------------


def test_equal_frame_rates_map_every_student_frame_to_itself():
    frames = torch.arange(0, 200_000, 7)
    assert torch.equal(embedding_frames(frames, DT, DT), frames)


def test_pooling_at_equal_rates_is_the_identity_up_to_the_song_end():
    feats = torch.randn(2, 6, 3)
    pooled = pool_to_embedding_frames(feats, torch.tensor([0, 40]), torch.tensor([50, 44]), DT, DT)
    torch.testing.assert_close(pooled.features[0], feats[0])
    torch.testing.assert_close(pooled.features[1, :4], feats[1, :4])
    assert pooled.features[1, 4:].abs().sum() == 0  # padding past the song's end is dropped
    assert pooled.index.tolist() == [list(range(0, 6)), list(range(40, 46))]
    assert pooled.mask.tolist() == [[True] * 6, [True] * 4 + [False] * 2]


def test_pooling_to_a_coarser_rate_averages_the_frames_centred_in_each_embedding_frame():
    # student frames every 0.25 s, embedding frames of 1 s centred at 0, 1, 2, ... s: frame j
    # holds student frames 4j-2 .. 4j+1. Window of 8 frames from frame 3: frames 3..10.
    feats = torch.arange(3, 11, dtype=torch.float32)[None, :, None]  # feature = frame number
    pooled = pool_to_embedding_frames(feats, torch.tensor([3]), torch.tensor([40]), 0.25, 1.0)
    assert pooled.index.tolist() == [[1, 2, 3]]
    assert pooled.features[0, :, 0].tolist() == [4.0, 7.5, 10.0]  # means of 3-5, 6-9, 10
    # embedding frames 1 (frame 2 lies before the window) and 3 (frame 11 after it) are cut
    assert pooled.mask.tolist() == [[False, True, False]]
    # at the song's end (11 frames) nothing lies after frame 10: embedding frame 3 is whole
    end = pool_to_embedding_frames(feats, torch.tensor([3]), torch.tensor([11]), 0.25, 1.0)
    assert end.mask.tolist() == [[False, True, True]]


def test_pooling_honours_the_embedding_offset():
    # frames spanning [j, j + 1) s (offset 0.5 s): frame j holds student frames 4j .. 4j+3
    feats = torch.arange(0, 8, dtype=torch.float32)[None, :, None]
    pooled = pool_to_embedding_frames(feats, torch.tensor([0]), torch.tensor([8]), 0.25, 1.0,
                                      offset_seconds=0.5)
    assert pooled.index.tolist() == [[0, 1]]
    assert pooled.features[0, :, 0].tolist() == [1.5, 5.5]
    assert pooled.mask.tolist() == [[True, True]]


# -- the embeddings cache ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(fixture_btc) -> Path:
    return fixture_btc / "checkpoint.pt"


@pytest.fixture(scope="module")
def two_songs(tmp_path_factory) -> Path:
    return write_tone_corpus(tmp_path_factory.mktemp("emb") / "audio", songs=2, seconds=5.0)


def embed(audio, out, **kw):
    return embed_corpus(audio, out, num_workers=0, trainer_kwargs=CPU, **kw)


@pytest.fixture(scope="module")
def embedded(teacher, two_songs) -> Path:
    """The teacher's embeddings of ``two_songs``, written once for the module."""
    out = two_songs.parent / "emb"
    embed(two_songs, out, teacher=teacher)
    return out


def test_teacher_embeddings_are_its_stitched_last_hidden_layer(teacher, two_songs, embedded):
    report = json.loads((embedded / "label_report.json").read_text())
    assert report["kind"] == EMBEDDINGS and report["labelled"] == ["tone_000", "tone_001"]
    cache = EmbeddingCache(embedded)
    loaded = load_model(teacher)
    cqt = LogCQT(loaded.features)
    assert cache.hop_seconds == DT and cache.offset_seconds == 0.0
    for song in cache.song_ids:
        feats = cqt(torch.from_numpy(load_audio(two_songs / f"{song}.wav")))
        hidden = song_logits(HiddenLayer(loaded.model), feats)  # [T, H]
        got = cache.read(song)
        assert got.dtype == np.float16 and got.shape == tuple(hidden.shape)
        np.testing.assert_allclose(got.astype(np.float32), hidden.numpy(), rtol=2e-3, atol=2e-3)


def test_embedding_rerun_embeds_only_new_songs(teacher, two_songs, tmp_path):
    songs = read_manifest(two_songs)
    first = embed(songs[:1], tmp_path / "emb", teacher=teacher)
    assert first.labelled == ["tone_000"]
    again = embed(two_songs, tmp_path / "emb", teacher=teacher)
    assert again.skipped == ["tone_000"] and again.labelled == ["tone_001"]
    assert EmbeddingCache(tmp_path / "emb").song_ids == ["tone_000", "tone_001"]


def test_logits_and_embeddings_share_a_cache_folder_without_clashing(
    teacher, two_songs, embedded, tmp_path
):
    from chordkd.labelling.label import label_corpus
    from chordkd.labelling.teacher_cache import TeacherCache

    shutil.copytree(embedded, tmp_path / "c")
    logits = label_corpus(teacher, two_songs, tmp_path / "c", num_workers=0, trainer_kwargs=CPU)
    assert logits.labelled == ["tone_000", "tone_001"]  # embeddings do not count as logits
    again = embed(two_songs, tmp_path / "c", teacher=teacher)
    assert again.labelled == [] and again.skipped == ["tone_000", "tone_001"]
    assert TeacherCache(tmp_path / "c").song_ids == EmbeddingCache(tmp_path / "c").song_ids


EMBEDDER = '''
import torch
from torch import nn


class BlockEnergy(nn.Module):
    """Log energy of 4 sample phases per 0.5-s block: [1, samples] -> [T', 4]."""

    hop_seconds = 0.5

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, wave):
        block = 11025
        n = wave.shape[-1] // block
        x = wave[0, : n * block].reshape(n, block // 5, 5)[..., :4]
        return self.scale * torch.log(x.square().mean(1) + 1e-6)


def build():
    return BlockEnergy()


def no_rate():
    return nn.Linear(2, 2)
'''


@pytest.fixture
def embedder(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_embedder.py").write_text(EMBEDDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_embedder"


def test_module_embeddings_are_cached_with_their_frame_period(embedder, two_songs, tmp_path):
    import my_embedder

    out = tmp_path / "emb"
    assert cli(["label", "--embedding-module", f"{embedder}:build", "--audio", str(two_songs),
                "--out", str(out), "--num-workers", "0", "--accelerator", "cpu"]) == 0
    cache = EmbeddingCache(out)
    assert (cache.hop_seconds, cache.offset_seconds, cache.dim) == (0.5, 0.0, 4)
    wave = torch.from_numpy(load_audio(two_songs / "tone_001.wav"))
    with torch.no_grad():
        expected = my_embedder.build()(wave[None]).numpy()
    assert cache.read("tone_001").shape == (10, 4)  # 5 s in 0.5-s frames
    np.testing.assert_allclose(cache.read("tone_001").astype(np.float32), expected, rtol=2e-3)


def test_module_without_a_frame_period_is_refused_naming_it(embedder, two_songs, tmp_path):
    with pytest.raises(ConfigError, match="no_rate.*hop_seconds"):
        embed(two_songs, tmp_path / "emb", module=f"{embedder}:no_rate")


# -- the callback -----------------------------------------------------------------------------


def synthetic_embeddings(folder: Path, songs: dict[str, int], dim: int, hop: float) -> Path:
    """Embeddings whose row j is (j, j, ..., j) + song number * 1000, written like the CLI does."""
    with CacheWriter(folder) as w:
        for n, (song, frames) in enumerate(songs.items()):
            values = np.repeat(np.arange(frames, dtype=np.float32)[:, None], dim, 1) + 1000 * n
            write_embedding(w, song, values, hop, audio=AudioFingerprint("0" * 40, 0, 0),
                            teacher="t", features="f")
    consolidate(folder)
    return folder


def attach(cb: FeatureKD, frames: dict[str, int], pitch_shift: int = 0) -> StudentModule:
    """Run ``cb.setup`` against a small BTC student and a data module stand-in."""
    songs = [SongRecord(id=s, n_samples=n * 2048, n_frames=n) for s, n in frames.items()]
    dm = SimpleNamespace(train_set=SimpleNamespace(songs=songs), pitch_shift=pitch_shift,
                         settings=FeatureSettings(), train_source="data/train")
    module = StudentModule(student="btc", size="small")
    cb.setup(SimpleNamespace(datamodule=dm), module, "fit")
    return module


def test_callback_reads_each_windows_own_embedding_frames(tmp_path):
    cache = synthetic_embeddings(tmp_path / "emb", {"a": 300, "b": 120}, dim=3, hop=DT)
    cb = FeatureKD(cache)
    attach(cb, {"a": 300, "b": 120})
    target, have = cb.teacher_windows(torch.tensor([1, 0]), torch.tensor([[110, 111, 112, 113],
                                                                          [5, 6, 7, 8]]))
    assert target[:, :, 0].tolist() == [[1110.0, 1111.0, 1112.0, 1113.0], [5.0, 6.0, 7.0, 8.0]]
    assert have.tolist() == [[True, True, True, True]] * 2  # song b's frames end at 119


def test_callback_adds_weighted_term_and_trains_its_projection(tmp_path):
    cache = synthetic_embeddings(tmp_path / "emb", {"a": 300}, dim=5, hop=DT)
    cb = FeatureKD(cache, weight=0.5)
    module = attach(cb, {"a": 300})
    projection = getattr(module, PROJECTION)
    assert (projection.in_features, projection.out_features) == (64, 5)  # small BTC -> embedding
    assert any(p is projection.weight for p in module.parameters())  # so the optimiser sees it
    hidden = torch.randn(2, 16, 64, requires_grad=True)
    batch = {"song": torch.tensor([0, 0]), "start": torch.tensor([0, 100])}
    logs: dict = {}
    total = cb.combine(module, batch, None, torch.tensor(1.0), logs, hidden=hidden)
    torch.testing.assert_close(total, 1.0 + 0.5 * logs["train/feature_kd_loss"])
    total.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert hidden.grad.abs().sum() > 0


def test_missing_songs_say_how_to_embed_them(tmp_path):
    cache = synthetic_embeddings(tmp_path / "emb", {"a": 50}, dim=2, hop=DT)
    with pytest.raises(CacheError, match=r"no embeddings for 1 of 2 .*chordkd label --embeddings"):
        attach(FeatureKD(cache), {"a": 50, "b": 60})


def test_embeddings_of_other_audio_are_refused(tmp_path):
    cache = synthetic_embeddings(tmp_path / "emb", {"a": 50}, dim=2, hop=DT)
    with pytest.raises(CacheError, match="'a' has 50 embedding frames"):
        attach(FeatureKD(cache), {"a": 80})


def test_cosine_loss_with_pitch_shift_is_refused(tmp_path):
    cache = synthetic_embeddings(tmp_path / "emb", {"a": 50}, dim=2, hop=DT)
    with pytest.raises(ConfigError, match="data.pitch_shift"):
        attach(FeatureKD(cache, loss="cosine"), {"a": 50}, pitch_shift=2)
    attach(FeatureKD(cache, loss="distance_matrix"), {"a": 50}, pitch_shift=2)  # allowed


def test_config_checks_feature_kd_keys():
    from test_training import EXPERIMENTS

    from chordkd.training.config import load_config

    with pytest.raises(ConfigError, match="feature_kd.cache"):
        load_config(EXPERIMENTS / "baseline.yaml", ["feature_kd.enabled=true"])
    with pytest.raises(ConfigError, match="feature_kd.loss"):
        load_config(EXPERIMENTS / "baseline.yaml", ["feature_kd.loss=l2"])
    with pytest.raises(ConfigError, match="data.pitch_shift"):
        load_config(EXPERIMENTS / "baseline.yaml", ["feature_kd.enabled=true", "feature_kd.cache=x",
                                                    "feature_kd.loss=cosine", "data.pitch_shift=3"])


# -- end to end -------------------------------------------------------------------------------


def logged(run: Path, key: str) -> list[float]:
    (metrics,) = Path(run).glob("csv/version_*/metrics.csv")
    with open(metrics) as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_fit_with_feature_kd_alone_and_with_logit_kd(teacher, tone_corpus, tmp_path):
    from test_training import tiny_config

    from chordkd.training.fit import fit

    emb, logits = tmp_path / "emb", tmp_path / "logits"
    assert cli(["label", "--embeddings", "--teacher", str(teacher), "--audio", str(tone_corpus),
                "--out", str(emb), "--num-workers", "0", "--accelerator", "cpu"]) == 0
    assert cli(["label", "--teacher", str(teacher), "--audio", str(tone_corpus), "--out",
                str(logits), "--num-workers", "0", "--accelerator", "cpu"]) == 0
    common = ("trainer.max_epochs=1", "feature_kd.enabled=true", f"feature_kd.cache={emb}",
              "data.pitch_shift=2", "trainer.log_every_n_steps=1")
    alone = fit(tiny_config(tone_corpus, tmp_path, *common, f"run_dir={tmp_path}/alone"))
    both = fit(tiny_config(tone_corpus, tmp_path, *common, f"run_dir={tmp_path}/both",
                           f"data.teacher_cache={logits}", "kd.enabled=true"))
    for summary in (alone, both):
        run = Path(summary["run_dir"])
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        weight = ckpt["state_dict"][f"{PROJECTION}.weight"]
        assert weight.shape == (128, 64)  # student (small BTC) 64 -> teacher hidden 128
        # the projection's parameters are the optimiser's last two, and Adam has moved them
        state = ckpt["optimizer_states"][0]["state"]
        n_params = len(ckpt["state_dict"]) - 2  # mean and std are buffers
        assert len(state) == n_params
        assert all(state[i]["exp_avg"].abs().sum() > 0 for i in (n_params - 2, n_params - 1))
        losses = logged(run, "train/feature_kd_loss_step")
        assert losses and all(math.isfinite(v) and v >= 0 for v in losses)
        # the exported network is the plain student: the projection stays behind
        exported = load_model(summary["best_checkpoint"]).model.state_dict()
        best = torch.load(summary["best_checkpoint"], weights_only=True)["state_dict"]
        student = {k[len("model."):]: v for k, v in best.items() if k.startswith("model.")}
        assert exported.keys() == student.keys()
        assert not any(k.startswith(PROJECTION) for k in exported)
        assert all(torch.equal(exported[k], student[k]) for k in student)
    assert logged(Path(both["run_dir"]), "train/kd_loss_step")
