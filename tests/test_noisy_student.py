"""Noisy student: SpecAugment masks, pseudo-label confidence filtering, and the rounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from chordkd.data.datamodule import LabelledDataModule, TeacherDataModule
from chordkd.data.datasets import SpecAugment, apply_masks, confident_fraction
from chordkd.data.manifest import read_manifest
from chordkd.errors import CacheError, ConfigError
from chordkd.features import FLOOR, FeatureSettings
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter, TeacherCache
from chordkd.training.config import load_config
from chordkd.training.losses import IGNORE
from chordkd.training.noisy_student import (
    _Provenance,
    check_growth,
    labels_digest,
    noisy_student,
    parse_sizes,
    round_config,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
NOISE = {"time_masks": 2, "time_mask_width": 12, "freq_masks": 2, "freq_mask_width": 10,
         "mask_value": "mean"}


# -- SpecAugment masks ------------------------------------------------------------------------


def test_drawn_masks_have_their_counts_and_stay_inside_the_window_within_their_widths():
    aug = SpecAugment(time_masks=3, time_mask_width=12, freq_masks=2, freq_mask_width=20)
    rng = np.random.default_rng(0)
    widths = []
    for _ in range(200):
        time_masks, freq_masks = aug.draw(rng, frames=108, bins=144)
        assert time_masks.shape == (3, 2) and freq_masks.shape == (2, 2)
        for spans, max_width, size in ((time_masks, 12, 108), (freq_masks, 20, 144)):
            start, width = spans[:, 0], spans[:, 1]
            assert ((0 <= width) & (width <= max_width)).all()
            assert ((0 <= start) & (start + width <= size)).all()
        widths += list(time_masks[:, 1])
    assert min(widths) == 0 and max(widths) == 12  # the whole range 0..max is drawn


def test_a_mask_wider_than_the_window_is_clipped_to_it():
    time_masks, _ = SpecAugment(time_masks=50, time_mask_width=500).draw(
        np.random.default_rng(1), frames=8, bins=144)
    assert (time_masks[:, 0] + time_masks[:, 1] <= 8).all()


def test_masks_fill_exactly_their_cells_with_the_window_mean():
    feats = torch.randn(2, 10, 6)
    time_masks = torch.tensor([[[2, 3], [0, 0]], [[9, 1], [4, 0]]])  # (start, width) in frames
    freq_masks = torch.tensor([[[5, 1]], [[0, 0]]])  # in bins
    out = apply_masks(feats, time_masks, freq_masks, "mean")
    expected = feats.clone()
    expected[0, 2:5, :] = feats[0].mean()
    expected[0, :, 5] = feats[0].mean()
    expected[1, 9, :] = feats[1].mean()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_floor_masks_are_silence():
    feats = torch.zeros(1, 4, 3)
    out = apply_masks(feats, torch.tensor([[[1, 2]]]), torch.zeros(1, 0, 2, dtype=torch.long),
                      "floor")
    assert (out[0, 1:3] == FLOOR).all() and (out[0, [0, 3]] == 0).all()


def _module(corpus: Path, noise: dict | None, seed: int = 0) -> LabelledDataModule:
    dm = LabelledDataModule(str(corpus), pitch_shift=5, batch_size=4, seed=seed, noise=noise)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _batch(dm, indices: list[int]) -> dict:
    items = [dm.train_set[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_masks_are_deterministic_for_seed_epoch_and_window_and_change_with_them(tone_corpus):
    dm = _module(tone_corpus, NOISE)
    first = [dm.train_set[i]["time_masks"] for i in range(len(dm.train_set))]
    again = [dm.train_set[i]["time_masks"] for i in range(len(dm.train_set))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    dm.train_set.set_epoch(1)
    next_epoch = [dm.train_set[i]["time_masks"] for i in range(len(dm.train_set))]
    other_seed = _module(tone_corpus, NOISE, seed=1)
    reseeded = [other_seed.train_set[i]["time_masks"] for i in range(len(dm.train_set))]
    assert not all(torch.equal(a, b) for a, b in zip(first, next_epoch))
    assert not all(torch.equal(a, b) for a, b in zip(first, reseeded))


def test_noise_is_off_by_default(tone_corpus):
    item = _module(tone_corpus, None).train_set[0]
    assert "time_masks" not in item and "freq_masks" not in item


def test_masks_apply_after_the_pitch_shift_and_leave_labels_untouched(tone_corpus):
    clean_dm, noisy_dm = _module(tone_corpus, None), _module(tone_corpus, NOISE)
    indices = list(range(min(4, len(clean_dm.train_set))))
    clean = clean_dm.on_after_batch_transfer(_batch(clean_dm, indices), 0)
    raw = _batch(noisy_dm, indices)
    assert (raw["shift"] != 0).any(), "pick windows with a pitch shift"
    time_masks, freq_masks = raw["time_masks"].clone(), raw["freq_masks"].clone()
    noisy = noisy_dm.on_after_batch_transfer(raw, 0)
    # masks draw from their own stream: same windows, same shifts, same labels as without noise
    assert torch.equal(noisy["labels"], clean["labels"])
    expected = apply_masks(clean["features"], time_masks, freq_masks, "mean")
    torch.testing.assert_close(noisy["features"], expected, rtol=0, atol=0)
    assert not torch.equal(noisy["features"], clean["features"])
    assert "time_masks" not in noisy and "freq_masks" not in noisy


# -- pseudo-label confidence -----------------------------------------------------------------


@pytest.fixture(scope="module")
def half_confident_cache(tone_corpus, tmp_path_factory):
    """A teacher cache for the tone corpus whose top probability alternates per frame:
    0.9 on even frames, 0.2 on odd ones; the top class is ``frame % 170``."""
    cache = tmp_path_factory.mktemp("confidence")
    settings = FeatureSettings()
    with CacheWriter(cache) as writer:
        for song in read_manifest(tone_corpus):
            frames = settings.n_frames(sf.info(song.audio).frames)
            top = np.where(np.arange(frames) % 2 == 0, 0.9, 0.2)
            probs = np.tile((1 - top)[:, None] / 169, (1, 170))
            probs[np.arange(frames), np.arange(frames) % 170] = top
            log_probs = torch.from_numpy(np.log(probs)).float()
            values, indices = log_probs.topk(8, dim=-1)
            writer.write_logits(song.id, np.zeros(frames, np.float32), values.numpy(),
                                indices.numpy(), 170, audio=AudioFingerprint.of(song.audio),
                                teacher="hand-made", features=settings.fingerprint())
    return cache


def _teacher_module(corpus, cache, min_confidence: float) -> TeacherDataModule:
    dm = TeacherDataModule(str(corpus), teacher_cache=str(cache), pitch_shift=0, batch_size=2,
                           noise={"min_confidence": min_confidence})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_low_confidence_frames_become_ignore(tone_corpus, half_confident_cache):
    dm = _teacher_module(tone_corpus, half_confident_cache, 0.5)
    for i in range(len(dm.train_set)):
        item = dm.train_set[i]
        frame = item["start"].item() + np.arange(len(item["labels"]))
        in_song = frame < dm.train_set.songs[item["song"].item()].n_frames
        labels = item["labels"].numpy()
        assert (labels[in_song & (frame % 2 == 1)] == IGNORE).all()
        confident = in_song & (frame % 2 == 0)
        assert (labels[confident] == frame[confident] % 170).all()


def test_no_threshold_keeps_every_pseudo_label(tone_corpus, half_confident_cache):
    dm = _teacher_module(tone_corpus, half_confident_cache, 0.0)
    item = dm.train_set[0]
    assert (item["labels"] != IGNORE).all()
    assert dm.pseudo_labels_kept == 1.0


def test_the_fraction_of_pseudo_labels_kept_is_counted(tone_corpus, half_confident_cache):
    dm = _teacher_module(tone_corpus, half_confident_cache, 0.5)
    frames = sum(s.n_frames for s in dm.train_set.songs)
    even = sum((s.n_frames + 1) // 2 for s in dm.train_set.songs)
    assert dm.pseudo_labels_kept == pytest.approx(even / frames)
    cache = TeacherCache(half_confident_cache)
    assert confident_fraction(cache, cache.song_ids, 0.95) == 0.0


def test_min_confidence_needs_teacher_targets():
    with pytest.raises(ConfigError, match="data.noise.min_confidence"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.noise.min_confidence=0.5"])


def test_noise_config_rejects_negative_masks_and_unknown_fill():
    with pytest.raises(ConfigError, match="data.noise.time_masks"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.noise.time_masks=-1"])
    with pytest.raises(ConfigError, match="data.noise.mask_value"):
        load_config(EXPERIMENTS / "baseline.yaml", ["data.noise.mask_value=zero"])


# -- rounds ----------------------------------------------------------------------------------


def test_sizes_are_one_per_round_or_one_for_all():
    assert parse_sizes("small,base,large", 3) == ["small", "base", "large"]
    assert parse_sizes("base", 2) == ["base", "base"]
    with pytest.raises(ConfigError, match="--sizes"):
        parse_sizes("small,base", 3)
    with pytest.raises(ConfigError, match="'huge'"):
        parse_sizes("small,huge", 2)


def test_a_round_config_sets_its_student_size_name_and_cache():
    cfg = round_config(EXPERIMENTS / "noisy_student.yaml", ["trainer.max_epochs=3"], "2e1d",
                       "large", 2, "runs/x/round1/pool_cache")
    assert (cfg.student, cfg.model.size, cfg.name, cfg.role) == ("2e1d", "large", "noisy-r2", "noisy_r2")
    assert cfg.data.teacher_cache == "runs/x/round1/pool_cache" and cfg.trainer.max_epochs == 3
    with pytest.raises(ConfigError, match="model.size"):
        round_config(EXPERIMENTS / "noisy_student.yaml", ["model.size=base"], "btc", "small", 1, "c")


def _write_song(cache: Path, labeller: str, logits: np.ndarray, audio: Path) -> None:
    logz = np.log(np.exp(logits).sum(-1)).astype(np.float32)
    with CacheWriter(cache) as writer:
        writer.write_logits("song", logz, (logits - logz[:, None])[:, :8].astype(np.float16),
                            np.tile(np.arange(8, dtype=np.uint8), (len(logits), 1)), 170,
                            audio=AudioFingerprint.of(audio), teacher=labeller, features="f")


def test_a_finished_round_is_stale_once_its_pseudo_labels_change(tmp_path, tone_corpus):
    audio = read_manifest(tone_corpus)[0].audio
    logits = -np.arange(170, dtype=np.float32)[None].repeat(5, 0)
    cache, folder = tmp_path / "cache", tmp_path / "noisy-r2-btc-0123abcd"
    _write_song(cache, "student-1", logits, audio)
    trained_on = labels_digest(cache)
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    _Provenance(tmp_path / "trained_on.json").record(str(folder), trained_on)
    _write_song(cache, "student-1", logits, audio)  # relabelled by the same model: same labels
    assert labels_digest(cache) == trained_on
    assert not _Provenance(tmp_path / "trained_on.json").stale(folder, labels_digest(cache))
    _write_song(cache, "retrained-student-1", logits[:, ::-1].copy(), audio)
    assert labels_digest(cache) != trained_on
    assert _Provenance(tmp_path / "trained_on.json").stale(folder, labels_digest(cache))


ROUND_OVERRIDES = [
    "data.batch_size=4", "trainer.check_val_every_n_epoch=1", "logger.kind=none", "test=false",
    "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
]


def _run_rounds(corpus: Path, runs: Path, teacher: Path, min_confidence: float, rounds: int = 2,
                *extra: str) -> dict:
    # the tone corpus is both the labelled songs and the pool: each batch of 4 holds 1 window
    # with its .lab targets and 3 with the previous round's pseudo-labels
    return noisy_student(
        EXPERIMENTS / "noisy_student.yaml", rounds, "small", teacher=teacher,
        teacher_cache=runs / "teacher_cache",
        overrides=[
            f"data.train={corpus}", f"data.labelled={corpus}", f"data.valid={corpus}",
            f"data.test={corpus}", "data.labelled_ratio=0.25", "trainer.max_epochs=1",
            "optim.warmup_steps=0",  # one short epoch: a warm-up from 0 would leave it untrained
            *ROUND_OVERRIDES, f"runs_dir={runs}", f"data.noise.min_confidence={min_confidence}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def small_teacher(tone_corpus, tmp_path_factory) -> Path:
    """A small BTC teacher trained for one epoch on the tone corpus: a noisy student is as
    large as its teacher or larger, so the rounds' small students need a small teacher."""
    from chordkd.training.fit import fit

    runs = tmp_path_factory.mktemp("teacher")
    summary = fit(load_config(EXPERIMENTS / "teacher.yaml", [
        f"data.train={tone_corpus}", f"data.valid={tone_corpus}", "data.test=null",
        "trainer.max_epochs=1", "checkpoint.patience=0", *ROUND_OVERRIDES, f"runs_dir={runs}",
    ]))
    return Path(summary["best_checkpoint"])


