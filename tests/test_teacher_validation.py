"""Stage 1 without ground truth: validation on pool songs held out of training and scored
against the teacher's cached argmax (data.valid_targets=teacher, data.valid_holdout=N)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import mir_eval
import numpy as np
import pytest
import torch
from conftest import write_tone_corpus
from test_teacher_datamodule import template_teacher

from chordkd.audio import load_audio
from chordkd.chords import get_vocabulary
from chordkd.data.datamodule import TeacherDataModule
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError, ConfigError
from chordkd.features import FeatureSettings, LogCQT
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter, TeacherCache
from chordkd.training.config import load_config
from chordkd.training.fit import fit

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SETTINGS = FeatureSettings()


@pytest.fixture(scope="module")
def unlabelled_pool(tmp_path_factory) -> tuple[Path, Path]:
    """Five 8-second songs with a teacher cache, whose .lab files are then made unreadable."""
    root = tmp_path_factory.mktemp("pool")
    corpus = write_tone_corpus(root / "audio", songs=5, seconds=8.0, seed=3)
    cache, cqt = root / "cache", LogCQT()
    with CacheWriter(cache) as writer:
        for song in read_manifest(corpus):
            logits = template_teacher(cqt(torch.from_numpy(load_audio(song.audio))))
            logz = torch.logsumexp(logits, -1)
            top = torch.topk(logits, 8, dim=-1)
            writer.write_logits(
                song.id, logz.numpy(), (top.values - logz[:, None]).numpy(), top.indices.numpy(),
                170, audio=AudioFingerprint.of(song.audio), teacher="template",
                features=SETTINGS.fingerprint(),
            )
    for lab in corpus.glob("*.lab"):  # garbage: reading any of them fails under data.strict
        lab.write_bytes(b"\xff\xfe not a lab file \x00\n1.0\n")
    return corpus, cache


def frame_intervals(classes: np.ndarray, duration: float) -> tuple[np.ndarray, list[str]]:
    """One interval per frame, centred on the frame's time (hop / sr apart), clipped to the song."""
    edges = np.clip((np.arange(len(classes) + 1) - 0.5) * SETTINGS.hop / SETTINGS.sr, 0, duration)
    keep = edges[1:] > edges[:-1]
    vocab = get_vocabulary("large")
    return (np.stack([edges[:-1], edges[1:]], axis=1)[keep],
            [vocab.decode(int(c)) for c in classes[keep]])


def test_stage1_yaml_reads_no_ground_truth():
    cfg = load_config(EXPERIMENTS / "stage1.yaml")
    assert cfg.data.targets == "teacher" and cfg.data.valid_targets == "teacher"
    assert cfg.data.valid_holdout == 9
    assert cfg.data.valid is None and cfg.data.test is None


@pytest.mark.parametrize("overrides, key", [
    (["data.valid_targets=labels"], "data.valid_holdout"),  # holding out needs teacher targets
    (["data.valid=data/demo/valid"], "data.valid"),  # a labelled corpus would go unread
    (["data.teacher_cache=null", "data.targets=labels"], "data.teacher_cache"),
])
def test_teacher_validation_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_config(EXPERIMENTS / "stage1.yaml", overrides)


