"""``chordkd sweep FILE [key=value ...]``: run a W&B sweep file locally, offline, run by run.

The same file drives ``wandb sweep FILE`` / ``wandb agent`` when online. It is a standard W&B
sweep configuration whose ``command`` calls ``chordkd fit <experiment.yaml> ${args_no_hyphens}``
(W&B then passes each trial's parameters as ``key=value`` overrides, so every DDP rank parses
the same argv). Locally, ``grid`` enumerates every combination of ``values``; ``random`` draws
``--count`` trials (seeded) from ``values`` or from ``uniform``, ``log_uniform_values``,
``int_uniform`` and ``q_uniform`` distributions. Each trial is an ordinary ``chordkd fit`` run
(its own run folder, resumable, logged like any run); the sweep's table of the metric per
trial is written to ``<runs_dir>/sweeps/<name>/results.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from chordkd.errors import ConfigError

log = logging.getLogger(__name__)
METHODS = ("grid", "random")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="W&B sweep YAML (see experiments/sweeps/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="fixed overrides for every trial (e.g. init=PATH)")
    p.add_argument("--count", type=int, default=None, help="trials for method=random (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random search")
    p.add_argument("--dry-run", action="store_true", help="print the trials' overrides and stop")


def load_sweep(path: str | Path) -> dict:
    """Read and validate a sweep file; ConfigError names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # keep ${env}, ${args...}
    method = spec.get("method")
    if method not in METHODS:
        raise ConfigError(f"{path}: field 'method' must be one of {', '.join(METHODS)} locally, got {method!r}")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{path}: field 'parameters' must map config keys to search spaces")
    command = [str(c) for c in spec.get("command", [])]
    experiment = next((c for c in command if c.endswith((".yaml", ".yml"))), None)
    if experiment is None:
        raise ConfigError(f"{path}: field 'command' names no experiment YAML (chordkd fit FILE ...)")
    fixed = [c for c in command if "=" in c and not c.startswith("$")]
    for key, space in params.items():
        if not isinstance(space, dict) or not ({"values", "value", "distribution"} & set(space)):
            raise ConfigError(f"{path}: parameters.{key} needs 'values', 'value' or 'distribution'")
        if method == "grid" and "distribution" in space:
            raise ConfigError(f"{path}: parameters.{key}: grid search needs 'values', not a distribution")
    return {**spec, "experiment": experiment, "fixed": fixed, "name": spec.get("name", path.stem)}


def trials(spec: dict, count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The parameter sets to run, in order."""
    params = spec["parameters"]
    keys = sorted(params)
    if spec["method"] == "grid":
        grids = [params[k]["values"] if "values" in params[k] else [params[k]["value"]] for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*grids)]
    rng = np.random.default_rng(seed)
    return [{k: _draw(rng, k, params[k]) for k in keys} for _ in range(count or 10)]


def _draw(rng: np.random.Generator, key: str, space: dict) -> Any:
    if "value" in space:
        return space["value"]
    if "values" in space:
        return space["values"][int(rng.integers(len(space["values"])))]
    dist = space["distribution"]
    lo, hi = space.get("min"), space.get("max")
    if dist == "uniform":
        return float(rng.uniform(lo, hi))
    if dist == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if dist == "int_uniform":
        return int(rng.integers(lo, hi + 1))
    if dist == "q_uniform":
        q = space.get("q", 1.0)
        return float(round(rng.uniform(lo, hi) / q) * q)
    raise ConfigError(f"parameters.{key}: distribution {dist!r} is not supported locally")


def run(args: argparse.Namespace) -> int:
    from chordkd.atomic import write_json, write_text
    from chordkd.training.config import load_config, run_dir
    from chordkd.training.fit import fit

    spec = load_sweep(args.file)
    metric = (spec.get("metric") or {}).get("name", "val/mirex")
    plan = trials(spec, args.count, args.seed)
    rows = []
    for i, params in enumerate(plan):
        overrides = spec["fixed"] + list(args.overrides) + [f"{k}={v}" for k, v in params.items()]
        overrides.append(f"logger.tags=[sweep-{spec['name']}]")
        cfg = load_config(spec["experiment"], overrides)
        print(f"[{i + 1}/{len(plan)}] {' '.join(f'{k}={v}' for k, v in params.items())} -> {run_dir(cfg)}")
        if args.dry_run:
            continue
        summary = fit(cfg)
        score = summary.get("best_score") if summary.get("monitor") == metric else None
        rows.append({**params, metric: score, "run_dir": summary["run_dir"],
                     **{k: v for k, v in summary.get("test", {}).items()}})
    if args.dry_run or not rows:
        return 0
    out = Path(load_config(spec["experiment"], spec["fixed"] + list(args.overrides)).runs_dir)
    out = out / "sweeps" / spec["name"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    write_text(out / "results.md", "\n".join(lines) + "\n")
    write_text(out / "results.csv", "\n".join([",".join(keys)] + [
        ",".join(_fmt(r.get(k)) for k in keys) for r in rows]) + "\n")
    write_json(out / "results.json", {"sweep": spec["name"], "metric": metric, "trials": rows})
    print("\n".join(lines))
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)
