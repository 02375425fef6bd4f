"""``chordkd evaluate``: numbers equal mir_eval's, and every report file is written."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURE_BTC, needs_fixture

from chordkd.annotations import read_lab
from chordkd.cli import main
from chordkd.data.manifest import read_manifest
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import METRICS, PAPER_GROUPS, SEGMENTATION
from chordkd.evaluation.report import evaluate_models
from chordkd.models import ChordModel, build_student

SR = 22050
FIXTURE = FIXTURE_BTC / "checkpoint.pt"  # ../shared beside the checkout (tests/conftest.py)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (seconds, frequencies) per chord, and the hand-made reference .lab of each song.
SONGS = {
    "alpha": ("0.0 1.0 N\n1.0 2.5 C:maj\n2.5 4.0 A:min7\n",
              [(1.0, ()), (1.5, (261.6, 329.6, 392.0)), (1.5, (220.0, 261.6, 329.6, 392.0))]),
    "beta": ("0.0 1.5 G:7\n1.5 2.0 X\n2.0 3.0 D:sus4\n",
             [(1.5, (196.0, 246.9, 293.7, 349.2)), (0.5, (100.0,)), (1.0, (293.7, 392.0, 440.0))]),
}


def _render(parts) -> np.ndarray:
    chunks = []
    for seconds, freqs in parts:
        t = np.arange(int(seconds * SR)) / SR
        chunk = sum((np.sin(2 * np.pi * f * t) for f in freqs), np.zeros_like(t))
        chunks.append(0.3 * chunk / max(1, len(freqs)))
    return np.concatenate(chunks).astype(np.float32)


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for song, (lab, parts) in SONGS.items():
        sf.write(folder / f"{song}.wav", _render(parts), SR)
        (folder / f"{song}.lab").write_text(lab)
    return folder


@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return ChordModel(build_student("btc", "small", n_classes=170), mean=-7.0, std=3.0).eval()


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 5000


def test_song_scores_equal_mir_eval_on_the_written_estimates(corpus, tmp_path, tiny_model):
    out = tmp_path / "eval"
    evaluate_models({"tiny": tiny_model}, read_manifest(corpus, require_labels=True), out)
    songs = json.loads((out / "songs.json").read_text())["models"]["tiny"]
    for song in SONGS:
        ref = read_lab(corpus / f"{song}.lab")
        est = read_lab(out / "estimates" / "tiny" / f"{song}.lab")
        expected = mir_eval.chord.evaluate(*ref, *est)
        for metric in METRICS:
            got = songs[song]["accuracy"][metric]
            if songs[song]["comparable"][metric] > 0:
                assert got == pytest.approx(expected[metric], abs=1e-5), (song, metric)
            else:
                assert got is None or math.isnan(got)


def test_overall_is_the_duration_weighted_pool_of_the_songs(corpus, tmp_path, tiny_model):
    out = tmp_path / "eval"
    result = evaluate_models({"tiny": tiny_model}, read_manifest(corpus), out)
    songs = json.loads((out / "songs.json").read_text())["models"]["tiny"]
    overall = json.loads((out / "overall.json").read_text())["models"]["tiny"]["metrics"]
    for metric in METRICS:
        correct = sum(s["correct"][metric] for s in songs.values())
        comparable = sum(s["comparable"][metric] for s in songs.values())
        assert overall[metric] == pytest.approx(correct / comparable)
        assert result.models["tiny"].overall[metric] == pytest.approx(correct / comparable)
    # The X second of "beta" is excluded everywhere: 4 + 2.5 comparable seconds for root.
    assert sum(s["comparable"]["root"] for s in songs.values()) == pytest.approx(6.5)


def test_per_quality_recall_counts_reference_frames(corpus, tmp_path, tiny_model):
    out = tmp_path / "eval"
    result = evaluate_models({"tiny": tiny_model}, read_manifest(corpus), out)
    counts = result.models["tiny"].quality
    frames = dict(zip(PAPER_GROUPS, counts.frames.tolist()))
    # Frame i is centred at i * 2048 / 22050 s; C:maj covers 1.0-2.5 s: frames 11..26.
    assert frames["Major"] == 16
    assert frames["Min7"] == 17  # 2.5-4.0 s: frames 27..43
    assert frames["Dom7"] == 17 and frames["Sus"] == 11
    assert set(g for g, n in frames.items() if n) == {"No Chord", "Major", "Min7", "Dom7", "Sus"}


@needs_fixture
def test_cli_writes_tables_and_four_pngs_for_two_models(corpus, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["evaluate", str(FIXTURE), str(FIXTURE), "--data", str(corpus), "--out", str(out),
               "--names", "teacher", "copy", "--roles", "teacher", "stage2",
               "--student", "btc", "--song", "beta", "--seed", "3", "--meta", "pool=4",
               "size=base"])
    assert rc == 0
    for name in ("overall.json", "songs.json", "overall.csv", "quality_recall.csv", "songs.csv",
                 "report.md"):
        assert (out / name).stat().st_size > 0, name
    for png in ("quality_recall.png", "quality_recall_quality.png", "quality_confusion.png",
                "timeline.png"):
        assert _is_png(out / png), png
    overall = json.loads((out / "overall.json").read_text())
    assert overall["format"] == "chordkd-evaluation/1"
    assert overall["timeline_song"] == "beta"
    assert overall["models"]["copy"]["meta"]["role"] == "stage2"
    assert overall["models"]["teacher"]["meta"]["student"] == "btc"
    assert overall["models"]["copy"]["meta"]["seed"] == 3
    assert overall["models"]["copy"]["meta"]["tags"] == {"pool": "4", "size": "base"}
    assert overall["models"]["copy"]["agreement"]["agree_majmin"] == 1.0  # the same model
    with open(out / "songs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], r["song"]) for r in rows) == [
        ("copy", "alpha"), ("copy", "beta"), ("teacher", "alpha"), ("teacher", "beta")
    ]
    report = (out / "report.md").read_text()
    assert "| teacher |" in report and "![quality confusion](quality_confusion.png)" in report
    assert "mirex" in capsys.readouterr().out


def test_segmentation_equals_mir_eval_and_both_acqas_are_reported(corpus, tmp_path, tiny_model):
    out = tmp_path / "eval"
    evaluate_models({"tiny": tiny_model}, read_manifest(corpus), out)
    songs = json.loads((out / "songs.json").read_text())["models"]["tiny"]
    for song in SONGS:
        expected = mir_eval.chord.evaluate(*read_lab(corpus / f"{song}.lab"),
                                           *read_lab(out / "estimates" / "tiny" / f"{song}.lab"))
        for key in SEGMENTATION:
            assert songs[song]["segmentation"][key] == pytest.approx(expected[key], abs=1e-5)
    overall = json.loads((out / "overall.json").read_text())["models"]["tiny"]
    assert overall["acqa_quality"] >= overall["acqa"]  # a right class has the right quality
    assert set(overall["segmentation"]) == set(SEGMENTATION)
    report = (out / "report.md").read_text()
    assert "## Recall per quality: exact class" in report
    assert "## Recall per quality: quality only" in report and "| overseg |" in report


@pytest.mark.filterwarnings("ignore:No reference chords were comparable")  # mir_eval's other metrics
def test_every_model_is_compared_with_the_one_teacher_of_the_run(corpus, tmp_path, tiny_model):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    other = ChordModel(build_student("btc", "small", n_classes=170), mean=-7.0, std=3.0).eval()
    out = tmp_path / "eval"
    result = evaluate_models({"t": tiny_model, "same": tiny_model, "other": other},
                             read_manifest(corpus), out,
                             meta={"t": {"role": "teacher"}, "same": {"role": "stage2"}})
    overall = json.loads((out / "overall.json").read_text())["models"]
    assert overall["same"]["agreement"] == {"teacher": "t", "n_songs": 2, "agree_majmin": 1.0,
                                            "agree_mirex": 1.0}
    assert overall["t"]["agreement"] is None  # not with itself
    ours = result.models["other"].agreement.values["agree_mirex"]
    # an independent check: mir_eval's own mirex of the other's estimates against the teacher's
    teacher = {s: read_lab(out / "estimates" / "t" / f"{s}.lab") for s in SONGS}
    theirs = {s: read_lab(out / "estimates" / "other" / f"{s}.lab") for s in SONGS}
    seconds = [teacher[s][0].max() - teacher[s][0].min() for s in SONGS]
    mirex = [mir_eval.chord.evaluate(*teacher[s], *theirs[s])["mirex"] for s in SONGS]
    assert ours == pytest.approx(np.average(mirex, weights=seconds), abs=1e-5)


def test_one_pass_decodes_a_model_by_argmax_and_by_viterbi_side_by_side(corpus, tmp_path,
                                                                        tiny_model):
    out = tmp_path / "eval"
    result = evaluate_models({"stage2": tiny_model, "smooth": tiny_model}, read_manifest(corpus),
                             out, smoothing=0.99, decoding={"stage2": "argmax", "smooth": "viterbi"},
                             meta={"smooth": {"role": "stage2"}})
    assert result.models["stage2"].meta["decoding"] == "argmax"
    assert result.models["smooth"].meta["decoding"] == "viterbi(p=0.99)"
    for song in SONGS:  # a sticky Viterbi path never has more segments than the argmax one
        argmax = read_lab(out / "estimates" / "stage2" / f"{song}.lab")[1]
        viterbi = read_lab(out / "estimates" / "smooth" / f"{song}.lab")[1]
        assert len(viterbi) <= len(argmax)
    assert sum(len(read_lab(out / "estimates" / "stage2" / f"{s}.lab")[1]) for s in SONGS) > \
        sum(len(read_lab(out / "estimates" / "smooth" / f"{s}.lab")[1]) for s in SONGS)


def test_smoothing_with_no_viterbi_model_is_refused(corpus, tmp_path, tiny_model):
    with pytest.raises(ChordkdError, match="does not apply to --decode argmax"):
        evaluate_models({"a": tiny_model}, read_manifest(corpus), tmp_path / "e", smoothing=0.9,
                        decoding="argmax")


def test_unreadable_song_is_skipped_and_listed_with_its_reason(corpus, tmp_path, tiny_model,
                                                              caplog):
    (corpus / "gamma.wav").write_bytes(b"RIFF broken")
    (corpus / "gamma.lab").write_text("0.0 1.0 C:maj\n")
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        result = evaluate_models({"tiny": tiny_model}, read_manifest(corpus), out)
    assert [s["id"] for s in result.skipped] == ["gamma"]
    assert "gamma.wav" in result.skipped[0]["reason"]
    assert set(result.models["tiny"].scores) == {"alpha", "beta"}
    assert "## Skipped songs (1)" in (out / "report.md").read_text()
    assert "gamma" in caplog.text


def test_bad_lab_is_skipped_naming_file_and_line(corpus, tmp_path, tiny_model):
    (corpus / "beta.lab").write_text("0.0 1.5 G:7\n1.5 oops X\n")
    result = evaluate_models({"tiny": tiny_model}, read_manifest(corpus), tmp_path / "eval")
    assert "beta.lab:2" in result.skipped[0]["reason"]


def test_strict_stops_at_the_first_bad_song(corpus, tmp_path, tiny_model):
    (corpus / "beta.lab").write_text("0.0 1.5 C:nonsense\n")
    with pytest.raises(ChordkdError, match="beta.lab:1"):
        evaluate_models({"tiny": tiny_model}, read_manifest(corpus), tmp_path / "e", strict=True)


def test_unknown_timeline_song_is_refused_before_any_work(corpus, tmp_path, tiny_model):
    with pytest.raises(ChordkdError, match="'delta' is not a song"):
        evaluate_models({"tiny": tiny_model}, read_manifest(corpus), tmp_path / "e",
                        timeline_song="delta")
