"""Student training throughput (frames per second) and peak memory, one configuration per process.

One training step is what ``StudentModule.training_step`` runs for stage 1: the student
(``ChordModel`` = scalar normalisation + network, train mode, dropout on) on raw log-CQT
``[batch, 108, 144]``, focal loss (gamma 2) against ``[batch, 108]`` classes, backward, AdamW
(lr 1e-4, weight decay 1e-5) with chordkd's default kernel (``optim.implementation=auto``). ``bf16-mixed`` wraps forward and loss in
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
import hashlib
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
from chordkd.training.student import ADAMW_IMPLEMENTATIONS, adamw  # noqa: E402

WINDOW = 108
N_BINS = 144
N_CLASSES = 170
PRECISIONS = ("32-true", "bf16-mixed")
OPTIMIZERS = ADAMW_IMPLEMENTATIONS  # auto = chordkd's default (fused; foreach under 16-mixed)
ATTENTION = ("default", "math")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def attention_context(backend: str):
    """``default``: torch picks the SDPA kernel (fused flash attention on CPU where it can);
    ``math``: the unfused matmul-softmax-matmul reference, as the official BTC code computes it."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {backend!r}")
    return nullcontext() if backend == "default" else sdpa_kernel(SDPBackend.MATH)


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
    optimizer: str = "auto",
    attention: str = "default",
    compile_mode: str | None = None,
    dropout: bool = True,
) -> tuple[Callable[[], None], torch.nn.Module]:
    """A closure running one full training step on a fixed random batch, and the model.

    The batch is log-CQT-like (values around the features' mean, -7 +- 2) so normalisation
    and attention see realistic magnitudes; its content does not change the arithmetic.
    Levers: ``optimizer`` (AdamW kernel, ``chordkd.training.student.adamw``), ``attention`` (SDPA
    backend, see :func:`attention_context`), ``compile_mode`` (``torch.compile`` of the model
    with that mode; None = eager). ``dropout=False`` puts the model in eval mode (same
    gradients path, no random masks) so two levers can be compared weight for weight.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ChordModel(build_student(student, size, N_CLASSES), mean=-7.0, std=2.0).to(device)
    model.train(dropout)
    features = (-7.0 + 2.0 * torch.randn(batch, WINDOW, N_BINS, generator=g)).to(device)
    labels = torch.randint(0, N_CLASSES, (batch, WINDOW), generator=g).to(device)
    optimiser = adamw(model.parameters(), 1e-4, 1e-5, optimizer, precision)
    bf16 = precision == "bf16-mixed"
    # the compiled wrapper shares the model's parameters: the optimiser above updates them
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with attention_context(attention), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = supervised_loss(forward(features), labels, "focal", 2.0)
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


def step_statistics(step_seconds: list[float], frames_per_step: int) -> dict:
    """Frames/s of the median step, with the spread: the fastest and slowest step and the
    interquartile range of frames/s. ``step_seconds``: one wall time per timed step."""
    if not step_seconds:
        raise ValueError("no timed steps")
    t = sorted(step_seconds)
    n = len(t)

    def quantile(q: float) -> float:  # linear interpolation, as numpy's default
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return t[lo] + (t[hi] - t[lo]) * (pos - lo)

    return {
        "steps": n, "median_step_seconds": quantile(0.5),
        "frames_per_second": frames_per_step / quantile(0.5),
        "frames_per_second_min": frames_per_step / t[-1],
        "frames_per_second_max": frames_per_step / t[0],
        "frames_per_second_iqr": [frames_per_step / quantile(0.75), frames_per_step / quantile(0.25)],
    }


def measure(student: str, size: str, batch: int, precision: str, device: str, steps: int,
            warm_up: int = 1) -> dict:
    """Frames/s (median of ``steps`` timed steps after ``warm_up`` untimed ones, with the
    spread) and peak memory of one configuration. Call in a fresh process for a meaningful
    memory figure.
    """
    dev = torch.device(device)
    # Inputs and the allocator's first pages count in the baseline, not in the training cost.
    baseline_rss = peak_rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step, model = make_train_step(student, size, batch, precision, dev)
    t0 = time.perf_counter()
    for _ in range(warm_up):
        step()  # allocations, kernel selection, AdamW state
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
    stats = step_statistics(times, frames)
    digest = hashlib.sha1()
    for p in model.parameters():  # same seed, same steps: equal digests mean bitwise-equal training
        digest.update(p.detach().cpu().numpy().tobytes())
    result = {
        "student": student, "size": size, "precision": precision, "device": str(dev),
        "batch": batch, "window": WINDOW, "parameters": count_parameters(model),
        "threads": torch.get_num_threads(), "warm_up_steps": warm_up, "warm_up_seconds": warm_up_s,
        "step_seconds": times, **stats,
        "windows_per_second": stats["frames_per_second"] / WINDOW,
        "weights_sha1": digest.hexdigest(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
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
    student: str, size: str, batch: int, precision: str, device: str, steps: int, threads: int,
    env: dict[str, str | None] | None = None,
) -> tuple[dict, list[str]]:
    """Run :func:`measure` in a fresh interpreter; returns (its result, the exact command).
    ``env``: variables to set (None: to remove) for that interpreter, e.g. OpenMP's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--student", student, "--size", size,
           "--batch", str(batch), "--precision", precision, "--device", device,
           "--steps", str(steps), "--threads", str(threads)]
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=child_env)
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
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up step(s)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args.student, args.size, args.batch, args.precision, args.device, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
