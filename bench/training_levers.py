"""Training-step levers side by side: which of torch's standard speed levers help chordkd's step.

Every lever is a variant of the stage-1 step of ``training_speed.make_train_step`` (BTC or
2E1D, ``ChordModel`` in train mode, focal loss, backward, AdamW, batch 32 x 108 x 144, fp32):

- ``eager``: the step as it was before the levers were measured (AdamW as torch picks it on
  CPU: the per-tensor loop);
- ``adamw foreach`` / ``adamw fused``: AdamW's multi-tensor and fused kernels (fused is
  chordkd's default now: ``optim.implementation=auto``);
- ``attention math``: SDPA forced to the unfused math kernel (what the official BTC computes);
  the eager step lets torch pick a fused kernel;
- ``1 thread``: ``torch.set_num_threads(1)`` instead of all offered threads;
- ``batch 16`` / ``batch 64``: the batch size (frames/s is what counts);
- ``compile <mode>``: ``torch.compile(model, mode=...)`` (the compile time is reported apart).

Throughput: all levers of one student and size live in one process and run round by round
(one step of each per round, after untimed warm-up steps), so a change in the machine's load
hits every lever alike. A lever's frames/s is its median over the rounds, with min and max;
its ratio to eager is the median over rounds of the paired ratio (same round).

Peak memory: per lever in a fresh process (``VmHWM`` after a warm-up step and one timed step,
minus ``VmHWM`` before the model is built; ``torch.cuda.max_memory_allocated`` on CUDA).

Equivalence: each lever that could become a default is run for 3 steps from the same
initial weights on the same batch with dropout off, at small size, next to eager; the
largest absolute weight difference is reported beside the largest weight update, so "matches
eager within float rounding" is a number, not a claim.

    .venv/bin/python bench/training_levers.py --student btc --size base      # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_speed import WINDOW, make_train_step, peak_rss_bytes, step_statistics  # noqa: E402

# name -> keyword arguments of make_train_step, plus "threads" and "batch"
LEVERS: dict[str, dict] = {
    "eager": {"optimizer": "for-loop"},
    "adamw foreach": {"optimizer": "foreach"},
    "adamw fused": {"optimizer": "fused"},
    "attention math": {"optimizer": "for-loop", "attention": "math"},
    "1 thread": {"optimizer": "for-loop", "threads": 1},
    "batch 16": {"optimizer": "for-loop", "batch": 16},
    "batch 64": {"optimizer": "for-loop", "batch": 64},
    "compile default": {"optimizer": "for-loop", "compile_mode": "default"},
    "compile max-autotune-no-cudagraphs": {"optimizer": "for-loop",
                                           "compile_mode": "max-autotune-no-cudagraphs"},
}
# levers that keep the arithmetic (so could become defaults); batch size changes the training
EQUIVALENCE_LEVERS = ("adamw foreach", "adamw fused", "attention math", "1 thread",
                      "compile default", "compile max-autotune-no-cudagraphs")
BATCH = 32


def _split(lever: str, batch: int = BATCH) -> tuple[dict, int | None, int]:
    """(make_train_step keyword arguments, thread count or None, batch size) of a lever;
    ``batch`` is the size of every lever but the batch levers."""
    if lever not in LEVERS:
        raise ValueError(f"unknown lever {lever!r}; known: {', '.join(LEVERS)}")
    kw = dict(LEVERS[lever])
    threads = kw.pop("threads", None)
    return kw, threads, kw.pop("batch", batch)


def interleaved(student: str, size: str, levers: list[str], rounds: int, device: str = "cpu",
                warm_up: int = 2, batch: int = BATCH) -> dict:
    """Frames/s of each lever, round by round in this process; see the module docstring."""
    if "eager" not in levers:
        raise ValueError("the eager step is the reference: include 'eager'")
    threads = torch.get_num_threads()
    steps, setup = {}, {}
    for lever in levers:
        kw, lever_threads, lever_batch = _split(lever, batch)
        torch.set_num_threads(lever_threads or threads)
        step, _ = make_train_step(student, size, lever_batch, "32-true", device, **kw)
        t0 = time.perf_counter()
        for _ in range(warm_up):  # compilation happens in the first call
            step()
        setup[lever] = time.perf_counter() - t0
        steps[lever] = (step, lever_threads or threads, lever_batch)
    times: dict[str, list[float]] = {lever: [] for lever in levers}
    for _ in range(rounds):
        for lever, (step, n_threads, _) in steps.items():
            torch.set_num_threads(n_threads)
            t0 = time.perf_counter()
            step()
            times[lever].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    rows = {}
    for lever, (_, n_threads, lever_batch) in steps.items():
        frames = lever_batch * WINDOW
        paired = sorted((frames / t) / (batch * WINDOW / e) for t, e in zip(times[lever], times["eager"]))
        rows[lever] = {
            "lever": lever, "threads": n_threads, "batch": lever_batch, "step_seconds": times[lever],
            **step_statistics(times[lever], frames),
            "warm_up_seconds": setup[lever], "warm_up_steps": warm_up,
            "over_eager": statistics.median(paired),
            "over_eager_min": paired[0], "over_eager_max": paired[-1],
        }
    return {"student": student, "size": size, "device": device, "rounds": rounds, "rows": rows}


def peak_memory(student: str, size: str, lever: str, device: str = "cpu") -> dict:
    """Peak memory of one lever's step (call in a fresh process): see the module docstring."""
    kw, lever_threads, batch = _split(lever)
    if lever_threads:
        torch.set_num_threads(lever_threads)
    dev = torch.device(device)
    baseline = peak_rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step, _ = make_train_step(student, size, batch, "32-true", dev, **kw)
    step()
    step()
    if dev.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(dev)),
                "memory_measure": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_bytes": peak_rss_bytes() - baseline,
            "memory_measure": "VmHWM after two steps - VmHWM before the model"}


