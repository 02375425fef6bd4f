"""Labelling throughput (x real time) of ``chordkd label`` on this machine, with a breakdown.

    .venv/bin/python bench/labelling_speed.py                      # fixture BTC, 2 threads
    .venv/bin/python bench/labelling_speed.py --precision bf16-mixed --minutes 8

Generates tone audio (``bench_audio``), then measures
- end to end: ``label_corpus`` from start (checkpoint load, Trainer, workers) to the report;
- steady state: the same run's audio seconds over the wall time after the first song's
  batch (start-up excluded), read from the report and the per-song write times;
- the stages alone on the same audio: decoding, LogCQT, teacher (``song_logits``), top-K.
Writes bench/out/labelling_speed.json and .md. The machine's load average is recorded: on a
shared machine, numbers taken under load understate the throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio import FIXTURE_TEACHER, make_tone_corpus  # noqa: E402

from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.audio import load_audio  # noqa: E402
from chordkd.data.manifest import read_manifest  # noqa: E402
from chordkd.features import LogCQT  # noqa: E402
from chordkd.inference import song_logits  # noqa: E402
from chordkd.labelling import label as label_module  # noqa: E402
from chordkd.models.loading import load_model  # noqa: E402


def stage_times(teacher: str, audio: Path, precision: str) -> dict:
    """Seconds per stage over the whole corpus, after one warm-up song."""
    loaded = load_model(teacher)
    cqt = LogCQT(loaded.features)
    songs = read_manifest(audio)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    t = {"decode": 0.0, "cqt": 0.0, "teacher": 0.0, "topk": 0.0}
    with torch.inference_mode(), autocast:
        song_logits(loaded.model, cqt(torch.from_numpy(load_audio(songs[0].audio))))  # warm-up
        for song in songs:
            t0 = time.perf_counter()
            wave = torch.from_numpy(load_audio(song.audio))
            t1 = time.perf_counter()
            feats = cqt(wave)
            t2 = time.perf_counter()
            logits = song_logits(loaded.model, feats).float()
            t3 = time.perf_counter()
            logz = torch.logsumexp(logits, -1)
            (logits - logz[:, None]).topk(8, -1)
            t4 = time.perf_counter()
            for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                t[key] += dt
    return t


def end_to_end(teacher: str, audio: Path, out: Path, *, precision: str = "32-true",
               batch_size: int = 1, num_workers: int = 1,
               accelerator: str = "cpu") -> tuple[dict, list[float]]:
    """Run ``label_corpus`` into a fresh cache; returns its report and each batch's end time."""
    shutil.rmtree(out, ignore_errors=True)
    marks: list[float] = []
    original = label_module.CacheWriterCallback.write_on_batch_end

    def timed(self, *a, **kw):
        original(self, *a, **kw)
        marks.append(time.perf_counter())

    label_module.CacheWriterCallback.write_on_batch_end = timed
    try:
        start = time.perf_counter()
        report = label_module.label_corpus(
            teacher, audio, out, batch_size=batch_size, num_workers=num_workers,
            trainer_kwargs={"accelerator": accelerator, "devices": 1, "precision": precision},
        )
    finally:
        label_module.CacheWriterCallback.write_on_batch_end = original
    return {"report": report.to_json(), "start": start}, marks


def measure(teacher: str, audio: Path, out: Path, *, precision: str = "32-true",
            batch_size: int = 1, num_workers: int = 1, accelerator: str = "cpu",
            stages: bool = True) -> dict:
    """End-to-end and steady-state x real time of labelling ``audio`` into the fresh cache
    ``out``, the cache's bytes per audio-hour, and (``stages``, CPU) the per-stage breakdown."""
    run, marks = end_to_end(teacher, audio, out, precision=precision, batch_size=batch_size,
                            num_workers=num_workers, accelerator=accelerator)
    rep = run["report"]
    seconds = rep["audio_seconds"]
    per_song = seconds / max(len(rep["labelled"]), 1)
    steady_audio = per_song * batch_size * (len(marks) - 1)
    steady_x = steady_audio / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")
    shard_bytes = sum(p.stat().st_size for p in Path(out).glob("shard-*"))
    result = {
        "teacher": teacher, "audio_seconds": seconds, "songs": len(rep["labelled"]),
        "precision": precision, "batch_size": batch_size, "num_workers": num_workers,
        "accelerator": accelerator, "threads": torch.get_num_threads(),
        "end_to_end_wall_s": rep["wall_seconds"], "end_to_end_x_real_time": rep["x_real_time"],
        "steady_state_x_real_time": steady_x,
        "cache_bytes_per_audio_hour": shard_bytes / seconds * 3600,
        "topk": rep["topk"],
    }
    if stages:
        st = stage_times(teacher, audio, precision)
        result.update(stage_seconds=st,
                      stage_x_real_time={k: seconds / v for k, v in st.items() if v > 0},
                      stages_x_real_time=seconds / sum(st.values()))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(FIXTURE_TEACHER))
    ap.add_argument("--audio", default=None, help="folder or manifest (default: generated tones)")
    ap.add_argument("--minutes", type=float, default=8.0, help="generated audio, in minutes")
    ap.add_argument("--song-seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["CHORDKD_NO_PROGRESS"] = "1"
    out = Path(args.out)
    n_songs = max(1, round(args.minutes * 60 / args.song_seconds))
    audio = Path(args.audio) if args.audio else make_tone_corpus(
        out / f"speed_audio_{n_songs}x{args.song_seconds:g}s", n_songs, args.song_seconds)
    load_before = os.getloadavg()[0]
    result = measure(args.teacher, audio, out / "speed_cache", precision=args.precision,
                     batch_size=args.batch_size, num_workers=args.num_workers)
    load_after = os.getloadavg()[0]
    result.update(cpu_count=os.cpu_count(), load_average_before=load_before,
                  load_average_after=load_after)
    seconds = result["audio_seconds"]
    name = f"labelling_speed-{args.precision}-t{args.threads}-b{args.batch_size}"
    write_json(out / f"{name}.json", result)
    md = [f"# Labelling throughput ({args.precision}, {args.threads} threads)", "",
          f"{seconds / 60:.1f} min of audio in {result['songs']} songs, teacher "
          f"`{args.teacher}`; load average {load_before:.1f} before, {load_after:.1f} after "
          f"on {os.cpu_count()} CPUs", "",
          "| measure | x real time |", "|---|---|",
          f"| end to end (incl. start-up, {result['end_to_end_wall_s']:.1f} s) "
          f"| {result['end_to_end_x_real_time']:.0f} |",
          f"| steady state (after the first song) | {result['steady_state_x_real_time']:.0f} |",
          f"| stages alone, summed | {result['stages_x_real_time']:.0f} |"]
    md += [f"| stage: {k} | {v:.0f} |" for k, v in result["stage_x_real_time"].items()]
    write_text(out / f"{name}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
