"""Probes: a planted key is read, random embeddings give chance, test songs never reach
training, tempo octave errors are counted apart, and missing metadata skips a task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SUBPROCESS_TIMEOUT

from chordkd.chords import get_vocabulary
from chordkd.data.manifest import Song
from chordkd.errors import ConfigError
from chordkd.probing.probe import score_task
from chordkd.probing.probes import song_vector, tempo_scores, train_probe
from chordkd.probing.tasks import (
    Skipped,
    TaskData,
    build_task,
    frame_targets,
    held_out_split,
)

ROOTS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def songs_with(column: str, values: list[str]) -> list[Song]:
    return [Song(f"song{i:04d}", Path(f"song{i:04d}.flac"), extra={column: v})
            for i, v in enumerate(values)]


def key_corpus(n: int) -> list[Song]:
    keys = [f"{ROOTS[i % 12]}:{'major' if (i // 12) % 2 == 0 else 'minor'}" for i in range(n)]
    return songs_with("key", keys)


def planted_embeddings(task, signal: float, dim: int = 32, frames: int = 20, seed: int = 0):
    """Per song ``[frames, dim]``: noise plus ``signal`` x the direction of its key class."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((24, dim))
    return {s: signal * directions[task.targets[s]] + rng.standard_normal((frames, dim))
            for s in task.targets}


def test_a_key_planted_linearly_is_read_and_random_embeddings_give_chance():
    task = build_task("key", key_corpus(480), "planted")
    assert len(task.classes) == 24 and len(task.test) == 120
    planted = score_task(task, planted_embeddings(task, 1.0), 0.1, 0.0, "planted")
    noise = score_task(task, planted_embeddings(task, 0.0), 0.1, 0.0, "random")
    linear = next(r for r in planted if r["probe"] == "linear")
    assert linear["score"] >= 0.95
    for row in noise:  # chance is 1/24 = 4.2%; 120 test songs give a standard error of 1.8%
        assert row["score"] < 0.15, row


def test_probes_never_see_their_test_songs():
    """Random labels on memorisable random embeddings: a probe that saw the held-out songs
    would score them near 100% (the control below), one that did not scores near 50%."""
    rng = np.random.default_rng(1)
    songs = songs_with("composer", [str(rng.choice(["Bach", "Palestrina"])) for _ in range(200)])
    task = build_task("composer", songs, "random labels")
    assert not set(task.train) & set(task.test)
    assert sorted(task.train + task.test) == sorted(s.id for s in songs)
    emb = {s.id: rng.standard_normal((4, 128)) for s in songs}
    for row in score_task(task, emb, 0.1, 0.0, "memorisable"):
        assert row["score"] < 0.75, row
        assert row["train_songs"] == len(task.train) and row["test_songs"] == len(task.test)
    ids = sorted(emb)  # control: the same probe trained on every song, test songs included
    predict = train_probe(np.stack([song_vector(emb[s]) for s in ids]),
                          np.array([task.targets[s] for s in ids]), "mlp", 2)
    x_test = np.stack([song_vector(emb[s]) for s in task.test])
    assert np.mean(predict(x_test) == np.array([task.targets[s] for s in task.test])) > 0.95


def test_the_split_is_fixed_by_song_id_whatever_the_order():
    ids = [f"s{i}" for i in range(40)]
    train, test = held_out_split(ids)
    assert (train, test) == held_out_split(list(reversed(ids)))
    assert len(test) == 10 and sorted(train + test) == sorted(ids)


def test_tempo_within_four_percent_and_octave_errors_apart():
    scores = tempo_scores(np.array([103.0, 200.0, 51.0, 130.0]), np.array([100.0] * 4))
    assert scores == {"accuracy": 0.25, "octave_errors": 0.5}


def test_frame_targets_read_the_chord_at_each_embedding_frame_centre():
    task = TaskData("chord_majmin", "frame",
                    {"s": (np.array([[0.0, 1.0], [1.0, 2.0]]), ["C:maj", "A:min"])})
    vocab = get_vocabulary("majmin")
    got = frame_targets(task, "s", 5, hop_seconds=0.5, offset_seconds=0.25)
    c, a = vocab.encode("C:maj"), vocab.encode("A:min")
    assert got.tolist() == [c, c, a, a, -1]  # centres 0.25, 0.75, 1.25, 1.75, 2.25 s


