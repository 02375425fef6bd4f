"""Streamed stage-1 corpora (litdata): the windows the memory-mapped path would read,
split across ranks, shuffled per epoch, and resumable mid-epoch with the same order."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tone_corpus
from litdata import StreamingDataLoader

from chordkd.data.audio_cache import AudioCache
from chordkd.data.datamodule import cache_folder
from chordkd.data.datasets import CONTEXT
from chordkd.data.streaming import StreamedWindows, write_stream
from chordkd.errors import ChordkdError, ConfigError
from chordkd.features import FeatureSettings
from chordkd.labelling.label import label_corpus
from chordkd.labelling.teacher_cache import TeacherCache
from chordkd.training.config import load_config

WINDOW = 27  # small windows: 15 items in 3 twelve-second songs, about 2 per chunk
SETTINGS = FeatureSettings()
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def stream(fixture_btc, tmp_path_factory) -> Path:
    """(root): ``audio/`` (3 songs of 12 s), ``cache/`` (the teacher's), ``stream/``."""
    root = tmp_path_factory.mktemp("stream")
    write_tone_corpus(root / "audio", songs=3, seconds=12.0)
    label_corpus(fixture_btc / "checkpoint.pt", root / "audio", root / "cache", num_workers=0,
                 trainer_kwargs={"accelerator": "cpu", "devices": 1})
    write_stream(root / "audio", root / "cache", str(root / "stream"), window=WINDOW,
                 chunk_bytes="400KB")
    return root


def windows(root: Path, **kw) -> StreamedWindows:
    return StreamedWindows(str(root / "stream"), SETTINGS, WINDOW, **kw)


def order(loader) -> list[tuple[int, int]]:
    return [(int(s), int(f)) for b in loader for s, f in zip(b["song"], b["start"])]


def test_stream_items_are_the_windows_of_the_audio_and_teacher_caches(stream):
    audio = AudioCache(cache_folder(stream / "audio"))
    teacher = TeacherCache(stream / "cache")
    songs = sorted(audio.songs)
    ds = windows(stream, shuffle=False)
    seen = set()
    hop = SETTINGS.hop
    for i in range(len(ds)):
        item = ds[i]
        song, f0 = songs[int(item["song"])], int(item["start"])
        seen.add((song, f0))
        expected = audio.samples(song, (f0 - CONTEXT) * hop, (f0 + WINDOW + CONTEXT) * hop)
        np.testing.assert_allclose(item["audio"].numpy(), expected, atol=1e-7)
        out = teacher.read(song)
        assert item["labels"].tolist() == out.best_class()[f0 : f0 + WINDOW].tolist()
        np.testing.assert_array_equal(item["teacher_values"].numpy(), out.values[f0 : f0 + WINDOW])
        np.testing.assert_array_equal(item["teacher_logz"].numpy(), out.logz[f0 : f0 + WINDOW])
        assert item["shift"] == 0
    # each song tiled by hand: every 27 frames, the last window ending at the song's end
    n = SETTINGS.n_frames(audio.length(songs[0]))
    tiling = sorted({*range(0, n - WINDOW + 1, WINDOW), n - WINDOW})
    assert seen == {(s, f) for s in songs for f in tiling}


def test_shuffled_order_is_a_function_of_seed_and_epoch(stream):
    first = StreamingDataLoader(windows(stream, seed=3), batch_size=4)
    again = StreamingDataLoader(windows(stream, seed=3), batch_size=4)
    epoch1, epoch2 = order(first), order(first)  # the loader counts its epochs
    assert epoch1 == order(again) and sorted(epoch1) == sorted(epoch2)
    assert epoch1 != epoch2


def test_loader_state_resumes_mid_epoch_with_the_same_order(stream):
    whole = order(StreamingDataLoader(windows(stream, seed=5), batch_size=2))
    loader = StreamingDataLoader(windows(stream, seed=5), batch_size=2)
    seen = []
    for i, batch in enumerate(loader):
        seen += [(int(s), int(f)) for s, f in zip(batch["song"], batch["start"])]
        if i == 2:
            state = loader.state_dict()  # what Lightning saves in a mid-epoch checkpoint
            break
    resumed = StreamingDataLoader(windows(stream, seed=5), batch_size=2)
    resumed.load_state_dict(state)
    assert seen + order(resumed) == whole


def test_pitch_shifts_are_drawn_per_window_and_epoch(stream):
    loader = StreamingDataLoader(windows(stream, max_shift=5, shuffle=False), batch_size=15)
    [first], [second] = list(loader), list(loader)  # one batch per epoch
    assert first["shift"].abs().max() <= 5 and len(set(first["shift"].tolist())) > 3
    assert not torch.equal(first["shift"], second["shift"])


def _read_as_rank(rank: int, root: str, init: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ds = StreamedWindows(f"{root}/stream", SETTINGS, WINDOW, seed=1)
        results.put((rank, order(StreamingDataLoader(ds, batch_size=2))))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_read_disjoint_shares_that_cover_the_stream(stream, tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    init = f"file://{tmp_path}/rendezvous"
    procs = [ctx.Process(target=_read_as_rank, args=(r, str(stream), init, results))
             for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = dict(results.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    everything = set(order(StreamingDataLoader(windows(stream, shuffle=False), batch_size=4)))
    assert got[0] and got[1] and not set(got[0]) & set(got[1])
    assert set(got[0]) | set(got[1]) == everything


def test_a_folder_that_is_not_a_stream_is_refused_naming_it(tmp_path):
    with pytest.raises(ChordkdError, match=str(tmp_path)):
        StreamedWindows(str(tmp_path), SETTINGS, WINDOW)


def test_stream_format_needs_a_stream_and_teacher_targets():
    with pytest.raises(ConfigError, match="data.stream"):
        load_config(EXPERIMENTS / "stage1.yaml", ["data.format=stream"])
    with pytest.raises(ConfigError, match="data.targets=teacher"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.format=stream", "data.stream=s"])


class SeenBatches:
    """Records the (song, start) of every training window, in order, into ``self.seen``."""

    def __init__(self) -> None:
        import lightning as L

        class _Probe(L.Callback):
            def on_train_batch_start(probe, trainer, pl_module, batch, batch_idx):
                self.seen += [(int(s), int(f)) for s, f in zip(batch["song"], batch["start"])]

        self.seen: list[tuple[int, int]] = []
        self.callback = _Probe()


def stage1(root: Path, run: Path, *extra: str):
    return load_config(EXPERIMENTS / "stage1.yaml", [
        "data.format=stream", f"data.stream={root / 'stream'}", f"data.train={root / 'audio'}",
        f"data.valid={root / 'audio'}", "data.valid_targets=labels", "data.valid_holdout=0",
        "data.test=null", f"data.window={WINDOW}",
        "data.batch_size=2", "data.stats_songs=4", "model.size=small", "logger.kind=csv",
        "checkpoint.patience=0", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "optim.schedule=constant", "optim.warmup_steps=0", f"run_dir={run}", *extra])


@pytest.mark.slow
def test_stage1_resumed_mid_epoch_sees_the_rest_of_the_epoch_in_order(stream, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from chordkd.training.fit import fit

    whole = SeenBatches()
    every_2 = ModelCheckpoint(dirpath=tmp_path / "mid", every_n_train_steps=2, save_top_k=-1,
                              filename="step{step}", auto_insert_metric_name=False)
    summary = fit(stage1(stream, tmp_path / "a"), callbacks=[whole.callback, every_2])
    assert summary["train_windows"] == 15 and summary["global_step"] == 8
    assert sorted(whole.seen) == sorted(set(whole.seen))  # each window once per epoch
    rest = SeenBatches()
    resumed = fit(stage1(stream, tmp_path / "b", f"resume={tmp_path}/mid/step4.ckpt"),
                  callbacks=[rest.callback])
    assert resumed["global_step"] == 8
    assert rest.seen == whole.seen[8:]  # 4 steps of 2 windows done, the other 7 as before
