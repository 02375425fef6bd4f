"""bench/gpu_check.py runs the whole GPU path; without a GPU its CPU smoke run shows that
every step works end to end and writes a report that says it is not a GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE_BTC

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def test_goals_hold_only_at_or_above_their_thresholds_and_unmeasured_ones_say_so():
    r = {"labelling": {"steady_state_x_real_time": 5000.0}, "cqt": {"speedup": 49.9}, "stage1": {}}
    by_goal = {v["goal"].split(" ")[0]: v["holds"] for v in gpu_check.verdicts(r)}
    assert by_goal == {"labelling": True, "LogCQT": False, "stage-1": None}


@pytest.mark.slow
@pytest.mark.skipif(not (FIXTURE_BTC / "checkpoint.pt").is_file(), reason="shared BTC fixture not present")
def test_cpu_smoke_run_covers_every_step_and_writes_both_reports(tmp_path: Path):
    # through the shell script, as a user runs it
    subprocess.run([str(BENCH / "gpu_check.sh"), "--accelerator", "cpu", "--quick", "--out", str(tmp_path),
                    "--scratch", str(tmp_path / "scratch")], check=True, capture_output=True,
                   env={**os.environ, "PY": sys.executable})
    r = json.loads((tmp_path / "gpu_results.json").read_text())
    assert r["complete"] and set(r["step_seconds"]) == {
        "synth", "cqt", "labelling", "stage1", "ddp", "transcription"}
    assert r["stage1"]["steps"] == r["plan"]["steps"] and 0 <= r["stage1"]["data_wait_fraction"] < 1
    assert r["ddp"]["ok"] and r["ddp"]["processes"] == 2
    assert r["transcription"]["labs_written"] == r["transcription"]["songs"] == r["plan"]["songs"]
    md = (tmp_path / "gpu_results.md").read_text()
    assert "Not a GPU run" in md and "CPU (smoke run)" in md
