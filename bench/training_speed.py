"""Student training throughput (frames per second) and peak memory, one configuration per process.

One training step is what ``StudentModule.training_step`` runs for stage 1: the student
(``ChordModel`` = scalar normalisation + network, train mode, dropout on) on raw log-CQT
``[batch, 108, 144]``, focal loss (gamma 2) against ``[batch, 108]`` classes, backward, AdamW
(lr 1e-4, weight decay 1e-5). ``bf16-mixed`` wraps forward and loss in
``torch.autocast(device, bfloat16)`` with float32 weights and optimiser state, which is what
Lightning's ``bf16-mixed`` precision does.

Peak memory needs a fresh process per configuration: on CPU it is the peak resident set
after the steps minus the peak before the model is built (tracemalloc does not see torch's
allocator). The peak is read from ``VmHWM`` in ``/proc/self/status``, not
``getrusage().ru_maxrss``: Linux keeps ``ru_maxrss`` across ``execve``, so a child started by
a large parent (``run_all.py``) would report the parent's peak. On CUDA it is
``torch.cuda.max_memory_allocated``. On CUDA a thread polls ``nvidia-smi`` for GPU utilisation
while the timed steps run.

    .venv/bin/python bench/training_speed.py --student btc --precision bf16-mixed   # one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chordkd.models import ChordModel, build_student, count_parameters  # noqa: E402
from chordkd.training.losses import supervised_loss  # noqa: E402

WINDOW = 108
N_BINS = 144
N_CLASSES = 170
PRECISIONS = ("32-true", "bf16-mixed")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own address space so far, in bytes
    (``VmHWM``; where /proc is missing, ``ru_maxrss``, which survives ``execve``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_train_step(
    student: str = "btc",
    size: str = "base",
    batch: int = 32,
    precision: str = "32-true",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[Callable[[], None], torch.nn.Module]:
    """A closure running one full training step on a fixed random batch, and the model.

    The batch is log-CQT-like (values around the features' mean, -7 +- 2) so normalisation
    and attention see realistic magnitudes; its content does not change the arithmetic.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ChordModel(build_student(student, size, N_CLASSES), mean=-7.0, std=2.0).to(device)
    model.train()
    features = (-7.0 + 2.0 * torch.randn(batch, WINDOW, N_BINS, generator=g)).to(device)
    labels = torch.randint(0, N_CLASSES, (batch, WINDOW), generator=g).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    bf16 = precision == "bf16-mixed"

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = supervised_loss(model(features), labels, "focal", 2.0)
        loss.backward()
        optimiser.step()
        synchronize(device)

    return step, model


class GpuUtilisation:
    """Polls ``nvidia-smi`` every ``interval`` s in a thread; ``samples`` are percent busy."""

    def __init__(self, index: int = 0, interval: float = 0.2) -> None:
        self.index, self.interval = index, interval
        self.samples: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        cmd = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
               "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
                self.error = f"nvidia-smi: {e}"
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuUtilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"samples": 0, "error": self.error or "no samples"}
        s = sorted(self.samples)
        return {"samples": len(s), "mean_percent": sum(s) / len(s), "median_percent": s[len(s) // 2],
                "min_percent": s[0], "max_percent": s[-1]}


def measure(student: str, size: str, batch: int, precision: str, device: str, steps: int) -> dict:
    """Frames/s (best step and mean over ``steps``) and peak memory of one configuration.

    Call in a fresh process for a meaningful memory figure.
    """
    dev = torch.device(device)
    # Inputs and the allocator's first pages count in the baseline, not in the training cost.
    baseline_rss = peak_rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step, model = make_train_step(student, size, batch, precision, dev)
    t0 = time.perf_counter()
    step()  # warm-up: allocations, kernel selection, AdamW state
    warm_up_s = time.perf_counter() - t0
    times = []
    util = GpuUtilisation(dev.index or 0) if dev.type == "cuda" else None
    if util is not None:
        util.__enter__()
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    finally:
        if util is not None:
            util.__exit__()
    frames = batch * WINDOW
    result = {
        "student": student, "size": size, "precision": precision, "device": str(dev),
        "batch": batch, "window": WINDOW, "parameters": count_parameters(model),
        "threads": torch.get_num_threads(), "steps": steps, "warm_up_seconds": warm_up_s,
        "step_seconds": times, "best_step_seconds": min(times),
        "frames_per_second": frames / min(times),
        "mean_frames_per_second": frames * len(times) / sum(times),
        "windows_per_second": batch / min(times),
    }
    if dev.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(dev))
        result["memory_measure"] = "torch.cuda.max_memory_allocated"
        result["gpu_utilisation"] = util.summary()
    else:
        result["peak_memory_bytes"] = peak_rss_bytes() - baseline_rss
        result["peak_rss_bytes"] = peak_rss_bytes()
        result["memory_measure"] = "peak RSS (VmHWM) after the steps - peak RSS before the model"
    return result


def measure_in_subprocess(
    student: str, size: str, batch: int, precision: str, device: str, steps: int, threads: int
) -> tuple[dict, list[str]]:
    """Run :func:`measure` in a fresh interpreter; returns (its result, the exact command)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--student", student, "--size", size,
           "--batch", str(batch), "--precision", precision, "--device", device,
           "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="btc", choices=("btc", "2e1d"))
    ap.add_argument("--size", default="base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="32-true", choices=PRECISIONS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args.student, args.size, args.batch, args.precision, args.device, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
