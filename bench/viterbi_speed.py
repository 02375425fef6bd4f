"""Viterbi and argmax decoding speed on random logits, in multiples of real time.

Writes bench/out/viterbi_speed.json and .md. Frame rate: 22050 / 2048 = 10.77 frames/s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from chordkd.decoding import argmax_decode, viterbi_decode

FPS = 22050 / 2048
OUT = Path(__file__).parent / "out"


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for n_classes in (25, 170):
        for seconds in (60, 300):
            logits = rng.normal(size=(int(seconds * FPS), n_classes)).astype(np.float32)
            for name, fn, args in (("argmax", argmax_decode, (logits,)),
                                   ("viterbi p=0.9", viterbi_decode, (logits, 0.9))):
                t = best_of(lambda fn=fn, args=args: fn(*args))
                rows.append({"decoder": name, "classes": n_classes, "audio_s": seconds,
                             "frames": len(logits), "seconds": t,
                             "us_per_frame": 1e6 * t / len(logits), "x_realtime": seconds / t})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "viterbi_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| decoder | classes | audio (s) | frames | time (ms) | us/frame | x real time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['decoder']} | {r['classes']} | {r['audio_s']} | {r['frames']} | "
              f"{1e3 * r['seconds']:.1f} | {r['us_per_frame']:.1f} | {r['x_realtime']:.0f} |"
              for r in rows]
    (OUT / "viterbi_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