def _datamodule(pool: tuple[Path, Path], holdout: int, seed: int = 0) -> TeacherDataModule:
    corpus, cache = pool
    dm = TeacherDataModule(str(corpus), str(cache), valid_targets="teacher", valid_holdout=holdout,
                           strict=True, pitch_shift=0, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_held_out_songs_never_appear_in_training_windows(unlabelled_pool):
    dm = _datamodule(unlabelled_pool, holdout=2)
    held = {s.id for s in dm.val_set.songs}
    trained = {dm.train_set[i]["song"].item() for i in range(len(dm.train_set))}
    trained = {dm.train_set.songs[i].id for i in trained}
    assert len(held) == 2 and len(trained) == 3
    assert held.isdisjoint(trained)
    assert held | trained == {s.id for s in read_manifest(unlabelled_pool[0])}
    # the same songs whatever the seed
    assert {s.id for s in _datamodule(unlabelled_pool, holdout=2, seed=7).val_set.songs} == held


def test_held_out_reference_is_the_teachers_argmax(unlabelled_pool):
    dm = _datamodule(unlabelled_pool, holdout=1)
    ref = dm.reference("valid", 0)
    argmax = TeacherCache(unlabelled_pool[1]).read(ref.id).best_class()
    np.testing.assert_array_equal(ref.labels, argmax)
    # the reference intervals are the argmax frame by frame: mir_eval finds them identical
    duration = ref.n_samples / SETTINGS.sr
    scores = mir_eval.chord.evaluate(*frame_intervals(argmax, duration), ref.intervals,
                                     ref.label_names)
    assert scores["root"] == scores["tetrads"] == scores["mirex"] == pytest.approx(1.0)


def test_holding_out_every_song_is_an_error_naming_the_corpus(unlabelled_pool):
    with pytest.raises(ChordkdError, match=rf"{unlabelled_pool[0]}.*valid_holdout=5"):
        _datamodule(unlabelled_pool, holdout=5)


def _stage1(pool: tuple[Path, Path], runs: Path, *extra: str):
    corpus, cache = pool
    return load_config(EXPERIMENTS / "stage1.yaml", [
        f"data.train={corpus}", f"data.teacher_cache={cache}", "data.valid_holdout=1",
        "data.strict=true", "data.batch_size=4", "data.pitch_shift=0", "model.size=small",
        "model.overrides.num_layers=1", "optim.warmup_steps=0", "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu", "checkpoint.patience=0",
        "trainer.enable_progress_bar=false", "logger.kind=csv", f"runs_dir={runs}", *extra])


def test_stage1_trains_and_selects_on_teacher_targets_with_unreadable_labels(
    unlabelled_pool, tmp_path
):
    from chordkd.inference import song_logits
    from chordkd.models.loading import load_model

    summary = fit(_stage1(unlabelled_pool, tmp_path))
    assert summary["songs"] == {"train": 4, "valid": 1}
    (held,) = summary["valid_holdout"]
    assert summary["skipped"] == {"train": {}, "valid": {}}
    # the selection score is mir_eval's mirex of the best checkpoint's argmax against the
    # teacher's argmax on the held-out song, computed here without chordkd's scoring code
    song = next(s for s in read_manifest(unlabelled_pool[0]) if s.id == held)
    audio = load_audio(song.audio)
    duration = len(audio) / SETTINGS.sr
    model = load_model(summary["best_checkpoint"]).model.eval()
    with torch.inference_mode():
        pred = song_logits(model, LogCQT()(torch.from_numpy(audio))).argmax(-1).numpy()
    teacher = TeacherCache(unlabelled_pool[1]).read(held).best_class()
    expected = mir_eval.chord.evaluate(*frame_intervals(teacher, duration),
                                       *frame_intervals(pred, duration))["mirex"]
    assert summary["monitor"] == "val/mirex"
    assert summary["best_score"] == pytest.approx(expected, abs=1e-6)


def test_a_student_that_reproduces_the_teacher_scores_one_on_every_metric(
    unlabelled_pool, tmp_path, monkeypatch
):
    import csv

    from chordkd.evaluation.metrics import METRICS
    from chordkd.training.student import StudentModule

    # validation sees the teacher's own logits: against the teacher's argmax, nothing is wrong
    monkeypatch.setattr(StudentModule, "predict_song", lambda self, f: template_teacher(f[0]))
    summary = fit(_stage1(unlabelled_pool, tmp_path, "trainer.max_epochs=1",
                          "data.valid_holdout=2"))
    (metrics,) = Path(summary["run_dir"]).glob("csv/version_*/metrics.csv")
    (row,) = [r for r in csv.DictReader(metrics.open()) if r.get("val/mirex")]
    assert {m: float(row[f"val/{m}"]) for m in METRICS} == {m: 1.0 for m in METRICS}
    assert float(row["val/songs"]) == 2.0 and summary["best_score"] == 1.0


class RecordMetrics(L.Callback):
    """Writes each rank's logged validation metrics to a JSON file."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))


@pytest.mark.slow
def test_ddp_two_ranks_score_the_held_out_songs_once_with_identical_metrics(
    unlabelled_pool, tmp_path
):
    from chordkd.training.student import StudentModule
    from chordkd.training.validation import MirEvalValidation

    corpus, cache = unlabelled_pool
    # 3 held-out songs on 2 ranks: the distributed sampler pads by repeating one of them
    dm = TeacherDataModule(str(corpus), str(cache), valid_targets="teacher", valid_holdout=3,
                           strict=True, batch_size=4, pitch_shift=0)
    module = StudentModule(student="btc", size="small", overrides={"num_layers": 1},
                           optim={"schedule": "constant", "lr": 1e-3})
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
        callbacks=[MirEvalValidation(), RecordMetrics(str(tmp_path))],
    )
    trainer.fit(module, datamodule=dm)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    assert r0["val/songs"] == 3.0
    assert {"val/root", "val/majmin", "val/mirex"} <= set(r0)
