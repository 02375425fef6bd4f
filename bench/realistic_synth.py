"""Speed of the realistic corpus: SoundFont rendering, music21 scores, a large pool.

    .venv/bin/python bench/realistic_synth.py [--quick] [--slice-hours 0.5]

Writes ``bench/realistic_synth.json`` and ``bench/realistic_synth.md`` (small, committed):

1. **Per core** (this process, one thread): the same harmony-model songs rendered by the
   numpy synthesizer and by the SoundFont renderer, interleaved song by song; x real time
   per CPU second (what a core delivers, whatever else runs on the machine) for rendering
   alone and with FLAC encoding, and per wall second. Target: SoundFont >= 100x per core.
2. **music21 scores**: the first parse of a sample of works (music21 parse, note
   extraction, key analysis, cache write) per work, apart; then excerpts rendered from the
   warm cache, x real time per core.
3. **A pool slice on 2 processes**: the ``realistic`` preset's pool resized to
   ``--slice-hours`` (half score excerpts, half harmony songs), built by the corpus builder
   with ``--workers 2`` once its scores are cached; its CPU time (workers included) over 2
   cores is extrapolated linearly to a 10-hour pool (rendering is per song, so time grows
   with the number of songs), and so is the wall time measured here. Target: <= 10 minutes
   for 10 hours on 2 idle cores. The first parse the same 10 hours would need is estimated
   apart, from the distinct works it draws and the measured parse time per work.

Rendering 10 hours outright takes the machine for many minutes; this bench measures a slice
and says so. Every figure is measured on a machine that may be shared: the load average is
recorded around each section.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.synth.corpus import build_part, flac_bytes, song_jobs  # noqa: E402
from chordkd.synth.presets import PRESETS, part_plan  # noqa: E402
from chordkd.synth.scores import (  # noqa: E402
    _PLAN,
    candidate_works,
    choose_work,
    load_work,
    render_excerpt,
)
from chordkd.synth.song import synthesize_song  # noqa: E402

TARGET_X_PER_CORE = 100.0
TARGET_POOL_MINUTES = 10.0
POOL_HOURS = 10.0


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the pool's workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _section(fn, *args) -> dict:
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = fn(*args)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out["load_before_after"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    return out


def per_core(songs: int, seconds: float) -> dict:
    synthesize_song(999, 0, 8.0, renderer="soundfont")  # warm: imports, soundfont bytes
    synthesize_song(999, 0, 8.0)
    t = {"builtin": [0.0, 0.0, 0.0], "soundfont": [0.0, 0.0, 0.0]}
    for index in range(songs):
        for renderer in ("builtin", "soundfont"):
            w0, t0 = time.perf_counter(), time.process_time()
            audio, *_ = synthesize_song(1, index, seconds, renderer=renderer)
            t1 = time.process_time()
            flac_bytes(audio)
            t[renderer][0] += t1 - t0
            t[renderer][1] += time.process_time() - t0
            t[renderer][2] += time.perf_counter() - w0
    audio_s = songs * seconds
    rows = {r: {"x_realtime": round(audio_s / a, 1), "with_flac_x_realtime": round(audio_s / b, 1),
                "wall_with_flac_x_realtime": round(audio_s / c, 1)}
            for r, (a, b, c) in t.items()}
    return {"songs": songs, "seconds_per_song": seconds, "renderers": rows,
            "soundfont_over_builtin_time": round(t["soundfont"][0] / t["builtin"][0], 2)}


def scores(works: int, excerpts: int, seconds: float, cache: Path) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    pool = candidate_works("pool")
    drawn = []
    for index in range(works):
        first = choose_work(np.random.default_rng([0, index, _PLAN]), pool)[0]
        if first not in drawn:
            drawn.append(first)
    parse_s, failed = [], 0
    for w in drawn:
        t0 = time.process_time()
        try:
            load_work(w, cache)
        except Exception:  # a work the pool skips (an opus, one voice): counted apart
            failed += 1
        parse_s.append(time.process_time() - t0)
    t0 = time.process_time()
    audio_s = 0.0
    for index in range(excerpts):
        audio, *_ = render_excerpt(0, index, seconds, cache)
        audio_s += len(audio) / 22050
    render_s = time.process_time() - t0
    return {"works_parsed": len(drawn), "unusable_works": failed,
            "first_parse_seconds_per_work": {"mean": round(float(np.mean(parse_s)), 2),
                                             "median": round(float(np.median(parse_s)), 2),
                                             "max": round(float(np.max(parse_s)), 2)},
            "excerpts": excerpts, "excerpt_seconds": seconds,
            "warm_cache_x_realtime_per_core": round(audio_s / render_s, 1),
            "excerpts_per_second_per_core": round(excerpts / render_s, 2)}


def pool_slice(hours: float, scratch: Path, workers: int, parse_per_work: float) -> dict:
    preset = PRESETS["realistic"]
    pieces = part_plan(preset, hours)["pool"]
    cache = scratch / "score_cache"
    jobs = []
    for p in pieces:
        jobs += song_jobs(scratch / "pool", p.songs, p.seconds or preset.seconds, 0,
                          p.first_index, preset.style, "soundfont", None, True, p.source,
                          cache, p.unseen_instruments)
    # Parse (and cache) what the slice needs, apart: the first parse is not rendering.
    t0 = time.perf_counter()
    score_jobs = [j for j in jobs if j["source"] == "music21"]
    from chordkd.synth.scores import compose_excerpt

    for j in score_jobs:
        compose_excerpt(j["seed"], j["index"], j["seconds"], cache)
    first_parse = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), _cpu()
    rows = build_part(scratch / "pool", jobs, True, workers, False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    audio_h = sum(float(r["duration"]) for r in rows) / 3600
    # On 2 idle cores the wall time is the CPU time shared by the workers; on a loaded machine
    # the measured wall time is longer, and both are reported.
    minutes_10h = cpu / workers / audio_h * POOL_HOURS / 60
    # Distinct works a 10-hour pool draws first (the parse it would need once).
    full = part_plan(preset, POOL_HOURS)["pool"]
    n_scores = sum(p.songs for p in full if p.source == "music21")
    pool = candidate_works("pool")
    distinct = len({choose_work(np.random.default_rng([0, i, _PLAN]), pool)[0]
                    for i in range(n_scores)})
    return {"slice_hours": round(audio_h, 3), "songs": len(rows),
            "score_excerpts": len(score_jobs), "workers": workers,
            "slice_first_parse_seconds": round(first_parse, 1),
            "slice_render_seconds_warm_cache": round(wall, 1),
            "slice_render_cpu_seconds": round(cpu, 1),
            "x_realtime_on_workers": round(audio_h * 3600 / wall, 1),
            "pool_10h_minutes_measured_wall (extrapolated)": round(wall / audio_h * POOL_HOURS / 60, 2),
            "pool_10h_minutes_warm_cache (extrapolated)": round(minutes_10h, 2),
            "pool_10h_score_excerpts": n_scores, "pool_10h_distinct_works": distinct,
            "pool_10h_first_parse_minutes (estimated)":
                round(distinct * parse_per_work / workers / 60, 1)}


def markdown(r: dict) -> str:
    pc, sc, ps = r["per_core"], r["scores"], r["pool_slice"]
    v = r["verdicts"]
    lines = [
        "# Realistic corpus speed (`bench/realistic_synth.py`)", "",
        f"Measured {r['when']} by `{r['command']}`, {r['wall_minutes']:.1f} min in all. "
        f"Machine: {r['machine']['cpu']}, {r['machine']['cpu_count']} cores; 1-minute load "
        "average before -> after each section in brackets (a load above the core count means "
        "the figures are pessimistic).", "",
        "| target | measured | threshold | holds |", "|---|---:|---:|---|",
        f"| SoundFont renderer x real time per core | {v['soundfont_x']} | "
        f"{TARGET_X_PER_CORE:g} | {'yes' if v['soundfont_ok'] else '**no**'} |",
        f"| 10-hour pool on 2 idle cores, scores cached (min, from CPU time, extrapolated) | {v['pool_min']} | "
        f"{TARGET_POOL_MINUTES:g} | {'yes' if v['pool_ok'] else '**no**'} |", "",
        f"## 1. Per core ({pc['songs']} harmony songs x {pc['seconds_per_song']:g} s, "
        f"load {pc['load_before_after']})", "",
        "x real time per core = seconds of audio per CPU second of this (single-threaded) "
        "process; the last column is per wall second, which other jobs on the machine slow.", "",
        "| renderer | x real time per core | with FLAC | with FLAC, wall clock |",
        "|---|---:|---:|---:|",
    ]
    for name, row in pc["renderers"].items():
        lines.append(f"| {name} | {row['x_realtime']} | {row['with_flac_x_realtime']} | "
                     f"{row['wall_with_flac_x_realtime']} |")
    fp = sc["first_parse_seconds_per_work"]
    lines += [
        "", f"SoundFont / numpy rendering time: {pc['soundfont_over_builtin_time']}x.", "",
        f"## 2. music21 scores (load {sc['load_before_after']})", "",
        f"First parse of {sc['works_parsed']} drawn works ({sc['unusable_works']} unusable), CPU "
        f"time: mean {fp['mean']} s, median {fp['median']} s, max {fp['max']} s per work. "
        f"From the warm cache, {sc['excerpts']} excerpts of {sc['excerpt_seconds']:g} s render "
        f"at **{sc['warm_cache_x_realtime_per_core']}x real time per core** "
        f"({sc['excerpts_per_second_per_core']} excerpts/s).", "",
        f"## 3. Pool slice on {ps['workers']} processes (load {ps['load_before_after']})", "",
        f"Measured: a {ps['slice_hours']} h slice of the realistic pool ({ps['songs']} songs, "
        f"{ps['score_excerpts']} score excerpts): first parse {ps['slice_first_parse_seconds']} s "
        f"wall (apart); rendering with the scores cached took {ps['slice_render_cpu_seconds']} "
        f"CPU seconds over {ps['workers']} workers, {ps['slice_render_seconds_warm_cache']} s wall "
        f"here ({ps['x_realtime_on_workers']}x real time).", "",
        f"Extrapolated: a 10-hour pool renders in **{ps['pool_10h_minutes_warm_cache (extrapolated)']} "
        f"min** on {ps['workers']} idle cores with its scores cached (CPU time / {ps['workers']}); "
        f"at this run's wall-clock rate, {ps['pool_10h_minutes_measured_wall (extrapolated)']} min. "
        f"Its {ps['pool_10h_score_excerpts']} excerpts draw "
        f"{ps['pool_10h_distinct_works']} distinct works, whose first parse would take about "
        f"{ps['pool_10h_first_parse_minutes (estimated)']} min more on {ps['workers']} processes "
        "(estimated from section 2's mean parse time).", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer songs, a smaller slice")
    parser.add_argument("--slice-hours", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    scratch = BENCH / "out" / "realistic_synth"
    shutil.rmtree(scratch, ignore_errors=True)
    t0 = time.perf_counter()
    songs, works, excerpts = (4, 6, 4) if args.quick else (10, 16, 10)
    slice_hours = args.slice_hours or (0.2 if args.quick else 0.5)
    r = {"command": " ".join(["bench/realistic_synth.py", *sys.argv[1:]]),
         "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": {"cpu": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count()}}
    try:
        with open("/proc/cpuinfo") as f:
            r["machine"]["cpu"] = next(x.split(":", 1)[1].strip() for x in f
                                       if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print("[bench] per core ...", flush=True)
    r["per_core"] = _section(per_core, songs, 30.0)
    print("[bench] music21 scores ...", flush=True)
    r["scores"] = _section(scores, works, excerpts, 30.0, scratch / "parse_cache")
    print("[bench] pool slice ...", flush=True)
    r["pool_slice"] = _section(pool_slice, slice_hours, scratch, args.workers,
                               r["scores"]["first_parse_seconds_per_work"]["mean"])
    sf_x = r["per_core"]["renderers"]["soundfont"]["x_realtime"]
    pool_min = r["pool_slice"]["pool_10h_minutes_warm_cache (extrapolated)"]
    r["verdicts"] = {"soundfont_x": sf_x, "soundfont_ok": sf_x >= TARGET_X_PER_CORE,
                     "pool_min": pool_min, "pool_ok": pool_min <= TARGET_POOL_MINUTES}
    r["wall_minutes"] = (time.perf_counter() - t0) / 60
    write_json(BENCH / "realistic_synth.json", r)
    write_text(BENCH / "realistic_synth.md", markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
