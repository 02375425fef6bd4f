"""``make bench``: every figure users quote, measured side by side in one run.

    .venv/bin/python bench/run_all.py            # ~6-10 min on 2 CPU cores
    .venv/bin/python bench/run_all.py --quick    # smaller corpus and fewer repeats, ~3-4 min

Writes ``bench/results.json`` and ``bench/results.md`` (small, meant to be committed) with the
machine (CPU model, cores, threads used, torch version, load average before and after each
section), the exact commands, and:

1. CQT front end: ``LogCQT`` vs ``librosa.cqt`` vs nnAudio's untrimmed ``CQT1992v2``;
2. the stage-1 data path: chordkd's cached path vs the online peer (decode + librosa.cqt +
   teacher forward per window) vs the offline peer (BTC's and ChordMini's preprocessing:
   features and targets stored once, read per window), interleaved in one process;
3. labelling throughput with the BTC-base teacher and teacher-cache size and fidelity (K=8);
4. training throughput and peak memory per student, fp32 and bf16-mixed (one process each;
   the median of at least 5 timed steps, with the spread; section 2's training-step row is
   this section's BTC-base fp32 row, not a second measurement);
5. the cached data path at 1x, 4x and 16x corpus size (one process each);
6. training-step levers side by side with eager (AdamW implementations, SDPA backend, threads,
   batch size, ``torch.compile`` modes), BTC and 2E1D at small and base size;
7. transcription against madmom's CNN+CRF and DeepChroma+CRF on the same rendered songs:
   x real time and mir_eval's seven metrics (madmom rows skipped when it is not installed);
8. madmom's chord models as teachers (``bench/madmom_teacher.py``, with the madmom extra):
   labelling speed beside BTC-base's on the same rendered songs, and CRF scores against
   posterior marginals as pseudo-labels.

With a CUDA device the GPU path is measured too (CQT, data path, labelling and training with
bf16-mixed, GPU utilisation during training); without one the report says it was not run.
Scratch data (a ``chordkd synth`` corpus, its caches) lives under ``bench/out/run_all/``.
Throughput figures are the best of a few repeats after a warm-up (other processes only slow
a run down), except training steps, which are medians with their spread; ratios between
systems come from runs interleaved in one process. On a shared machine read them with the
recorded load average.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller corpus, fewer repeats")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads offered to torch, numpy and librosa (default: all cores)")
    p.add_argument("--teacher", default=None,
                   help="BTC-base teacher in the official format (default: the shared fixture)")
    p.add_argument("--trained-teacher", default=None,
                   help="trained teacher for cache fidelity (default: newest "
                        "runs/teacher-*/checkpoints/best.ckpt, else --teacher)")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU path even with CUDA")
    p.add_argument("--out", default=None, help="folder for results.json/.md (default: bench/)")
    return p.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # Before numpy and torch load their BLAS/OpenMP runtimes; subprocesses inherit these.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    # OMP_WAIT_POLICY is left as the user has it; section 6 measures both policies side by side
    os.environ["CHORDKD_NO_PROGRESS"] = "1"

import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import cqt_speed  # noqa: E402
import data_path  # noqa: E402
import labelling_speed  # noqa: E402
import madmom_teacher  # noqa: E402
import teacher_cache as teacher_cache_bench  # noqa: E402
import training_levers  # noqa: E402
import training_speed  # noqa: E402
import transcription_peers  # noqa: E402
from bench_audio import FIXTURE_TEACHER  # noqa: E402
from results_markdown import markdown  # noqa: E402

from chordkd.atomic import write_json, write_text  # noqa: E402

SCALES = (1, 4, 16)
STUDENTS = ("btc", "2e1d")
TARGETS = {
    "cqt_over_librosa": 20.0,
    "cached_over_online": 10.0,
    "cached_over_train_step": 2.0,
    "labelling_x_real_time": 200.0,
    "scaling_min_rate_ratio": 0.8,  # 16x windows/s at least this fraction of 1x windows/s
    "scaling_rss_anon_growth_bytes": 256 * 2**20,  # resident heap, 16x minus 1x
    "training_lever_over_eager": 1.3,  # base size, CPU, a lever that keeps the arithmetic
}


# -- sizes -------------------------------------------------------------------------------
def plan(quick: bool) -> dict:
    """Sizes and repeats: full fits ~10 min on 2 loaded cores, quick about a third of that."""
    if quick:
        return {"songs": 4, "seconds": 30.0, "cqt_seconds": 60.0, "cqt_repeats": 2,
                "rounds": 2, "cached_batches": 1, "online_batches": 1, "offline_batches": 2,
                "training_steps": 5, "scale_batches": 2, "scale_rounds": 2,
                "lever_sizes": ("base",), "lever_rounds": 5, "compile_modes": (),
                "wait_rounds": 2, "wait_steps": 1,
                "peer_songs": 3, "peer_seconds": 30.0}
    return {"songs": 8, "seconds": 40.0, "cqt_seconds": 180.0, "cqt_repeats": 3,
            "rounds": 3, "cached_batches": 2, "online_batches": 1, "offline_batches": 4,
            "training_steps": 7, "scale_batches": 3, "scale_rounds": 3,
            "lever_sizes": ("small", "base"), "lever_rounds": 7,
            "compile_modes": ("default", "max-autotune-no-cudagraphs"),
            "wait_rounds": 3, "wait_steps": 3,
            "peer_songs": 6, "peer_seconds": 60.0}


# -- machine -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict:
    info = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads_used": threads,
        "torch_num_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # how OpenMP threads wait: see section 6
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed_section(name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; record its wall time and the 1/5/15-minute load averages around it."""
    print(f"[bench] {name} ...", flush=True)
    before = os.getloadavg()
    t0 = time.perf_counter()
    result = fn()
    result["section"] = {"wall_seconds": time.perf_counter() - t0,
                         "load_average_before": list(before), "load_average_after": list(os.getloadavg())}
    print(f"[bench] {name}: {result['section']['wall_seconds']:.0f} s, load "
          f"{before[0]:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return result


def command(cmd: list[str]) -> str:
    """A recorded command, with paths inside the checkout made relative to it."""
    return " ".join(shlex.quote(c.replace(str(ROOT) + "/", "")) for c in cmd)


# -- sections ----------------------------------------------------------------------------
def section_cqt(p: dict, devices: list[str]) -> dict:
    return {dev: cqt_speed.measure(p["cqt_seconds"], p["cqt_repeats"], device=dev) for dev in devices}


def prepare_corpus(p: dict, scratch: Path, teacher: str, devices: list[str]) -> dict:
    """The base corpus, its replicated 1x/4x/16x manifests, and the 16x corpus labelled by
    the BTC-base teacher (the labelling measurement of section 3)."""
    base, synth_cmd = data_path.synth_corpus(scratch / "corpus", p["songs"], p["seconds"])
    manifests = {}
    for n in SCALES:
        manifests[n] = scratch / f"x{n}" / "manifest.csv"
        data_path.replicate_manifest(base, manifests[n], n)
    cache = scratch / "teacher_cache"
    label_cmd = [sys.executable, "-m", "chordkd", "label", "--teacher", teacher, "--audio",
                 str(manifests[max(SCALES)]), "--out", str(cache), "--batch-size", "1",
                 "--num-workers", "1"]
    runs = {"cpu": labelling_speed.measure(teacher, manifests[max(SCALES)], cache, precision="32-true")}
    runs["cpu"]["stages_measured_on"] = "the 1x corpus"
    if "cuda" in devices:
        gpu_cache = scratch / "teacher_cache_gpu"
        runs["cuda"] = labelling_speed.measure(teacher, manifests[max(SCALES)], gpu_cache,
                                               precision="bf16-mixed", accelerator="gpu",
                                               num_workers=4, stages=False)
    return {"base": base, "manifests": manifests, "teacher_cache": cache, "labelling": runs,
            "commands": {"synth": command(synth_cmd), "label (what the bench calls, as a CLI)":
                         command(label_cmd)}}


def section_labelling(p: dict, scratch: Path, teacher: str, trained: str, devices: list[str]) -> dict:
    """Labelling throughput (on the 16x corpus, which the later sections read), the CPU stage
    breakdown and cache fidelity (on the 1x corpus). ``corpus`` is for the later sections."""
    corpus = prepare_corpus(p, scratch, teacher, devices)
    runs = corpus["labelling"]
    st = labelling_speed.stage_times(teacher, corpus["manifests"][1], "32-true")
    logits, seconds, _ = teacher_cache_bench.teacher_logits(trained, str(corpus["manifests"][1]))
    runs["cpu"].update(stage_seconds=st, stage_x_real_time={k: seconds / v for k, v in st.items() if v > 0})
    fidelity = [teacher_cache_bench.measure(logits, seconds, k, tail) for k, tail in ((8, True), (0, False))]
    return {"runs": runs, "corpus": corpus,
            "fidelity": {"teacher": trained, "audio_seconds": seconds,
                         "teacher_stats": teacher_cache_bench.distribution_stats(logits),
                         "rows": fidelity}}


def section_data_path(corpus: dict, p: dict, teacher: str, devices: list[str], scratch: Path) -> dict:
    out = {}
    for dev in devices:
        out[dev] = data_path.compare(
            corpus["manifests"][1], corpus["teacher_cache"], teacher, dev, batch_size=32,
            rounds=p["rounds"], cached_batches=p["cached_batches"],
            online_batches=p["online_batches"], offline_batches=p["offline_batches"],
            offline_folder=scratch / "offline_features", num_workers=0 if dev == "cpu" else 4)
    return out


def join_training_step(r: dict) -> None:
    """Section 2's training-step row is section 4's BTC-base fp32 row of the same device."""
    for dev, dp in r["data_path"].items():
        if not isinstance(dp, dict) or "cached" not in dp:
            continue
        row = next(t for t in r["training"]["rows"] if t["device"].startswith(dev)
                   and t["student"] == "btc" and t["precision"] == "32-true")
        data_path.join_train_step(dp, row)


def section_training(p: dict, devices: list[str], threads: int) -> dict:
    rows, cmds = [], []
    for dev in devices:
        for student in STUDENTS:
            for precision in training_speed.PRECISIONS:
                row, cmd = training_speed.measure_in_subprocess(
                    student, "base", 32, precision, dev, p["training_steps"], threads)
                rows.append(row)
                cmds.append(command(cmd))
                print(f"[bench]   {dev} {student} {precision}: {row['frames_per_second']:.0f} frames/s, "
                      f"peak {row['peak_memory_bytes'] / 2**20:.0f} MiB", flush=True)
    return {"rows": rows, "commands": cmds}


def section_levers(p: dict, devices: list[str], threads: int) -> dict:
    """Section 6: the levers of ``training_levers`` per device, student and size, each
    student and size in its own process; peak memory per lever in its own process; weight
    equivalence with eager at small size."""
    import json
    import subprocess

    levers = [lv for lv in training_levers.LEVERS
              if not lv.startswith("compile") or lv.split(" ", 1)[1] in p["compile_modes"]]
    if threads <= 1:
        levers.remove("1 thread")
    runs, cmds = [], []
    for dev in devices:
        for student in STUDENTS:
            for size in p["lever_sizes"]:
                cmd = [sys.executable, str(BENCH / "training_levers.py"), "speed", "--student", student,
                       "--size", size, "--device", dev, "--threads", str(threads),
                       "--levers", ",".join(levers), "--rounds", str(p["lever_rounds"])]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"{command(cmd)} failed:\n{out.stderr[-2000:]}")
                run = json.loads(out.stdout.strip().splitlines()[-1])
                cmds.append(command(cmd))
                if size == "base":
                    for lever in levers:
                        mem, _ = training_levers.peak_memory_in_subprocess(student, size, lever, dev, threads)
                        run["rows"][lever].update(mem)
                runs.append(run)
                best = max((r for r in run["rows"].values() if r["lever"] != "eager"),
                           key=lambda r: r["over_eager"])
                print(f"[bench]   {dev} {student} {size}: eager {run['rows']['eager']['frames_per_second']:.0f} "
                      f"frames/s; best lever {best['lever']} x{best['over_eager']:.2f}", flush=True)
    equivalence = [dict(student=student, **training_levers.weight_deviation(student, lever))
                   for student in STUDENTS for lever in training_levers.EQUIVALENCE_LEVERS
                   if lever in levers]
    wait = [training_levers.wait_policy_rounds(student, "base", p["wait_rounds"], p["wait_steps"], threads)
            for student in STUDENTS] if "cpu" in devices else []
    cmds += [c.replace(str(ROOT) + "/", "") for w in wait for c in w.pop("commands")]
    optimizer = [row for student in STUDENTS for row in training_levers.optimizer_step_seconds(student)]
    profiles = [training_levers.profile_step(student) for student in STUDENTS]
    return {"runs": runs, "commands": cmds, "equivalence": equivalence, "levers": levers,
            "optimizer_step": optimizer, "profiles": profiles, "wait_policy": wait,
            "dropout_mask": training_levers.dropout_mask_seconds()}


