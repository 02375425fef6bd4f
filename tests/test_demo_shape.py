"""The demo has the paper's shape (issue 13): a teacher trained on a labelled set L, an
unlabelled pool at least ten times L, stage 1 on the pool alone, stage 2 and the baseline on L
itself (the songs the teacher saw), and every row repeated per seed.

Read from what `make` would run (`make -n`) and from the configs it runs, so a change to the
Makefile or the experiments that breaks the shape fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from chordkd.synth.presets import PRESETS, part_plan
from chordkd.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def make_dry(*args: str) -> list[str]:
    """The commands `make -n ARGS` prints, one per logical line (continuations joined)."""
    # run as a top-level make even under `make test` (no "make[1]: Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/bin/chordkd", *args],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
                         env=env).stdout
    return [line for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def fit_overrides(commands: list[str], experiment: str) -> list[str]:
    """The key=value overrides of the first `chordkd fit experiments/EXPERIMENT.yaml` run."""
    for line in commands:
        # drop command substitutions ($(chordkd fit teacher.yaml ... --print-run-dir)): their
        # words belong to another run
        words = shlex.split(re.sub(r"\$\([^()]*\)", "", line))
        if "fit" in words and f"experiments/{experiment}.yaml" in words and "--print-run-dir" not in words:
            return [w for w in words if "=" in w and not w.startswith("init=")]
    raise AssertionError(f"make runs no fit of {experiment}: {commands}")


def hours(pieces) -> float:
    return sum(p.songs * (p.seconds or PRESETS["realistic"].seconds) for p in pieces) / 3600


def test_the_realistic_pool_is_at_least_ten_times_the_labelled_set():
    plan = part_plan(PRESETS["realistic"])
    assert hours(plan["pool"]) >= 10 * hours(plan["train"])


def test_teacher_baseline_and_stage2_train_on_one_labelled_set_and_stage1_on_the_pool():
    commands = make_dry("demo", "SEED=0")
    train = {}
    for experiment in ("teacher", "baseline", "stage1", "stage2"):
        cfg = load_config(EXPERIMENTS / f"{experiment}.yaml",
                          fit_overrides(commands, experiment) + ["init=x.ckpt"])
        train[experiment] = cfg.data.train
        if experiment != "stage1":
            assert cfg.data.test == "data/realistic/test"
    assert train["teacher"] == train["baseline"] == train["stage2"] == "data/realistic/train"
    assert train["stage1"] == "data/realistic/pool"
    baseline = load_config(EXPERIMENTS / "baseline.yaml", fit_overrides(commands, "baseline"))
    teacher = load_config(EXPERIMENTS / "teacher.yaml", fit_overrides(commands, "teacher"))
    # the baseline is the teacher's recipe (only the name, role and seed differ)
    for key in ("loss", "optim", "trainer", "model", "data"):
        assert baseline[key] == teacher[key], key
    assert baseline.seed != teacher.seed


@pytest.mark.parametrize("seed", [0, 2])
def test_every_row_of_a_seed_is_trained_and_evaluated_with_that_seed(seed):
    commands = make_dry("demo", f"SEED={seed}")
    for experiment in ("baseline", "stage1", "stage2"):
        assert f"seed={seed}" in fit_overrides(commands, experiment)
    assert f"seed={1000 + seed}" in fit_overrides(commands, "teacher")
    evaluations = [c for c in commands if " evaluate " in f" {c} "]
    assert evaluations and all(f"--seed {seed}" in c and f"runs/eval/seed{seed}/" in c
                               for c in evaluations)
    labels = [c for c in commands if " label " in f" {c} "]
    assert labels and all(f"runs/teacher_cache/seed{seed}/" in c for c in labels)


def test_make_seeds_repeats_every_student_for_n_seeds_then_tabulates():
    commands = make_dry("seeds", "N=3", "STUDENTS=btc 2e1d")
    (loop,) = [c for c in commands if c.startswith("for s in")]
    assert commands[-1].endswith("results")
    # make -n also dry-runs the sub-makes: one evaluation per seed and student
    for seed in range(3):
        for student in ("btc", "2e1d"):
            assert any(f"runs/eval/seed{seed}/{student}" in c for c in commands)
    assert re.search(r"seq 0 \$\(\(3 - 1\)\)", loop) and "for st in btc 2e1d" in loop
    assert "evaluate SEED=$s STUDENT=$st" in loop


def test_make_scaling_grows_the_pool_and_holds_out_a_share_of_each_pool_for_stage1():
    commands = make_dry("scaling", "SEED=0")
    (loop,) = [" ".join(c.split()) for c in commands if "for n in 1 4 16" in c]
    assert "for size in small base" in loop
    assert "synth --preset realistic --parts pool --pool-hours" in loop
    # a fixed 9 held-out songs would leave the 1x pool (~16 songs) almost nothing to train on
    assert "data.valid_holdout=$held" in loop and "round(n * 0.05" in loop
    # the same number of stage-1 passes over every pool, ending on a validation epoch (every 5th)
    (epochs,) = re.findall(r"trainer\.max_epochs=(\d+)", loop)
    assert int(epochs) % 5 == 0
    assert "--curve pool --series size" in commands[-1]


def test_make_probe_probes_songs_no_encoder_trained_on_and_fine_tunes_from_every_init():
    commands = make_dry("probe-encoders", "DATA=data/realistic", "TEACHER=madmom")
    probes = [c for c in commands if " probe " in f" {c} " and "--data" in c]
    assert any("--data data/probe " in c for c in probes)
    assert all("--data data/realistic/pool" not in c for c in probes)
    # the students' own input and every trained encoder at a middle block, beside the last layer
    names = probes[0].split("--names")[1].split()
    assert {"random", "cqt", "teacher", "ssl_masked", "ssl_masked@2", "stage2@2"} <= set(names)
    assert probes[0].count("best.ckpt@2") == 5  # not inside stage 2's init=
    (evaluation,) = [c for c in commands if "-init" in c and " evaluate " in f" {c} "]
    for row in ("random", "ssl", "ssl_masked", "stage1"):
        assert f"stage2-from-{row} " in evaluation
