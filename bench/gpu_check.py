"""The GPU path end to end in one prepared run (``bench/gpu_check.sh`` calls this).

On the device (``--accelerator gpu``, the default) it runs, in order, each step timed:

1. a ``chordkd synth`` corpus (builtin renderer), replicated under new song ids to
   ``--replicas`` times its length (``data_path.replicate_manifest``);
2. **CQT**: ``LogCQT`` on the device against ``librosa.cqt`` on the CPU (``cqt_speed``);
3. **labelling** the replicated corpus with the BTC-base teacher in ``bf16-mixed``
   (``labelling_speed.measure``: end to end and steady state, x real time);
4. **stage 1** for ``--steps`` steps: ``ChordDataModule`` on the teacher cache, the CQT on
   the device (``on_after_batch_transfer``), a BTC-base ``StudentModule``, ``bf16-mixed``;
   a callback times every step and the wait for each batch, ``nvidia-smi`` is polled for
   utilisation, ``torch.cuda.max_memory_allocated`` gives the peak;
5. **DDP** on every GPU present: ``chordkd fit experiments/stage1.yaml`` with
   ``trainer.strategy=ddp`` as a subprocess (DDP re-executes the command line);
6. **transcription**: ``chordkd transcribe`` of the base corpus as a subprocess (end to end,
   model load included), and ``transcribe_song`` in process after a warm-up (x real time).

Writes ``gpu_results.json`` and ``gpu_results.md`` (in ``--out``, default ``bench/``) with the
device's name, and the verdicts against the goals: labelling >= 5,000x real time, stage-1
GPU utilisation >= 90% (steps never wait on data), CQT >= 50x librosa.

``--accelerator cpu --quick`` runs the same steps on the CPU at toy size (DDP on 2 CPU
processes, gloo), to show the script works end to end where no GPU is at hand; its figures
are not GPU figures and its report says so.
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
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

GOALS = {"labelling_x_real_time": 5000.0, "stage1_gpu_utilisation_percent": 90.0,
         "cqt_over_librosa": 50.0}


def plan(quick: bool, accelerator: str) -> dict:
    """Sizes: the GPU plan fits 8 minutes on one GPU; quick is a toy run for any machine."""
    if quick:
        return {"songs": 2, "seconds": 15.0, "replicas": 2, "cqt_seconds": 10.0, "cqt_repeats": 1,
                "steps": 6, "batch_size": 8, "ddp_steps": 2, "num_workers": 0, "size": "small",
                "label_workers": 1, "label_batch": 1}
    return {"songs": 16, "seconds": 45.0, "replicas": 64, "cqt_seconds": 300.0, "cqt_repeats": 3,
            "steps": 200, "batch_size": 128, "ddp_steps": 50, "num_workers": 8, "size": "base",
            "label_workers": 8, "label_batch": 8}


class StepTimer:
    """Lightning callback: per training step, the seconds spent waiting for the batch (from
    the end of the previous step to the start of this one: loading, transfer and the CQT in
    ``on_after_batch_transfer``) and the seconds of the step. ``util`` (a ``GpuUtilisation``)
    is polled from the end of step ``warm_up`` to the end of training only."""

    def __init__(self, device_type: str, warm_up: int = 0, util=None) -> None:
        self.device_type, self.warm_up, self.util = device_type, warm_up, util
        self.wait: list[float] = []
        self.step: list[float] = []
        self._end: float | None = None
        self._start = 0.0
        self._polling = False

    def _sync(self) -> None:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()
        if self._end is not None:
            self.wait.append(self._start - self._end)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync()
        self._end = time.perf_counter()
        self.step.append(self._end - self._start)
        if self.util is not None and len(self.step) == self.warm_up and not self._polling:
            self.util.__enter__()
            self._polling = True

    def on_train_end(self, trainer, module) -> None:
        if self._polling:
            self.util.__exit__()
            self._polling = False


def stage1(manifest: Path, cache: Path, p: dict, accelerator: str, folder: Path) -> dict:
    """Stage-1 steps in bf16-mixed with the CQT on the device; see the module docstring."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback
    from training_speed import GpuUtilisation, peak_rss_bytes

    from chordkd.data.datamodule import ChordDataModule
    from chordkd.training.student import StudentModule

    dm = ChordDataModule(train=str(manifest), valid=None, test=None, targets="teacher",
                         teacher_cache=str(cache), batch_size=p["batch_size"],
                         num_workers=p["num_workers"], pitch_shift=5, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    mean, std = dm.feature_stats()
    module = StudentModule(student="btc", size=p["size"], mean=mean, std=std,
                           optim={"schedule": "constant"}, features=dm.settings.to_dict())
    device_type = "cuda" if accelerator == "gpu" else "cpu"
    skip = min(p["steps"] // 4, 10)  # warm-up steps: kernel selection, workers starting
    util = GpuUtilisation() if device_type == "cuda" else None
    timer = type("Timer", (StepTimer, Callback), {})(device_type, skip, util)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision="bf16-mixed",
                        max_steps=p["steps"], max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0,
                        default_root_dir=folder, limit_val_batches=0)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_rss_bytes()
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - t0
    steps, waits = timer.step[skip:], timer.wait[skip:]
    busy = sum(steps)
    waited = sum(waits)
    out = {"steps": len(timer.step), "steps_timed": len(steps), "batch_size": p["batch_size"],
           "size": p["size"], "wall_seconds": wall,
           "windows_per_second": p["batch_size"] * len(steps) / (busy + waited) if steps else None,
           "step_seconds_median": sorted(steps)[len(steps) // 2] if steps else None,
           "data_wait_fraction": waited / (busy + waited) if steps else None,
           "data_wait_seconds_max": max(waits) if waits else None,
           "data_wait_seconds_median": sorted(waits)[len(waits) // 2] if waits else None,
           "windows_per_epoch": len(dm.train_set)}
    if device_type == "cuda":
        out["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        out["gpu_utilisation"] = util.summary()
    else:
        out["peak_memory_bytes"] = peak_rss_bytes() - baseline
    return out


def run_cli(args: list[str], env: dict | None = None) -> tuple[float, str]:
    """``python -m chordkd ARGS``: (wall seconds, its last stderr lines); raises on failure."""
    cmd = [sys.executable, "-m", "chordkd", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "CHORDKD_NO_PROGRESS": "1", "WANDB_MODE": "offline", **(env or {})})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, out.stderr[-500:]


def ddp(manifest: Path, cache: Path, p: dict, accelerator: str, folder: Path) -> dict:
    """``chordkd fit experiments/stage1.yaml`` under DDP on every GPU (2 CPU processes on CPU)."""
    import torch

    n = torch.cuda.device_count() if accelerator == "gpu" else 2
    args = ["fit", str(ROOT / "experiments" / "stage1.yaml"), f"data.train={manifest}",
            f"data.teacher_cache={cache}", "data.valid=null", "data.valid_holdout=0", "data.test=null",
            f"data.batch_size={p['batch_size']}", f"data.num_workers={p['num_workers']}",
            f"model.size={p['size']}", f"trainer.accelerator={accelerator}", f"trainer.devices={n}",
            "trainer.strategy=ddp", "trainer.precision=bf16-mixed", f"trainer.max_steps={p['ddp_steps']}",
            "trainer.max_epochs=-1", "checkpoint.patience=0", "logger.kind=none", "test=false",
            f"runs_dir={folder}", "resume=never", "trainer.enable_progress_bar=false"]
    wall, _ = run_cli(args)
    summaries = sorted(folder.rglob("summary.json"), key=lambda q: q.stat().st_mtime)
    summary = json.loads(summaries[-1].read_text()) if summaries else {}
    steps = summary.get("global_step")
    return {"processes": n, "wall_seconds_end_to_end": wall, "global_step": steps,
            "ok": steps == p["ddp_steps"], "command": "chordkd " + " ".join(args)}


def transcription(manifest: Path, teacher: str, accelerator: str, folder: Path) -> dict:
    """``chordkd transcribe`` end to end, and in-process x real time after a warm-up."""
    from chordkd.audio import audio_info
    from chordkd.data.manifest import read_manifest
    from chordkd.models.loading import load_model
    from chordkd.transcribe import transcribe_song

    songs = read_manifest(manifest)
    audio_s = sum(audio_info(s.audio)[0] for s in songs)
    device = "cuda" if accelerator == "gpu" else "cpu"
    wall_cli, _ = run_cli(["transcribe", str(manifest.parent / "audio"), "--checkpoint", teacher,
                           "--out", str(folder), "--device", device])
    labs = list(folder.glob("*.lab"))
    model = load_model(teacher)
    model.model.to(device)
    transcribe_song(songs[0].audio, model)  # warm-up: kernels, front end on the device
    t0 = time.perf_counter()
    for s in songs:
        transcribe_song(s.audio, model)
    wall = time.perf_counter() - t0
    return {"songs": len(songs), "audio_seconds": audio_s, "labs_written": len(labs),
            "cli_wall_seconds": wall_cli, "cli_x_real_time": audio_s / wall_cli,
            "x_real_time": audio_s / wall}


def verdicts(r: dict) -> list[dict]:
    """The three goals of one GPU, measured or not run."""
    rows = [("labelling >= 5,000x real time (bf16-mixed, steady state)",
             r.get("labelling", {}).get("steady_state_x_real_time"), GOALS["labelling_x_real_time"]),
            ("stage-1 GPU utilisation >= 90% (steps never wait on data)",
             r.get("stage1", {}).get("gpu_utilisation", {}).get("mean_percent"),
             GOALS["stage1_gpu_utilisation_percent"]),
            ("LogCQT on the device >= 50x librosa.cqt", r.get("cqt", {}).get("speedup"),
             GOALS["cqt_over_librosa"])]
    return [{"goal": name, "measured": value, "threshold": thr,
             "holds": None if value is None else value >= thr} for name, value, thr in rows]


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# chordkd GPU check (`bench/gpu_check.sh`)", "",
             f"Run {r['started']} by `{r['command']}`, {r['wall_seconds'] / 60:.1f} min in all, on "
             f"**{m['device_name']}** ({m['device_count']} device(s)), torch {m['torch']}.", ""]
    if r["accelerator"] != "gpu":
        lines += ["**Not a GPU run**: the CPU smoke run of the same steps at toy size. Its figures "
                  "say that the script works end to end, nothing about a GPU.", ""]
    lines += ["| goal | measured | threshold | holds |", "|---|---:|---:|---|"]
    for v in r["verdicts"]:
        value = "not measured" if v["measured"] is None else f"{v['measured']:.1f}"
        holds = "n/a" if v["holds"] is None else ("yes" if v["holds"] else "no")
        lines.append(f"| {v['goal']} | {value} | {v['threshold']:g} | {holds} |")
    st, lab, cqt = r["stage1"], r["labelling"], r["cqt"]
    lines += ["", "| step | figure |", "|---|---|",
              f"| CQT, {cqt['audio_seconds']:.0f} s of audio | LogCQT on {cqt['device']} "
              f"{cqt['logcqt']['x_real_time']:.0f}x real time, librosa (CPU, warm) "
              f"{cqt['librosa_cqt']['x_real_time']:.0f}x: **{cqt['speedup']:.1f}x**; median relative "
              f"magnitude error {cqt['agreement_vs_librosa_defaults']['rel_mag_err_median']:.4f} |",
              f"| labelling, {lab['audio_seconds'] / 60:.0f} min, bf16-mixed | end to end "
              f"{lab['end_to_end_x_real_time']:.0f}x real time, steady state {lab['steady_state_x_real_time']:.0f}x |",
              f"| stage 1, BTC-{st['size']}, batch {st['batch_size']}, bf16-mixed, CQT on the device | "
              f"{st['windows_per_second']:.1f} windows/s over {st['steps_timed']} steps; waiting for data "
              f"{100 * st['data_wait_fraction']:.1f}% of the time; peak memory "
              f"{st['peak_memory_bytes'] / 2**20:.0f} MiB"
              + (f"; GPU busy {st['gpu_utilisation'].get('mean_percent', float('nan')):.0f}% (mean of "
                 f"{st['gpu_utilisation'].get('samples', 0)} nvidia-smi samples)" if "gpu_utilisation" in st else "")
              + " |",
              f"| DDP, {r['ddp']['processes']} processes | {r['ddp']['global_step']} steps, "
              f"{'ok' if r['ddp']['ok'] else 'FAILED'}, {r['ddp']['wall_seconds_end_to_end']:.0f} s end to end |",
              f"| transcription, {r['transcription']['songs']} songs | {r['transcription']['x_real_time']:.0f}x "
              f"real time in process; `chordkd transcribe` end to end {r['transcription']['cli_x_real_time']:.0f}x "
              "(start-up and model load included) |",
              "", "Seconds per step of this script: " + ", ".join(
                  f"{k} {v:.0f} s" for k, v in r["step_seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accelerator", default="gpu", choices=("gpu", "cpu"))
    ap.add_argument("--quick", action="store_true", help="toy sizes (a smoke run, any machine)")
    ap.add_argument("--teacher", default=None, help="BTC-base teacher (default: the shared fixture)")
    ap.add_argument("--out", type=Path, default=BENCH, help="folder for gpu_results.{json,md}")
    ap.add_argument("--scratch", type=Path, default=BENCH / "out" / "gpu_check")
    args = ap.parse_args(argv)

    import torch

    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --accelerator cpu --quick for a smoke run")
    import cqt_speed
    import data_path
    import labelling_speed
    from bench_audio import FIXTURE_TEACHER

    from chordkd.atomic import write_json, write_text

    p = plan(args.quick, args.accelerator)
    teacher = args.teacher or str(FIXTURE_TEACHER)
    scratch = args.scratch
    gpu = args.accelerator == "gpu"
    r: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "accelerator": args.accelerator,
               "quick": args.quick, "plan": p, "teacher": teacher, "goals": GOALS,
               "command": "bench/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": {"device_name": torch.cuda.get_device_name(0) if gpu else "CPU (smoke run)",
                           "device_count": torch.cuda.device_count() if gpu else 1,
                           "torch": torch.__version__, "cpu_count": os.cpu_count()},
               "step_seconds": {}}
    t_all = time.perf_counter()

    def step(name: str, fn):
        print(f"[gpu_check] {name} ...", flush=True)
        t0 = time.perf_counter()
        out = fn()
        r["step_seconds"][name] = time.perf_counter() - t0
        print(f"[gpu_check] {name}: {r['step_seconds'][name]:.0f} s", flush=True)
        # what is done so far survives a timeout: the JSON grows step by step
        write_json(args.out / "gpu_results.json", {**r, "complete": False, name: out})
        return out

    def synth() -> Path:
        folder = scratch / "corpus"
        if not (folder / "manifest.csv").is_file():
            run_cli(["synth", "--out", str(folder), "--songs", str(p["songs"]), "--seconds",
                     f"{p['seconds']:g}", "--seed", "7", "--no-progress",
                     "--workers", str(min(p["songs"], os.cpu_count() or 1))])
        return folder / "manifest.csv"

    base = step("synth", synth)
    big = scratch / f"x{p['replicas']}" / "manifest.csv"
    data_path.replicate_manifest(base, big, p["replicas"])
    device = "cuda" if gpu else "cpu"
    r["cqt"] = step("cqt", lambda: cqt_speed.measure(p["cqt_seconds"], p["cqt_repeats"], device=device))
    cache = scratch / "teacher_cache"
    r["labelling"] = step("labelling", lambda: labelling_speed.measure(
        teacher, big, cache, precision="bf16-mixed", accelerator=args.accelerator,
        batch_size=p["label_batch"], num_workers=p["label_workers"], stages=False))
    r["stage1"] = step("stage1", lambda: stage1(big, cache, p, args.accelerator, scratch / "stage1"))
    r["ddp"] = step("ddp", lambda: ddp(big, cache, p, args.accelerator, scratch / "ddp"))
    r["transcription"] = step("transcription", lambda: transcription(
        base, teacher, args.accelerator, scratch / "labs"))
    r["verdicts"] = verdicts(r)
    r["wall_seconds"] = time.perf_counter() - t_all
    r["complete"] = True
    write_json(args.out / "gpu_results.json", r)
    write_text(args.out / "gpu_results.md", markdown(r))
    print(markdown(r))
    return r


if __name__ == "__main__":
    main()
