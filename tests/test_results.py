"""``chordkd results``: the paper-style table from evaluation JSON files."""

from __future__ import annotations

import csv
import json

import pytest

from chordkd.atomic import write_json
from chordkd.cli import main
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import METRICS, QualityCounts, SongScore
from chordkd.evaluation.report import EvaluationResult, ModelResult, json_safe
from chordkd.evaluation.results import build_table, discover, explicit_entry


def _write_eval(path, models: dict[str, tuple[dict, float]]):
    """An overall.json as `chordkd evaluate` writes it; every metric = ``accuracy`` (10 s song)."""
    results = {}
    for name, (meta, accuracy) in models.items():
        m = ModelResult(name, {"name": name, **meta})
        m.scores["song"] = SongScore(dict.fromkeys(METRICS, 10 * accuracy),
                                     dict.fromkeys(METRICS, 10.0), 10.0)
        counts = QualityCounts()
        counts.frames[0], counts.correct[0] = 100, round(100 * accuracy)
        m.qualities["song"] = counts
        results[name] = m
    write_json(path, json_safe(EvaluationResult(results, [], "song").overall_dict()))
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    _write_eval(root / "teacher" / "eval" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, 0.80)})
    _write_eval(root / "btc-base" / "eval" / "overall.json",
                {"baseline": ({"role": "baseline", "student": "btc"}, 0.70)})
    _write_eval(root / "btc-s1" / "eval" / "overall.json",
                {"s1": ({"role": "stage1", "student": "btc"}, 0.72)})
    _write_eval(root / "btc-s2" / "eval" / "overall.json",
                {"s2": ({"role": "stage2", "student": "btc"}, 0.76),
                 "fkd": ({"role": "feature-kd", "student": "btc"}, 0.74)})
    _write_eval(root / "2e1d-s1" / "eval" / "overall.json",
                {"s1": ({"role": "stage1", "student": "2e1d"}, 0.60)})
    (root / "notes" ).mkdir()
    (root / "notes" / "overall.json").write_text('{"something": "else"}')
    return root


def test_rows_are_ordered_teacher_baseline_stage1_stage2_then_others(runs):
    table = build_table(discover(runs))
    assert [r["row"] for r in table["btc"]] == [
        "teacher", "baseline", "stage1", "stage2", "feature-kd",
        "stage1 / teacher", "stage2 - baseline", "stage2 - teacher",
    ]


def test_derived_rows_are_percent_of_teacher_and_point_differences(runs):
    rows = {r["row"]: r["values"] for r in build_table(discover(runs))["btc"]}
    assert rows["stage1 / teacher"]["root"] == pytest.approx(100 * 0.72 / 0.80)
    assert rows["stage2 - baseline"]["majmin"] == pytest.approx(6.0)
    assert rows["stage2 - teacher"]["mirex"] == pytest.approx(-4.0)
    assert rows["teacher"]["mean"] == pytest.approx(80.0)
    assert rows["stage2"]["acqa"] == pytest.approx(76.0)


def test_the_single_teacher_is_shared_by_every_student(runs):
    table = build_table(discover(runs))
    assert [r["row"] for r in table["2e1d"]] == ["teacher", "stage1", "stage1 / teacher"]


def test_two_rows_of_one_name_for_one_student_are_refused(runs):
    _write_eval(runs / "again" / "overall.json",
                {"s1": ({"role": "stage1", "student": "btc"}, 0.5)})
    with pytest.raises(ChordkdError, match="two 'stage1' rows for student 'btc'"):
        build_table(discover(runs))


def test_explicit_entry_picks_a_model_of_a_multi_model_file(runs):
    path = runs / "btc-s2" / "eval" / "overall.json"
    entry = explicit_entry("feature-kd", "btc", f"{path}#fkd")
    assert entry.values["root"] == pytest.approx(0.74)
    with pytest.raises(ChordkdError, match="name one as"):
        explicit_entry("stage2", "btc", str(path))


def test_cli_writes_markdown_csv_and_json_and_prints_the_table(runs, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["results", "--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Student: btc" in printed and "| stage2 - baseline | +6.00 |" in printed
    assert (out / "results.md").read_text() == printed.rstrip("\n") + "\n"
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["student"], r["row"]) for r in rows} >= {("btc", "teacher"), ("2e1d", "stage1")}
    data = json.loads((out / "results.json").read_text())
    assert data["columns"] == [*METRICS, "mean", "acqa"]