def _median_confidence(teacher: Path, corpus: Path, cache: Path) -> float:
    """The median top probability of ``teacher`` over the corpus's frames (labelling it into
    ``cache``, where the rounds find it): a threshold that keeps about half the frames."""
    from chordkd.labelling.label import label_corpus

    label_corpus(teacher, corpus, cache)
    found = TeacherCache(cache)
    top = np.concatenate([np.asarray(found.read(s).values, np.float32).max(-1)
                          for s in found.song_ids])
    return float(np.exp(np.median(top)))


class StepSpy:
    """Every training step: (round's run name, epoch, labelled windows, windows)."""

    def __init__(self, monkeypatch) -> None:
        from chordkd.training.student import StudentModule

        self.steps: list[tuple[str, int, int, int]] = []
        original = StudentModule.training_step

        def recording(module, batch, batch_idx):
            name = Path(module.trainer.default_root_dir).name.rsplit("-", 2)[0]  # noisy-r1
            self.steps.append((name, module.current_epoch, int(batch["labelled"].sum()),
                               len(batch["labels"])))
            return original(module, batch, batch_idx)

        monkeypatch.setattr(StudentModule, "training_step", recording)


@pytest.fixture(scope="module")
def two_rounds(tone_corpus, tmp_path_factory, small_teacher):
    runs = tmp_path_factory.mktemp("noisy")
    threshold = _median_confidence(small_teacher, tone_corpus, runs / "teacher_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHORDKD_NO_PROGRESS", "1")
        spy = StepSpy(mp)
        report = _run_rounds(tone_corpus, runs, small_teacher, threshold)
    return tone_corpus, runs, report, spy.steps, threshold