def peak_memory_in_subprocess(student: str, size: str, lever: str, device: str,
                              threads: int) -> tuple[dict, list[str]]:
    """:func:`peak_memory` in a fresh interpreter; returns (its result, the command)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "memory", "--student", student,
           "--size", size, "--lever", lever, "--device", device, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), cmd


def weight_deviation(student: str, lever: str, steps: int = 3, size: str = "small",
                     device: str = "cpu", batch: int = BATCH) -> dict:
    """Largest |weight difference| between eager and ``lever`` after ``steps`` identical
    steps (same initial weights, same batch, dropout off), and the largest |update| of eager,
    for scale."""
    kw, lever_threads, lever_batch = _split(lever, batch)
    threads = torch.get_num_threads()
    ref_step, ref = make_train_step(student, size, batch, "32-true", device, dropout=False,
                                    **LEVERS["eager"])
    init = [p.detach().clone() for p in ref.parameters()]
    for _ in range(steps):
        ref_step()
    torch.set_num_threads(lever_threads or threads)
    try:
        step, model = make_train_step(student, size, lever_batch, "32-true", device, dropout=False, **kw)
        for _ in range(steps):
            step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(ref.parameters(), model.parameters()))
        update = max(float((a - b).abs().max()) for a, b in zip(ref.parameters(), init))
    return {"lever": lever, "size": size, "steps": steps, "max_abs_weight_difference": diff,
            "max_abs_weight_update": update}


# OpenMP's wait policy is read when the runtime loads, so each setting needs its own process.
WAIT_POLICIES: dict[str, str | None] = {"OpenMP default (spin, then sleep)": None,
                                        "OMP_WAIT_POLICY=PASSIVE": "PASSIVE"}


def wait_policy_rounds(student: str, size: str, rounds: int, steps: int, threads: int,
                       device: str = "cpu") -> dict:
    """Eager steps (chordkd's default AdamW) under each OpenMP wait policy, one fresh process
    per policy per round, policies alternating round by round. Per policy: the median over
    rounds of each process's median frames/s; the ratio is the median of per-round ratios.
    ``bitwise_equal``: whether every process ended with the same weights (same seed)."""
    from training_speed import measure_in_subprocess

    rates: dict[str, list[float]] = {name: [] for name in WAIT_POLICIES}
    digests, cmds = set(), []
    for _ in range(rounds):
        for name, value in WAIT_POLICIES.items():
            row, cmd = measure_in_subprocess(student, size, BATCH, "32-true", device, steps, threads,
                                             env={"OMP_WAIT_POLICY": value})
            rates[name].append(row["frames_per_second"])
            digests.add(row["weights_sha1"])
            cmds.append(("OMP_WAIT_POLICY=" + value + " " if value else "") + " ".join(cmd))
    default, passive = (rates[name] for name in WAIT_POLICIES)
    ratios = [b / a for a, b in zip(default, passive)]
    return {"student": student, "size": size, "threads": threads, "rounds": rounds,
            "steps_per_process": steps,
            "frames_per_second": {name: statistics.median(r) for name, r in rates.items()},
            "rounds_frames_per_second": rates,
            "passive_over_default": statistics.median(ratios),
            "passive_over_default_min": min(ratios), "passive_over_default_max": max(ratios),
            "bitwise_equal": len(digests) == 1, "commands": cmds}


def optimizer_step_seconds(student: str, size: str = "base", repeats: int = 15,
                           threads: tuple[int, ...] = (1, 2)) -> list[dict]:
    """Median seconds of ``optimizer.step()`` alone for each AdamW kernel (random gradients,
    the student's parameters), per thread count: the lever's effect without the noise of a
    whole step."""
    from chordkd.models import build_student
    from chordkd.training.student import adamw

    saved = torch.get_num_threads()
    model = build_student(student, size, 170)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            for impl in ("for-loop", "foreach", "fused"):
                opt = adamw(model.parameters(), 1e-4, 1e-5, impl)
                opt.step()
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    opt.step()
                    times.append(time.perf_counter() - t0)
                rows.append({"student": student, "size": size, "threads": n, "implementation": impl,
                             "median_seconds": statistics.median(times)})
    finally:
        torch.set_num_threads(saved)
    return rows


def dropout_mask_seconds(shape: tuple[int, ...] = (BATCH, 4, WINDOW, WINDOW), repeats: int = 10,
                         keep: float = 0.8) -> dict:
    """Median seconds for one dropout mask of ``shape`` (BTC-base attention weights by
    default) with ``bernoulli_`` (what ``F.dropout`` and SDPA's dropout draw) and with
    ``rand < keep`` (the same distribution from another random stream), and of a softmax of
    the same tensor, for scale."""
    x = torch.randn(shape)
    mask = torch.empty(shape)

    def median(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return {"shape": list(shape), "threads": torch.get_num_threads(),
            "bernoulli_seconds": median(lambda: mask.bernoulli_(keep)),
            "rand_less_than_seconds": median(lambda: torch.rand_like(x) < keep),
            "softmax_seconds": median(lambda: x.softmax(-1))}


def profile_step(student: str, size: str = "base", threads: int = 1, top: int = 8) -> dict:
    """Where one fp32 training step's CPU time goes (``torch.profiler``, two steps after a
    warm-up): the ``top`` operators by self time, as fractions of the total."""
    from torch.profiler import ProfilerActivity, profile

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step, _ = make_train_step(student, size, BATCH, "32-true", "cpu", **LEVERS["eager"])
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
            step()
    finally:
        torch.set_num_threads(saved)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {"student": student, "size": size, "threads": threads,
            "top": [{"op": e.key, "fraction": e.self_cpu_time_total / total} for e in ranked]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("speed", "memory"):
        sp = sub.add_parser(name)
        sp.add_argument("--student", default="btc", choices=("btc", "2e1d"))
        sp.add_argument("--size", default="base")
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--threads", type=int, default=os.cpu_count() or 1)
        if name == "speed":
            sp.add_argument("--levers", default=",".join(LEVERS), help="comma-separated lever names")
            sp.add_argument("--rounds", type=int, default=5)
        else:
            sp.add_argument("--lever", required=True, choices=tuple(LEVERS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "memory":
        result = peak_memory(args.student, args.size, args.lever, args.device)
    else:
        result = interleaved(args.student, args.size, args.levers.split(","), args.rounds, args.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