def section_transcription(p: dict, scratch: Path, checkpoints: dict[str, str]) -> dict:
    """Section 7: chordkd's transcription and madmom's two chord recognisers on the same
    rendered, labelled songs (``chordkd synth``, builtin renderer)."""
    manifest, cmd = data_path.synth_corpus(scratch / "peer_songs", p["peer_songs"], p["peer_seconds"], seed=11)
    result = transcription_peers.compare(manifest, checkpoints)
    result["commands"] = {"synth (peer songs)": command(cmd)}
    return result


def peer_checkpoints(trained: str, teacher: str) -> dict[str, str]:
    """Row name -> checkpoint for section 7: the trained teacher (when there is one) and the
    BTC-base fixture, whose weights are random (its scores are chance; its speed is BTC-base's)."""
    rows = {}
    if trained != teacher:
        rows[f"chordkd {Path(trained).parent.parent.name}"] = trained
    rows["chordkd BTC-base fixture (random weights)"] = teacher
    return rows


def section_madmom(p: dict, scratch: Path, teacher: str) -> dict:
    """madmom:cnn and madmom:deepchroma beside the BTC-base teacher (skipped without the extra)."""
    from chordkd.errors import ChordkdError
    from chordkd.teachers.madmom import import_madmom

    try:
        import_madmom()
    except ChordkdError as e:
        return {"skipped": str(e)}
    songs = max(2, p["songs"] // 2)
    audio = madmom_teacher.render_songs(scratch / "madmom_audio", songs, p["seconds"])
    return madmom_teacher.measure(audio, scratch / "madmom", teacher)


def section_scaling(corpus: dict, p: dict, threads: int) -> dict:
    rows, cmds = {}, []
    for n in SCALES:
        row, cmd = data_path.scale_in_subprocess(
            corpus["manifests"][n], corpus["teacher_cache"], 32, p["scale_batches"], "cpu",
            p["scale_rounds"], threads)
        rows[n] = row
        cmds.append(command(cmd))
    rates = data_path.interleaved_rates(corpus["manifests"], corpus["teacher_cache"], 32,
                                        p["scale_batches"], p["scale_rounds"], "cpu")
    for n in SCALES:
        rows[n]["windows_per_second_own_process"] = rows[n].pop("windows_per_second")
        rows[n]["rounds_windows_per_second_own_process"] = rows[n].pop("rounds_windows_per_second")
        rows[n].update(rates[n])
    lo, hi = rows[min(SCALES)], rows[max(SCALES)]
    return {
        "replication": "each scale's manifest repeats the base corpus's rows under new song ids "
                       "pointing at the same FLAC files; every id has its own audio-cache "
                       "samples and teacher-cache record",
        "rows": rows, "commands": cmds,
        "rate_ratio_16x_over_1x": hi["windows_per_second"] / lo["windows_per_second"],
        "rss_anon_16x_minus_1x_bytes": (hi["memory_bytes"]["after_batches"]["RssAnon"]
                                        - lo["memory_bytes"]["after_batches"]["RssAnon"]),
    }


# -- verdicts ----------------------------------------------------------------------------
def lever_verdicts(levers: dict) -> list[tuple[str, float, float]]:
    """Per student, the best CPU base-size lever that keeps the arithmetic, over eager."""
    rows = []
    wait = {w["student"]: w for w in levers.get("wait_policy", [])}
    for run in levers["runs"]:
        if run["device"] != "cpu" or run["size"] != "base":
            continue
        keep = [(r["lever"], r["over_eager"]) for r in run["rows"].values()
                if r["lever"] in training_levers.EQUIVALENCE_LEVERS]
        w = wait.get(run["student"])
        if w is not None and w["bitwise_equal"]:
            keep.append(("OMP_WAIT_POLICY=PASSIVE", w["passive_over_default"]))
        name, ratio = max(keep, key=lambda kv: kv[1])
        rows.append((f"{run['student']}-base training step >= 1.3x eager frames/s (CPU; best lever "
                     f"that keeps the results: {name})", ratio, TARGETS["training_lever_over_eager"]))
    return rows


def verdicts(r: dict) -> list[dict]:
    cqt = r["cqt"]["cpu"]
    dp = r["data_path"]["cpu"]
    lab = r["labelling"]["runs"]["cpu"]
    sc = r["scaling"]
    rows = [
        ("LogCQT >= 20x librosa.cqt (CPU, same threads)", cqt["speedup"], TARGETS["cqt_over_librosa"]),
        ("stage-1 data path >= 10x the online path", dp["cached_over_online"], TARGETS["cached_over_online"]),
        ("stage-1 data path >= 2x a BTC-base training step", dp["cached_over_train_step"],
         TARGETS["cached_over_train_step"]),
        ("labelling >= 200x real time (end to end)", lab["end_to_end_x_real_time"],
         TARGETS["labelling_x_real_time"]),
        ("data path per-hour cost flat 1x..16x (16x rate / 1x rate >= 0.8)", sc["rate_ratio_16x_over_1x"],
         TARGETS["scaling_min_rate_ratio"]),
        *lever_verdicts(r["levers"]),
    ]
    out = [{"target": name, "measured": value, "threshold": thr, "holds": value >= thr}
           for name, value, thr in rows]
    growth = sc["rss_anon_16x_minus_1x_bytes"]
    out.append({"target": "resident heap bounded 1x..16x (RssAnon growth <= 256 MiB)",
                "measured": growth, "threshold": TARGETS["scaling_rss_anon_growth_bytes"],
                "holds": growth <= TARGETS["scaling_rss_anon_growth_bytes"]})
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj.relative_to(ROOT)) if obj.is_relative_to(ROOT) else str(obj)
    return obj


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    p = plan(args.quick)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_gpu else [])
    teacher = args.teacher or str(FIXTURE_TEACHER)
    trained = args.trained_teacher
    if trained is None:
        found = sorted(ROOT.glob("runs/teacher-*/checkpoints/best.ckpt"), key=lambda q: q.stat().st_mtime)
        trained = str(found[-1]) if found else teacher
    scratch = BENCH / "out" / "run_all"
    out = Path(args.out) if args.out else BENCH

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    r: dict = {"started": started, "quick": args.quick, "plan": p, "devices": devices,
               "command": command([Path(sys.executable).relative_to(ROOT).as_posix()
                                   if Path(sys.executable).is_relative_to(ROOT) else sys.executable,
                                   "bench/run_all.py", *sys.argv[1:]]),
               "machine": machine(args.threads), "load_average_before": list(load_before),
               "teacher": teacher, "trained_teacher": trained, "targets": TARGETS}
    r["cqt"] = timed_section("1. CQT front end", lambda: section_cqt(p, devices))
    # Section 3 runs before 2: its labelling run writes the teacher cache the data path reads.
    r["labelling"] = timed_section("3. labelling and teacher cache",
                                   lambda: section_labelling(p, scratch, teacher, trained, devices))
    corpus = r["labelling"].pop("corpus")
    r["commands"] = corpus["commands"]
    r["data_path"] = timed_section("2. stage-1 data path",
                                   lambda: section_data_path(corpus, p, teacher, devices, scratch))
    r["training"] = timed_section("4. training throughput", lambda: section_training(p, devices, args.threads))
    join_training_step(r)
    r["scaling"] = timed_section("5. scaling 1x/4x/16x", lambda: section_scaling(corpus, p, args.threads))
    r["levers"] = timed_section("6. training levers", lambda: section_levers(p, devices, args.threads))
    r["transcription"] = timed_section("7. transcription against madmom", lambda: section_transcription(
        p, scratch, peer_checkpoints(trained, teacher)))
    r["commands"].update(r["transcription"].pop("commands"))
    r["madmom"] = timed_section("8. madmom teachers", lambda: section_madmom(p, scratch, teacher))
    r["verdicts"] = verdicts(r)
    r["load_average_after"] = list(os.getloadavg())
    r["wall_seconds"] = time.perf_counter() - t0
    r = _jsonable(r)
    write_json(out / "results.json", r)
    write_text(out / "results.md", markdown(r))
    print(markdown(r))
    print(f"[bench] wrote {out / 'results.json'} and {out / 'results.md'}")
    return r


if __name__ == "__main__":
    main(ARGS)
    sys.exit(0)
