"""madmom's chord CNN network: madmom's own numpy network vs chordkd's torch port, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python bench/madmom_network.py --threads 1 2   # one 30 s song

One rendered song, one process: madmom's spectrogram (and padding) computed once, then the
network alone, madmom's ``NeuralNetwork`` (numpy/scipy) against
:class:`chordkd.teachers.madmom_torch.TorchChordCNN` on the same input (max abs difference of
the outputs recorded), for each torch thread count; and the whole ``madmom:cnn`` teacher
(resampling, spectrogram, network, CRF scores, frame mapping) in x real time with each network.
scipy's convolution is single-threaded: the thread count only moves torch. Writes
bench/out/madmom_network.json and .md and prints the Markdown. Numbers taken under load
understate speeds; the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from chordkd.atomic import write_json, write_text


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def measure(seconds: float, threads: list[int]) -> dict:
    from chordkd.audio import resample
    from chordkd.synth.song import synthesize_song
    from chordkd.teachers import madmom as mm
    from chordkd.teachers.madmom_torch import TorchChordCNN

    mm.import_madmom()
    from madmom.audio.signal import Signal

    audio = synthesize_song(seed=12, index=1, seconds=seconds)[0]
    waveform = torch.from_numpy(audio)
    teachers = {net: mm.MadmomTeacher("cnn", network=net) for net in mm.NETWORKS}
    numpy_proc = teachers["numpy"]._features.processors
    at = next(i for i, p in enumerate(numpy_proc) if type(p).__name__ == "NeuralNetwork")
    x = Signal(resample(audio, 22050, mm.MADMOM_SR), sample_rate=mm.MADMOM_SR)
    for p in numpy_proc[:at]:  # madmom's spectrogram and padding, once
        x = p(x)
    port = TorchChordCNN(numpy_proc[at])
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        theirs, t_numpy = _timed(numpy_proc[at], x)
        ours, t_torch = _timed(port, x)
        row = {"threads": n, "network_numpy_s": t_numpy, "network_torch_s": t_torch,
               "max_abs_diff": float(np.abs(np.asarray(theirs) - ours).max())}
        for net, teacher in teachers.items():
            mm._RECENT.clear()  # no cached features: the whole teacher runs
            _, t = _timed(teacher.logits, waveform)
            row[f"teacher_{net}_x_real_time"] = seconds / t
        rows.append(row)
    return {"seconds": seconds, "rows": rows}


def markdown(r: dict) -> str:
    lines = [f"# madmom:cnn network, numpy vs torch (one {r['seconds']:g} s song; load average "
             f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f} on {os.cpu_count()} CPUs)",
             "", "| torch threads | network numpy s | network torch s | speed-up | max abs diff "
             "| madmom:cnn teacher x real time (numpy network) | (torch network) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for w in r["rows"]:
        lines.append(f"| {w['threads']} | {w['network_numpy_s']:.1f} | {w['network_torch_s']:.2f} | "
                     f"{w['network_numpy_s'] / w['network_torch_s']:.0f}x | {w['max_abs_diff']:.1e} | "
                     f"{w['teacher_numpy_x_real_time']:.2f} | {w['teacher_torch_x_real_time']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    result = measure(args.seconds, args.threads)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    result["command"] = " ".join(["bench/madmom_network.py", *sys.argv[1:]])
    out = Path(args.out)
    write_json(out / "madmom_network.json", result)
    md = markdown(result)
    write_text(out / "madmom_network.md", md)
    print(md)


if __name__ == "__main__":
    main()
