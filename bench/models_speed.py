"""Speed of the student networks on CPU: inference and training windows per second.

Writes ``bench/out/models_speed.json`` and ``bench/out/models_speed.md``. Each row is one
student and size at 108-frame windows, batch 32 (``--batch``), float32, ``--threads`` CPU
threads (2 by default, the CI machines'). Training is forward + cross-entropy + backward +
AdamW step in train mode (dropout on). Also compares BTC's attention core as the official
code computes it (matmul, additive -inf mask, softmax, matmul) with the
``scaled_dot_product_attention`` call that ``chordkd.models.btc`` uses.

    .venv/bin/python bench/models_speed.py [--threads 2] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from chordkd.atomic import write_json, write_text
from chordkd.models import SIZES, STUDENT_NAMES, build_student, count_parameters

FRAMES = 108
OUT = Path(__file__).resolve().parent / "out"


def _fastest_seconds(step: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed runs: other processes only ever slow a run down."""
    step()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_student(name: str, size: str, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = build_student(name, size, 170)
    x = torch.randn(batch, FRAMES, 144)
    y = torch.randint(0, 170, (batch, FRAMES))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def infer() -> None:
        with torch.no_grad():
            net(x)

    def train() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.cross_entropy(net(x).flatten(0, 1), y.flatten()).backward()
        optimiser.step()

    net.eval()
    infer_s = _fastest_seconds(infer, repeats)
    net.train()
    train_s = _fastest_seconds(train, repeats)
    return {
        "name": name,
        "size": size,
        "parameters": count_parameters(net),
        "inference_windows_per_s": batch / infer_s,
        "training_windows_per_s": batch / train_s,
    }


def bench_attention(batch: int, repeats: int) -> dict:
    heads, depth = 4, 32
    q, k, v = (torch.randn(batch, heads, FRAMES, depth) for _ in range(3))
    allowed = torch.ones(FRAMES, FRAMES, dtype=torch.bool).tril()
    additive = torch.zeros(FRAMES, FRAMES).masked_fill(~allowed, float("-inf"))

    def official() -> torch.Tensor:
        logits = (q * depth**-0.5) @ k.transpose(-1, -2) + additive
        return torch.softmax(logits, dim=-1) @ v

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)

    max_diff = (official() - sdpa()).abs().max().item()
    official_s = _fastest_seconds(official, repeats * 10)
    sdpa_s = _fastest_seconds(sdpa, repeats * 10)
    return {
        "shape": [batch, heads, FRAMES, depth],
        "official_ms": official_s * 1e3,
        "sdpa_ms": sdpa_s * 1e3,
        "speed_up": official_s / sdpa_s,
        "max_abs_difference": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # other processes on the machine skew every figure; record how busy it was
    load_before = os.getloadavg()[0]

    rows = []
    for name in STUDENT_NAMES:
        for size in SIZES:
            rows.append(bench_student(name, size, args.batch, args.repeats))
            print(rows[-1], flush=True)
    attention = bench_attention(args.batch, args.repeats)
    print(attention)

    result = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "batch": args.batch,
        "frames": FRAMES,
        "students": rows,
        "btc_attention_core": attention,
    }
    lines = [
        f"# Student speed, CPU, {args.threads} threads, batch {args.batch} x {FRAMES} frames",
        "",
        f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (figures are only comparable on an idle machine).",
        "",
        "| student | size | parameters | inference windows/s | training windows/s |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['name']} | {r['size']} | {r['parameters']:,} | "
        f"{r['inference_windows_per_s']:.1f} | {r['training_windows_per_s']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        f"BTC attention core {attention['shape']}: official {attention['official_ms']:.2f} ms, "
        f"SDPA {attention['sdpa_ms']:.2f} ms ({attention['speed_up']:.1f}x), "
        f"max |difference| {attention['max_abs_difference']:.1e}.",
        "",
    ]
    write_json(OUT / "models_speed.json", result)
    write_text(OUT / "models_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
