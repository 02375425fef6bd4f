"""The benchmark harness measures what it says: same windows on both data paths, real
training steps, interleaved rounds, verdicts that can fail. No timings are asserted here."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURE_BTC, needs_fixture

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import data_path  # noqa: E402
import run_all  # noqa: E402
import training_speed  # noqa: E402

from chordkd.data.datasets import CONTEXT  # noqa: E402
from chordkd.data.manifest import read_manifest, write_manifest  # noqa: E402
from chordkd.features import LogCQT  # noqa: E402

TEACHER = FIXTURE_BTC / "checkpoint.pt"


@pytest.fixture()
def tone_manifest(tone_corpus: Path, tmp_path: Path) -> Path:
    """The tone corpus as an unlabelled manifest."""
    rows = [{"id": s.id, "audio": str(s.audio), "labels": ""} for s in read_manifest(tone_corpus)]
    path = tmp_path / "base" / "manifest.csv"
    path.parent.mkdir()
    write_manifest(path, rows)
    return path


def test_replicated_manifest_repeats_every_song_under_new_ids(tone_manifest: Path, tmp_path: Path):
    out = tmp_path / "x3" / "manifest.csv"
    ids = data_path.replicate_manifest(tone_manifest, out, 3)
    songs = read_manifest(out)
    base = read_manifest(tone_manifest)
    assert sorted(s.id for s in songs) == sorted(ids)
    assert len(set(ids)) == 3 * len(base)
    assert {Path(s.audio).resolve() for s in songs} == {Path(s.audio).resolve() for s in base}
    assert all(s.labels is None for s in songs)


@needs_fixture
def test_online_window_features_match_the_cached_path_features(tone_manifest: Path):
    online = data_path.OnlinePath(tone_manifest, str(TEACHER), batch_size=2, device=torch.device("cpu"))
    song = online.songs[0]
    f0 = 10
    theirs = online._features(song, f0)
    # what WindowDataset + on_after_batch_transfer compute for the same window
    hop = online.settings.hop
    audio = np.zeros((f0 + 108 + CONTEXT) * hop - (f0 - CONTEXT) * hop, dtype=np.float32)
    import soundfile as sf

    samples, _ = sf.read(song.path, dtype="float32")
    seg = samples[(f0 - CONTEXT) * hop : (f0 + 108 + CONTEXT) * hop]
    audio[: len(seg)] = seg
    with torch.inference_mode():
        ours = LogCQT(online.settings)(torch.from_numpy(audio)).numpy()[CONTEXT : CONTEXT + 108]
    assert ours.shape == theirs.shape == (108, 144)
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.95
    loud = theirs > np.log(1e-3)  # compare where there is signal, not the noise floor
    assert np.median(np.abs(ours[loud] - theirs[loud])) < 0.05


@needs_fixture
def test_offline_peer_windows_match_the_online_peers_windows(tone_manifest: Path, tmp_path: Path):
    # two code paths to the same frames: whole-song CQT stored once vs one CQT per window
    from offline_path import OfflinePath

    dev = torch.device("cpu")
    offline = OfflinePath(tone_manifest, tmp_path / "features", str(TEACHER), batch_size=2, device=dev)
    prep = offline.prepare()
    online = data_path.OnlinePath(tone_manifest, str(TEACHER), batch_size=2, device=dev)
    f0 = 20
    stored = np.asarray(offline.features[0][f0 : f0 + 108])
    per_window = online._features(online.songs[0], f0)
    loud = per_window > np.log(1e-3)
    assert np.median(np.abs(stored[loud] - per_window[loud])) < 0.05
    assert prep["stored_bytes_per_audio_hour_with_btc_pitch_shifts"] == 12 * prep["stored_bytes_per_audio_hour"]


@needs_fixture
def test_offline_peer_reads_stored_windows_and_their_teacher_targets(tone_manifest: Path, tmp_path: Path):
    from offline_path import OfflinePath

    offline = OfflinePath(tone_manifest, tmp_path / "features", str(TEACHER), batch_size=3,
                          device=torch.device("cpu"))
    offline.prepare()
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2 * len(offline.songs)
    windows, read_s, move_s = offline.batch()
    assert windows == 3 and read_s > 0 and move_s >= 0


@needs_fixture
def test_online_batch_labels_every_window_with_the_teacher(tone_manifest: Path):
    online = data_path.OnlinePath(tone_manifest, str(TEACHER), batch_size=2, device=torch.device("cpu"))
    calls = []
    teacher = online.teacher

    def recording(x):
        out = teacher(x)
        calls.append((x.clone(), out))
        return out

    online.teacher = recording
    replay = copy.deepcopy(online.rng)  # the same draws of songs and window starts
    windows, prepare_s, teacher_s = online.batch()
    (x, logits), = calls  # one teacher forward for the whole batch
    expected = []
    for _ in range(windows):
        song = online.songs[int(replay.integers(len(online.songs)))]
        f0 = int(replay.integers(max(song.n_frames - 108, 0) + 1))
        expected.append(online._features(song, f0))
    assert windows == 2
    np.testing.assert_array_equal(x.numpy(), np.stack(expected))  # every window, its own frames
    assert logits.shape == (2, 108, 170) and torch.isfinite(logits).all()
    assert prepare_s > 0 and teacher_s > 0


def test_timed_rounds_interleaves_runners_and_keeps_the_best_round():
    calls: list[str] = []

    def runner(name: str, windows: int):
        def run():
            calls.append(name)
            return windows, 0.0, 0.0
        return run

    rows = data_path.timed_rounds({"a": runner("a", 4), "b": runner("b", 2)}, {"a": 2, "b": 1}, rounds=2)
    assert calls == ["a", "b", "a", "a", "b", "a", "a", "b"]  # warm-ups, then round by round
    for name, per_round in (("a", 8), ("b", 2)):
        assert len(rows[name]["rounds_windows_per_second"]) == 2
        assert rows[name]["windows"] == per_round
        assert rows[name]["windows_per_second"] == max(rows[name]["rounds_windows_per_second"])


@pytest.mark.parametrize("precision", training_speed.PRECISIONS)
def test_train_step_updates_the_weights(precision: str):
    step, model = training_speed.make_train_step("btc", "small", batch=2, precision=precision)
    before = [p.detach().clone() for p in model.parameters()]
    step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed == len(before)


def test_train_step_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        training_speed.make_train_step("btc", "small", batch=2, precision="16-true")


def _result(speedup: float, ratio_online: float, ratio_train: float, labelling: float,
            rate_ratio: float, growth: int, lever: float) -> dict:
    return {
        "cqt": {"cpu": {"speedup": speedup}},
        "data_path": {"cpu": {"cached_over_online": ratio_online, "cached_over_train_step": ratio_train}},
        "labelling": {"runs": {"cpu": {"end_to_end_x_real_time": labelling}}},
        "scaling": {"rate_ratio_16x_over_1x": rate_ratio, "rss_anon_16x_minus_1x_bytes": growth},
        "levers": {"runs": [{"device": "cpu", "student": "btc", "size": "base", "rows": {
            "eager": {"lever": "eager", "over_eager": 1.0},
            "adamw fused": {"lever": "adamw fused", "over_eager": lever},
            "batch 64": {"lever": "batch 64", "over_eager": 99.0}}}]},  # changes training: never counts
    }


def test_verdicts_hold_only_at_or_above_each_threshold():
    passing = run_all.verdicts(_result(20.0, 10.0, 2.0, 200.0, 0.8, 0, lever=1.3))
    assert all(v["holds"] for v in passing)
    failing = run_all.verdicts(_result(0.2, 1.5, 1.9, 150.0, 0.5, 2**30, lever=1.29))
    assert not any(v["holds"] for v in failing)


def test_a_bitwise_equal_wait_policy_counts_as_a_lever_that_keeps_the_results():
    r = _result(20.0, 10.0, 2.0, 200.0, 0.8, 0, lever=1.0)
    r["levers"]["wait_policy"] = [{"student": "btc", "passive_over_default": 2.0, "bitwise_equal": True}]
    (row,) = [v for v in run_all.verdicts(r) if "btc-base" in v["target"]]
    assert row["holds"] and "OMP_WAIT_POLICY" in row["target"]
    r["levers"]["wait_policy"][0]["bitwise_equal"] = False  # results changed: not a candidate
    (row,) = [v for v in run_all.verdicts(r) if "btc-base" in v["target"]]
    assert not row["holds"]


def test_the_data_path_training_step_is_the_training_tables_measurement():
    training_row = {"windows_per_second": 2.0, "frames_per_second_min": 108.0,
                    "frames_per_second_max": 432.0, "steps": 5}
    dp = {"cached": {"windows_per_second": 100.0}, "windows_per_audio_hour": 720.0}
    data_path.join_train_step(dp, training_row)
    assert dp["train_step"]["windows_per_second"] == 2.0
    assert (dp["train_step"]["windows_per_second_min"], dp["train_step"]["windows_per_second_max"]) == (1.0, 4.0)
    assert dp["cached_over_train_step"] == 50.0 and dp["stage1_epoch_bound_by"] == "training step"
    assert dp["train_step"]["epoch_hours_for_1000h"] == pytest.approx(720 * 1000 / 2.0 / 3600)


def test_memory_status_reports_heap_and_mapped_file_pages():
    mem = data_path.memory_status()
    assert mem["RssAnon"] > 0 and mem["RssFile"] > 0
    assert mem["VmRSS"] == pytest.approx(mem["RssAnon"] + mem["RssFile"], rel=0.2)
