"""Sweeps: W&B sweep files run locally and offline, one ordinary run per trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chordkd.cli import main as cli
from chordkd.errors import ConfigError
from chordkd.training.sweep import load_sweep, trials

SWEEPS = Path(__file__).resolve().parents[1] / "experiments" / "sweeps"


def test_grid_enumerates_every_combination():
    spec = load_sweep(SWEEPS / "stage2_kd.yaml")
    plan = trials(spec)
    assert len(plan) == 3 * 3 * 4
    assert {p["kd.rule"] for p in plan} == {"paper", "threshold", "agree", "all"}


def test_random_search_is_seeded_and_respects_bounds():
    spec = load_sweep(SWEEPS / "baseline_lr.yaml")
    a, b = trials(spec, count=5, seed=1), trials(spec, count=5, seed=1)
    assert a == b and len(a) == 5
    assert all(1e-4 <= t["optim.lr"] <= 3e-3 and t["loss.gamma"] in (0.0, 1.0, 2.0) for t in a)


def test_sweep_file_without_experiment_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {kd.alpha: {values: [0.1]}}\ncommand: [chordkd, fit]\n")
    with pytest.raises(ConfigError, match="command"):
        load_sweep(bad)


@pytest.mark.slow
def test_local_offline_sweep_of_two_runs_completes(tone_corpus, tmp_path):
    sweep = tmp_path / "tiny.yaml"
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "baseline.yaml"
    sweep.write_text(
        "name: tiny\nmethod: grid\nmetric: {name: val/mirex, goal: maximize}\n"
        "parameters:\n  optim.lr: {values: [0.001, 0.003]}\n"
        f"command: [chordkd, fit, {experiment}, '${{args_no_hyphens}}']\n"
    )
    rc = cli([
        "sweep", str(sweep), f"data.train={tone_corpus}", f"data.valid={tone_corpus}",
        "data.test=null", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        f"runs_dir={tmp_path}/runs", "trainer.enable_progress_bar=false",
    ])
    assert rc == 0
    result = json.loads((tmp_path / "runs" / "sweeps" / "tiny" / "results.json").read_text())
    assert [t["optim.lr"] for t in result["trials"]] == [0.001, 0.003]
    for t in result["trials"]:  # each trial's score is its own run's best validation score
        ckpt = torch.load(Path(t["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
        (best,) = [v["best_model_score"] for k, v in ckpt["callbacks"].items()
                   if k.startswith("ModelCheckpoint") and v["monitor"] == "val/mirex"]
        assert t["val/mirex"] == pytest.approx(float(best))
    offline = list((tmp_path / "runs").glob("*/wandb/offline-run-*"))
    assert len(offline) == 2  # one W&B run per trial, offline
