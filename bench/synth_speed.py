"""Speed of the built-in synthesizer, in x real time per core (one process, one thread).

    .venv/bin/python bench/synth_speed.py [--songs 12] [--seconds 40]

Times ``synthesize_song`` (harmony, notes, rendering, reverb, mix) and, separately, the FLAC
encoding, for the demo and shifted styles; writes bench/out/synth_speed.json and prints it.
Also reports the corpus statistics of the demo style's harmony model (share of chord time per
quality), so the long tail can be checked at a glance. Target: >= 50x real time per core.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from pathlib import Path

# One core: pin the numeric libraries to a single thread before numpy is imported.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chordkd.atomic import write_json  # noqa: E402
from chordkd.synth import QUALITIES, compose_song, synthesize_song  # noqa: E402
from chordkd.synth.corpus import flac_bytes  # noqa: E402


def measure(style: str, songs: int, seconds: float) -> dict:
    synthesize_song(seed=999, index=0, seconds=seconds, style=style)  # warm imports and caches
    render_s = encode_s = 0.0
    per_song = []
    for index in range(songs):
        t0 = time.perf_counter()
        audio, *_ = synthesize_song(seed=0, index=index, seconds=seconds, style=style)
        t1 = time.perf_counter()
        flac_bytes(audio)
        t2 = time.perf_counter()
        render_s += t1 - t0
        encode_s += t2 - t1
        per_song.append(seconds / (t1 - t0))
    audio_s = songs * seconds
    return {
        "style": style,
        "songs": songs,
        "seconds_per_song": seconds,
        "synthesis_x_realtime": round(audio_s / render_s, 1),
        "synthesis_plus_flac_x_realtime": round(audio_s / (render_s + encode_s), 1),
        "slowest_song_x_realtime": round(min(per_song), 1),
    }


def quality_shares(songs: int = 200, seconds: float = 40.0) -> dict:
    beats = collections.Counter()
    for index in range(songs):
        for chord in compose_song(seed=0, index=index, seconds=seconds).chords:
            beats[chord.quality] += chord.beats
    total = sum(beats.values())
    return {q: round(beats[q] / total, 4) for q in sorted(QUALITIES, key=lambda q: -beats[q])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    result = {
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "threads": 1},
        "target_x_realtime": 50,
        "styles": [measure(style, args.songs, args.seconds) for style in ("demo", "shifted")],
        "demo_quality_share_of_chord_time": quality_shares(),
    }
    out = ROOT / "bench" / "out" / "synth_speed.json"
    write_json(out, result)
    for r in result["styles"]:
        print(f"{r['style']:8s} synthesis {r['synthesis_x_realtime']:7.1f}x real time per core, "
              f"with FLAC {r['synthesis_plus_flac_x_realtime']:7.1f}x, "
              f"slowest song {r['slowest_song_x_realtime']:.1f}x")
    shares = result["demo_quality_share_of_chord_time"]
    print("demo chord time: " + ", ".join(f"{q} {100 * s:.1f}%" for q, s in shares.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
