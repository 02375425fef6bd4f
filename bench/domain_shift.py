"""Domain shift between renderers: a teacher trained on numpy-rendered songs and one trained on
the same songs rendered with sampled GM instruments (SoundFont), each evaluated on both test
parts and on the score-rendered test part of the ``realistic`` preset.

    .venv/bin/python bench/domain_shift.py [--out bench/out/domain_shift] [--epochs 40] \\
        [--val-every 5] [--scores data/realistic/test_scores]

Steps (each reuses what is already there):

1. the demo preset's ``teacher``, ``valid`` and ``test`` parts (same song indices and seed as
   ``chordkd synth --preset demo``), once per renderer;
2. ``chordkd fit experiments/teacher.yaml`` on each renderer's teacher part (its valid part
   for checkpoint selection), ``trainer.max_epochs`` from ``--epochs``; the two fits run side
   by side, one thread each;
3. ``chordkd evaluate`` of both teachers on the numpy test part, the SoundFont test part and
   the score-rendered test part (``--scores``; its ``manifest_aside.csv``: score-derived
   labels, so that column is *agreement with score-derived labels*, not accuracy against
   expert annotation).

Writes ``bench/domain_shift.md`` and ``bench/domain_shift.json``: majmin and mirex WCSR (%)
per teacher and test part, with the commands and run times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.synth.corpus import make_corpus  # noqa: E402
from chordkd.synth.presets import PRESETS  # noqa: E402

RENDERERS = {"numpy": "builtin", "SoundFont": "soundfont"}
PARTS = ("teacher", "valid", "test")


ENV = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))


def chordkd(*args: str) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "chordkd", *args]
    print("[domain-shift]", " ".join(args), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=ENV)
    return done.stdout, time.perf_counter() - t0


def fit_side_by_side(runs: dict[str, list[str]], logs: Path) -> dict[str, float]:
    """``chordkd fit`` for every entry at once (one torch thread each); seconds per run."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(ENV, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0, procs, seconds = time.perf_counter(), {}, {}
    for name, args in runs.items():
        print("[domain-shift] fit", " ".join(args), flush=True)
        with open(logs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "chordkd", "fit", *args],
                                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"fit {name} failed: see {logs / f'{name}.log'}")
        seconds[name] = time.perf_counter() - t0
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(BENCH / "out" / "domain_shift"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--val-every", type=int, default=5, help="epochs between validations")
    p.add_argument("--scores", default=str(ROOT / "data" / "realistic" / "test_scores"),
                   help="the realistic preset's score-rendered test part")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    out = Path(args.out)
    demo = PRESETS["demo"]
    times: dict[str, float] = {}
    for name, renderer in RENDERERS.items():
        t0 = time.perf_counter()
        for part in PARTS:
            spec = demo.parts[part]
            make_corpus(out / "data" / name / part, spec.songs, demo.seconds, seed=0,
                        first_index=spec.first_index, style=demo.style, renderer=renderer,
                        workers=args.workers, progress=False)
        times[f"synth {name}"] = time.perf_counter() - t0
    checkpoints, runs = {}, {}
    for name in RENDERERS:
        data = out / "data" / name
        runs[name] = ["experiments/teacher.yaml", f"data.train={data / 'teacher'}",
                      f"data.valid={data / 'valid'}", f"data.test={data / 'test'}",
                      f"trainer.max_epochs={args.epochs}",
                      f"trainer.check_val_every_n_epoch={args.val_every}",
                      f"runs_dir={out / 'runs'}", "logger.kind=csv"]
        run_dir, _ = chordkd("fit", *runs[name], "--print-run-dir")
        checkpoints[name] = Path(run_dir.strip().splitlines()[-1]) / "checkpoints" / "best.ckpt"
    for name, seconds in fit_side_by_side(runs, out / "logs").items():
        times[f"train {name} teacher"] = seconds
    tests = {"numpy test": out / "data" / "numpy" / "test" / "manifest.csv",
             "SoundFont test": out / "data" / "SoundFont" / "test" / "manifest.csv",
             "scores (agreement with score-derived labels)":
                 Path(args.scores) / "manifest_aside.csv"}
    table: dict[str, dict[str, dict]] = {}
    for test, manifest in tests.items():
        report = out / "eval" / test.split(" ")[0]
        _, seconds = chordkd("evaluate", *map(str, checkpoints.values()), "--data", str(manifest),
                             "--out", str(report), "--names", *[f"{n}-teacher" for n in RENDERERS])
        times[f"evaluate on {test}"] = seconds
        overall = json.loads((report / "overall.json").read_text())
        for name in RENDERERS:
            m = overall["models"][f"{name}-teacher"]["metrics"]
            table.setdefault(f"teacher trained on {name} songs", {})[test] = {
                "majmin": round(100 * m["majmin"], 1), "mirex": round(100 * m["mirex"], 1)}
    result = {"epochs": args.epochs, "val_every": args.val_every, "table": table, "seconds": {k: round(v, 1) for k, v in
                                                                 times.items()},
              "checkpoints": {k: str(v) for k, v in checkpoints.items()}}
    write_json(BENCH / "domain_shift.json", result)
    cols = list(tests)
    lines = ["# Domain shift between renderers (`bench/domain_shift.py`)", "",
             f"Teachers: `experiments/teacher.yaml` (BTC small), {args.epochs} epochs "
             f"(validation every {args.val_every}), on the demo preset's teacher part (48 songs x "
             "40 s) rendered by each renderer, trained side by side; valid part of the same "
             "renderer for checkpoint selection. Cells: WCSR majmin / mirex (%), argmax decoding.",
             "",
             "| teacher | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row, cells in table.items():
        lines.append(f"| {row} | " + " | ".join(
            f"{cells[c]['majmin']} / {cells[c]['mirex']}" for c in cols) + " |")
    lines += ["", "The last column compares with labels derived from the scores (per beat, all "
              "sounding notes): agreement with an automatic analysis, not accuracy against expert "
              "annotation.", "", "Run times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                                 result["seconds"].items()), ""]
    write_text(BENCH / "domain_shift.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
