"""``chordkd results``: the paper-style table from evaluation JSON files, over seeds and tags."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from chordkd.annotations import write_lab
from chordkd.atomic import write_json
from chordkd.cli import main
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import METRICS, SongScore
from chordkd.evaluation.quality import QualityCounts
from chordkd.evaluation.report import EvaluationResult, ModelResult, json_safe
from chordkd.evaluation.results import COLUMNS, build_table, discover, explicit_entry


def _write_eval(path, models: dict[str, tuple[dict, float | dict[str, float]]]):
    """overall.json and songs.json as `chordkd evaluate` writes them. Per model: its meta and
    its accuracy, one for every metric, either for one 10 s song "song" or per song."""
    results = {}
    for name, (meta, accuracy) in models.items():
        per_song = accuracy if isinstance(accuracy, dict) else {"song": accuracy}
        m = ModelResult(name, {"name": name, "decoding": "argmax", **meta})
        for song, acc in per_song.items():
            m.scores[song] = SongScore(dict.fromkeys(METRICS, 10 * acc),
                                       dict.fromkeys(METRICS, 10.0), 10.0)
            counts = QualityCounts()
            counts.frames[0], counts.correct[0] = 100, round(100 * acc)
            counts.confusion[0, 0] = counts.correct[0]
            m.qualities[song] = counts
        results[name] = m
    result = EvaluationResult(results, [], None)
    write_json(path, json_safe(result.overall_dict()))
    write_json(path.parent / "songs.json", json_safe(result.songs_dict()))
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


def _rows(table, student="btc"):
    return {r["row"]: r for r in table[student]}


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
    assert (out / "results.md").read_text() in printed
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["student"], r["row"]) for r in rows} >= {("btc", "teacher"), ("2e1d", "stage1")}
    data = json.loads((out / "results.json").read_text())
    assert data["columns"] == list(COLUMNS)
    assert {"acqa", "acqa_quality", "overseg", "underseg", "seg", "agree_majmin",
            "agree_mirex"} <= set(data["columns"])


# --------------------------------------------------------------------------------------------
# seeds and tags


def _seeds(root, role, values, tags=None, student="btc"):
    for seed, value in zip((1, 2, 3), values):
        meta = {"role": role, "student": student, "seed": seed, **({"tags": tags} if tags else {})}
        label = "-".join(f"{k}{v}" for k, v in (tags or {}).items())
        _write_eval(root / f"{role}-{label}-s{seed}" / "overall.json", {role: (meta, value)})


def test_a_row_over_three_seeds_is_their_mean_and_sample_std(tmp_path):
    root = tmp_path / "runs"
    _write_eval(root / "teacher" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, 0.80)})
    _seeds(root, "stage2", [0.70, 0.72, 0.77])
    stage2 = _rows(build_table(discover(root)))["stage2"]
    # by hand: mean 73; deviations -3, -1, +4 -> (9 + 1 + 16) / 2 = 13
    assert stage2["n"] == 3 and stage2["seeds"] == [1, 2, 3]
    assert stage2["values"]["mean"] == pytest.approx(73.0)
    assert stage2["std"]["mean"] == pytest.approx(math.sqrt(13))
    assert _rows(build_table(discover(root)))["stage2 - teacher"]["values"]["root"] == \
        pytest.approx(-7.0)


def test_mean_and_std_over_seeds_reach_markdown_csv_and_json(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    _seeds(root, "stage2", [0.70, 0.72, 0.77])
    assert main(["results", "--runs", str(root), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| stage2 | 73.00 ± 3.61 |"))
    assert line.endswith("| 73.00 ± 3.61 | 3 |")  # the mean of the seven, then n
    with open(out / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["mean"]) == pytest.approx(73.0)
    assert float(row["mean_std"]) == pytest.approx(math.sqrt(13))
    assert row["n"] == "3" and row["seeds"] == "1 2 3"
    (saved,) = json.loads((out / "results.json").read_text())["students"]["btc"]
    assert saved["n"] == 3 and saved["std"]["root"] == pytest.approx(math.sqrt(13))


def test_the_same_seed_twice_is_refused_naming_both_files(tmp_path):
    root = tmp_path / "runs"
    for k in (1, 2):
        _write_eval(root / f"copy{k}" / "overall.json",
                    {"s2": ({"role": "stage2", "student": "btc", "seed": 7}, 0.7)})
    with pytest.raises(ChordkdError, match="with seed 7: .*copy1.* and .*copy2"):
        build_table(discover(root))


def test_tagged_rows_stay_apart_and_take_the_references_their_tags_agree_with(tmp_path):
    root = tmp_path / "runs"
    _write_eval(root / "teacher" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, 0.80)})
    for size, value in (("small", 0.60), ("base", 0.70)):
        _write_eval(root / f"base-{size}" / "overall.json",
                    {"baseline": ({"role": "baseline", "student": "btc",
                                   "tags": {"size": size}}, value)})
    for pool, value in (("1", 0.74), ("4", 0.78)):
        _write_eval(root / f"s2-{pool}" / "overall.json",
                    {"stage2": ({"role": "stage2", "student": "btc",
                                 "tags": {"pool": pool, "size": "base"}}, value)})
    rows = _rows(build_table(discover(root)))
    assert rows["stage2 (pool=4, size=base) - baseline (size=base)"]["values"]["mean"] == \
        pytest.approx(8.0)
    assert rows["stage2 (pool=1, size=base) - teacher"]["values"]["mean"] == pytest.approx(-6.0)
    assert "stage2 (pool=4, size=base) - baseline (size=small)" not in rows


def test_a_viterbi_decoded_model_is_its_own_row_beside_the_argmax_one(tmp_path):
    root = tmp_path / "runs"
    _write_eval(root / "s2" / "overall.json", {
        "stage2": ({"role": "stage2", "student": "btc"}, 0.70),
        "smooth": ({"role": "stage2", "student": "btc", "decoding": "viterbi(p=0.9)"}, 0.73),
    })
    table = build_table(discover(root))
    assert [r["row"] for r in table["btc"]] == ["stage2", "stage2+viterbi",
                                                "stage2+viterbi - stage2"]
    assert table["btc"][2]["values"]["triads"] == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------
# paired per-song comparisons and the curve


def test_paired_comparison_averages_each_song_over_seeds_before_differencing(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    teacher = {"a": 0.50, "b": 0.60, "c": 0.70}
    _write_eval(root / "teacher" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, teacher)})
    seeds = [{"a": 0.52, "b": 0.58, "c": 0.80}, {"a": 0.56, "b": 0.60, "c": 0.72}]
    for k, songs in enumerate(seeds, start=1):
        _write_eval(root / f"s2-{k}" / "overall.json",
                    {"stage2": ({"role": "stage2", "student": "btc", "seed": k}, songs)})
    assert main(["results", "--runs", str(root), "--out", str(out), "--resamples", "2000"]) == 0
    data = json.loads((out / "paired.json").read_text())
    (mean,) = [c for c in data["comparisons"]
               if c["comparison"] == "stage2 - teacher" and c["column"] == "mean"]
    # per song, seeds averaged first: a 54 - 50 = +4, b 59 - 60 = -1, c 76 - 70 = +6 points
    assert mean["mean"] == pytest.approx((4 - 1 + 6) / 3)
    assert (mean["n_songs"], mean["wins"], mean["losses"]) == (3, 2, 1)
    assert mean["low"] <= mean["mean"] <= mean["high"] and mean["resamples"] == 2000
    assert mean["low"] >= -1.0 - 1e-9 and mean["high"] <= 6.0 + 1e-9  # means of songs' diffs
    md = (out / "paired.md").read_text()
    assert f"stage2 - teacher: {mean['mean']:+.2f} (95% CI [{mean['low']:+.2f}, " in md
    assert "2 of 3 songs better, 1 worse" in md
    with open(out / "paired.csv", newline="") as f:
        assert {r["column"] for r in csv.DictReader(f)} == {"mean", *METRICS}


def test_curve_is_stage2_minus_teacher_and_baseline_per_pool_and_size(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    _write_eval(root / "teacher" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, 0.80)})
    baselines = {"small": 0.60, "base": 0.70}
    for size, value in baselines.items():
        _write_eval(root / f"base-{size}" / "overall.json",
                    {"baseline": ({"role": "baseline", "student": "btc",
                                   "tags": {"size": size}}, value)})
    planted = {("1", "small"): 0.70, ("4", "small"): 0.75, ("16", "small"): 0.82,
               ("1", "base"): 0.76, ("4", "base"): 0.81, ("16", "base"): 0.85}
    for (pool, size), value in planted.items():
        _seeds(root, "stage2", [value - 0.01, value, value + 0.01], {"pool": pool, "size": size})
    assert main(["results", "--runs", str(root), "--out", str(out), "--curve", "pool",
                 "--resamples", "500"]) == 0
    points = json.loads((out / "curve.json").read_text())["points"]
    assert [(p["series"], p["x"]) for p in points] == [
        ("base", "1"), ("base", "4"), ("base", "16"),
        ("small", "1"), ("small", "4"), ("small", "16")]
    for p in points:
        value = planted[(p["x"], p["series"])]
        assert p["n"] == 3 and p["stage2"] == pytest.approx(100 * value)
        assert p["minus_teacher"] == pytest.approx(100 * (value - 0.80))
        assert p["minus_baseline"] == pytest.approx(100 * (value - baselines[p["series"]]))
        assert p["minus_teacher_per_song"] == pytest.approx(p["minus_teacher"])
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| btc | 16 | base | 3 | 85.00 ± 1.00 | 80.00 | 70.00 | +5.00 |" in \
        (out / "curve.md").read_text()
    with open(out / "curve.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_curve_of_an_absent_tag_says_which_tag(runs, tmp_path, capsys):
    assert main(["results", "--runs", str(runs), "--out", str(tmp_path / "r"), "--curve", "pool",
                 "--resamples", "100"]) == 2
    assert "--curve pool: no stage2 row is tagged pool=" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# agreement with the teacher across evaluation folders


def test_agreement_is_measured_from_the_estimates_of_separate_runs(tmp_path):
    root = tmp_path / "runs"
    teacher = _write_eval(root / "teacher" / "overall.json",
                          {"teacher": ({"role": "teacher", "student": "btc"}, 0.80)})
    student = _write_eval(root / "s2" / "overall.json", {
        "stage2": ({"role": "stage2", "student": "btc"}, 0.70),
        "copy": ({"role": "copy", "student": "btc"}, 0.70)})
    lab = np.array([[0.0, 4.0]]), ["C:maj"]
    write_lab(teacher.parent / "estimates" / "teacher" / "song.lab", *lab)
    write_lab(student.parent / "estimates" / "copy" / "song.lab", *lab)
    # one second of four names another chord (C:min: no majmin match, 2 notes shared: no mirex)
    write_lab(student.parent / "estimates" / "stage2" / "song.lab",
              np.array([[0.0, 3.0], [3.0, 4.0]]), ["C:maj", "C:min"])
    rows = _rows(build_table(discover(root)))
    assert rows["copy"]["values"]["agree_majmin"] == pytest.approx(100.0)
    assert rows["stage2"]["values"]["agree_majmin"] == pytest.approx(75.0)
    assert rows["stage2"]["values"]["agree_mirex"] == pytest.approx(75.0)
    assert math.isnan(rows["teacher"]["values"]["agree_majmin"])


def test_an_ablation_row_is_compared_with_its_row_on_the_seeds_both_have(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "results"
    _write_eval(root / "teacher" / "overall.json",
                {"teacher": ({"role": "teacher", "student": "btc"}, {"a": 0.5, "b": 0.5})})
    for seed, acc in ((0, {"a": 0.70, "b": 0.60}), (1, {"a": 0.90, "b": 0.90})):
        _write_eval(root / f"s2-{seed}" / "overall.json",
                    {"stage2": ({"role": "stage2", "student": "btc", "seed": seed}, acc)})
    # run at seed 0 only: +2 and +4 points over stage 2's seed 0 (seed 1 would make it -18)
    _write_eval(root / "ablations" / "overall.json", {"stage2-nokd": (
        {"role": "stage2-nokd", "student": "btc", "seed": 0}, {"a": 0.72, "b": 0.64})})
    assert main(["results", "--runs", str(root), "--out", str(out), "--resamples", "200"]) == 0
    rows = [r["row"] for r in json.loads((out / "results.json").read_text())["students"]["btc"]]
    assert rows.index("stage2-nokd") == rows.index("stage2") + 1
    assert "stage2-nokd - stage2" in rows
    paired = json.loads((out / "paired.json").read_text())["comparisons"]
    (mean,) = [c for c in paired if c["comparison"] == "stage2-nokd - stage2" and c["column"] == "mean"]
    assert mean["mean"] == pytest.approx(3.0) and mean["wins"] == 2