@pytest.mark.slow
def test_every_round_trains_on_batches_with_a_quarter_of_ground_truth_windows(two_rounds):
    *_, steps, _ = two_rounds
    assert {name for name, *_ in steps} == {"noisy-r1", "noisy-r2"}
    assert all((labelled, windows) == (1, 4) for _, _, labelled, windows in steps)


def _student_argmax(checkpoint: str, songs: list) -> dict[str, np.ndarray]:
    """The checkpoint's own whole-song argmax per song, computed as labelling computes it."""
    from chordkd.audio import load_audio
    from chordkd.features import LogCQT
    from chordkd.inference import songs_logits
    from chordkd.models.loading import load_model

    loaded = load_model(checkpoint)
    cqt = LogCQT(loaded.features)
    with torch.inference_mode():
        return {song.id: songs_logits(loaded.model.eval(), [cqt(torch.from_numpy(
            load_audio(song.audio)))])[0].argmax(-1).numpy() for song in songs}


@pytest.mark.slow
def test_each_round_relabels_the_pool_with_its_student_where_it_disagrees_with_its_teacher(two_rounds):
    corpus, runs, report, *_ = two_rounds
    songs = read_manifest(corpus)
    for r in (1, 2):
        row = report["rounds"][r]
        before, after = TeacherCache(row["trained_on"]), TeacherCache(row["pool_cache"])
        disagreements = 0
        predictions = _student_argmax(row["checkpoint"], songs)
        for song in songs:
            teacher = before.read(song.id).best_class()
            relabelled = after.read(song.id).best_class()
            student = predictions[song.id]
            differs = student != teacher
            disagreements += int(differs.sum())
            assert (relabelled[differs] == student[differs]).all()
            assert (relabelled[differs] != teacher[differs]).all()
            assert (relabelled == student).all()  # and agrees with the student everywhere else
        assert disagreements > 0, f"round {r}'s student copied its teacher exactly"