def test_a_task_without_its_metadata_is_skipped_with_a_one_line_reason():
    songs = songs_with("tempo", ["120"] * 6)
    with pytest.raises(Skipped) as e:
        build_task("key", songs, "data/x")
    assert "\n" not in str(e.value) and "key" in str(e.value) and "data/x" in str(e.value)


@pytest.mark.slow
def test_probe_command_scores_chords_and_skips_tasks_the_corpus_lacks(tone_corpus, tmp_path):
    out = tmp_path / "probe"
    done = subprocess.run(
        [sys.executable, "-m", "chordkd", "probe", "random:btc:small", "--data", str(tone_corpus),
         "--tasks", "chord_majmin", "key", "tempo", "--out", str(out)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2 and "key:" in skipped[0] and "tempo:" in skipped[1]
    result = json.loads((out / "probe.json").read_text())
    rows = {(r["task"], r["probe"]): r for r in result["rows"]}
    assert set(rows) == {("chord_majmin", "linear"), ("chord_majmin", "mlp")}
    assert 0 <= rows["chord_majmin", "linear"]["score"] <= 1
    assert set(result["tasks"]["chord_majmin"]["test_songs"]).isdisjoint(
        result["tasks"]["chord_majmin"]["train_songs"])
    for name in ("probe.md", "probe.csv", "probe.png"):
        assert (out / name).stat().st_size > 0
    assert "skipped key:" in (out / "probe.md").read_text()


@pytest.mark.parametrize("student", ["btc", "2e1d"])
def test_a_chosen_layer_is_the_output_of_that_block(student):
    """The last block's output, layer-normalised as the network does, is the last hidden
    layer: so ``@k`` reads block ``k`` and nothing else."""
    import torch

    from chordkd.labelling.embeddings import HiddenLayer, check_layer, network_blocks
    from chordkd.models import ChordModel, build_student

    torch.manual_seed(0)
    model = ChordModel(build_student(student, "small", 25), 0.0, 1.0).eval()
    x = torch.randn(1, 40, 144)
    blocks = network_blocks(model.net)
    norm = model.net.self_attn_layers.layer_norm if student == "btc" else model.net.norm
    with torch.no_grad():
        last_block = HiddenLayer(model, str(len(blocks)))(x)
        torch.testing.assert_close(norm(last_block), HiddenLayer(model)(x))
        assert not torch.allclose(HiddenLayer(model, "1")(x), last_block)
        assert HiddenLayer(model, "logits")(x).shape == (1, 40, 25)
    with pytest.raises(ConfigError, match=f"not last, logits or a block 1..{len(blocks)}"):
        check_layer(str(len(blocks) + 1), model.net, "some.ckpt")


def test_metadata_kept_aside_for_unlabelled_parts_is_read_but_not_their_labels(tmp_path):
    from chordkd.data.manifest import read_manifest
    from chordkd.probing.tasks import with_aside_metadata

    (tmp_path / "manifest.csv").write_text("id,audio,labels,key,composer\na,a.flac,,,Bach\n"
                                           "b,b.flac,,,Palestrina\n")
    (tmp_path / "manifest_aside.csv").write_text(
        "id,audio,labels,key,composer\na,a.flac,labels_aside/a.lab,D:minor,X\n"
        "b,b.flac,labels_aside/b.lab,F:major,Y\n")
    songs = with_aside_metadata(read_manifest(tmp_path), tmp_path)
    assert [(s.extra["key"], s.extra["composer"], s.labels) for s in songs] == [
        ("D:minor", "Bach", None), ("F:major", "Palestrina", None)]
    assert build_task("key", songs, "x").targets == {"a": 14, "b": 5}


def test_the_cqt_encoder_is_the_students_own_input_at_their_frame_rate():
    from chordkd.features import FeatureSettings, LogCQT
    from chordkd.labelling.embeddings import load_embedding_module
    from chordkd.probing.encoders import parse_encoder

    enc = parse_encoder("cqt")
    assert enc.name == "cqt" and enc.module == "chordkd.probing.encoders:log_cqt"
    module = load_embedding_module(enc.module)
    wave = torch.randn(1, 2 * 22050)
    frames = module(wave)
    assert frames.shape == (LogCQT(FeatureSettings())(wave)[0].shape[0], 144)
    assert module.hop_seconds == pytest.approx(2048 / 22050)
    torch.testing.assert_close(frames, LogCQT(FeatureSettings())(wave)[0])