@pytest.mark.slow
def test_the_rounds_report_has_every_round_with_its_training_metrics_and_teacher_gap(two_rounds):
    import csv

    from chordkd.evaluation.metrics import METRICS
    from chordkd.evaluation.results import discover
    from chordkd.models import build_student, count_parameters

    _, runs, report, *_ = two_rounds
    written = json.loads((runs / "noisy_student/btc/rounds.json").read_text())
    rows = written["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["size"] for r in rows] == ["small", "small", "small"]
    small = count_parameters(build_student("btc", "small", 170))
    assert [r["parameters"] for r in rows] == [small] * 3
    for row in rows:
        assert set(row["metrics"]) == set(METRICS)
        assert all(0 <= v <= 1 for v in row["metrics"].values())
        assert row["mean"] == pytest.approx(np.mean([row["metrics"][m] for m in METRICS]))
        assert row["epochs"] == 1 and 0 <= row["best_score"] <= 1  # the teacher's from its run
    assert [r["labelled_ratio"] for r in rows] == [None, 0.25, 0.25]
    assert 0.2 < rows[1]["pseudo_labels_kept"] < 0.8  # the median threshold
    for before, row in zip(rows, rows[1:]):
        assert row["vs_teacher"]["mean"] == pytest.approx(row["mean"] - before["mean"])
        assert row["vs_teacher"]["mirex"] == pytest.approx(
            row["metrics"]["mirex"] - before["metrics"]["mirex"])
    table = list(csv.DictReader((runs / "noisy_student/btc/rounds.csv").open()))
    assert [int(r["epochs"]) for r in table] == [1, 1, 1]
    assert float(table[2]["majmin_vs_teacher"]) == pytest.approx(
        rows[2]["metrics"]["majmin"] - rows[1]["metrics"]["majmin"])
    md = (runs / "noisy_student/btc/rounds.md").read_text()
    assert "| 2 | noisy-r2 | small |" in md and f"{small:,}" in md and "25.00" in md
    # the rounds' evaluations are rows of `chordkd results`; the round-0 teacher is not
    found = {(e.row, e.student) for e in discover(runs / "eval")}
    assert found == {("noisy_r1", "btc"), ("noisy_r2", "btc")}


@pytest.mark.slow
def test_a_rerun_finds_every_round_finished_and_changes_nothing(two_rounds, small_teacher):
    corpus, runs, report, _, threshold = two_rounds
    watched = [Path(r["checkpoint"]) for r in report["rounds"][1:]]
    watched += [Path(r["pool_cache"]) / "index.json" for r in report["rounds"]]
    watched += [Path(r["evaluation"]) / "overall.json" for r in report["rounds"]]
    stamps = [os.stat(p).st_mtime_ns for p in watched]
    again = _run_rounds(corpus, runs, small_teacher, threshold)
    assert [os.stat(p).st_mtime_ns for p in watched] == stamps
    assert again["rounds"] == report["rounds"]


@pytest.mark.slow
def test_a_round_killed_after_its_first_epoch_resumes_with_the_second(
    tone_corpus, small_teacher, tmp_path, monkeypatch
):
    from test_resume import SimulatedKill, crash_at_epoch

    runs = tmp_path / "runs"
    threshold = _median_confidence(small_teacher, tone_corpus, runs / "teacher_cache")
    two_epochs = ("trainer.max_epochs=2", "checkpoint.patience=0")
    with pytest.MonkeyPatch.context() as m:
        crash_at_epoch(m, 1)
        with pytest.raises(SimulatedKill):
            _run_rounds(tone_corpus, runs, small_teacher, threshold, 1, *two_epochs)
    spy = StepSpy(monkeypatch)
    report = _run_rounds(tone_corpus, runs, small_teacher, threshold, 1, *two_epochs)
    assert {epoch for _, epoch, *_ in spy.steps} == {1}, "the rerun trains the second epoch only"
    assert report["rounds"][1]["epochs"] == 2


@pytest.mark.slow
def test_another_teachers_labels_in_the_round_zero_cache_are_not_overwritten(two_rounds):
    corpus, runs, report, *_ = two_rounds
    student = report["rounds"][1]["checkpoint"]
    with pytest.raises(CacheError, match="another teacher"):
        noisy_student(EXPERIMENTS / "noisy_student.yaml", 1, "small", teacher=student,
                      teacher_cache=runs / "teacher_cache",
                      overrides=[f"data.train={corpus}", f"data.test={corpus}", f"runs_dir={runs}"])


def test_a_student_smaller_than_its_teacher_is_refused_naming_the_sizes():
    from chordkd.models import build_student, count_parameters

    base = count_parameters(build_student("btc", "base", 170))
    small = count_parameters(build_student("btc", "small", 170))
    check_growth(small, "btc", ["small", "base", "base"], 170)  # equal or larger: fine
    with pytest.raises(ConfigError, match="--sizes: round 1's btc-small"):
        check_growth(base, "btc", ["small"], 170)
    with pytest.raises(ConfigError, match="--sizes: round 2's btc-small.*round 1's btc-base"):
        check_growth(small, "btc", ["base", "small"], 170)
