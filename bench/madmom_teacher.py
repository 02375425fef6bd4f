"""madmom's chord models as teachers: labelling speed beside BTC's, and which logits to cache.

    .venv/bin/python bench/madmom_teacher.py                 # 6 rendered songs of 30 s, ~3 min
    .venv/bin/python bench/madmom_teacher.py --songs 12 --seconds 40

On one set of rendered songs (``chordkd synth`` style ``demo``, labelled), side by side in one
process:

1. **Labelling speed** (x real time, ``label_corpus`` end to end into a fresh cache, start-up
   included, 1 song per batch, CPU): the BTC-base teacher (official format, the shared fixture),
   ``madmom:cnn`` and ``madmom:deepchroma``.
2. **Which logits** (``madmom:cnn``): the CRF's observation scores ``features @ W + c`` (the
   default) against its log posterior marginals (``-marginals``), as pseudo-labels on chordkd's
   frames against the songs' labels in ``majmin``: argmax frame accuracy, mean top-1
   probability, mean entropy (nats), expected calibration error (15 bins), and the fraction of
   frames the paper's selective-KD rule weights fully (top-1 probability at T = 3 between 0.1
   and 0.9). The CRF's Viterbi path is shown for reference.
3. **Frame timing**: the CRF path placed at madmom's frame centres (chordkd's choice) or 50 ms
   later (madmom's label writer), as frame accuracy against the labels.

Writes bench/out/madmom_teacher.json and .md and prints the Markdown. Numbers taken under load
understate speeds; the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio import FIXTURE_TEACHER  # noqa: E402

from chordkd.annotations import intervals_to_frames, read_annotation  # noqa: E402
from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.audio import load_audio  # noqa: E402
from chordkd.chords import get_vocabulary  # noqa: E402
from chordkd.data.manifest import read_manifest  # noqa: E402

TEACHERS = ("btc", "madmom:cnn", "madmom:deepchroma")


def render_songs(folder: Path, n_songs: int, seconds: float, seed: int = 7) -> Path:
    """``n_songs`` labelled songs of the demo style (``chordkd synth``'s corpus layout, with its
    manifest); songs already rendered are reused."""
    from chordkd.synth.corpus import make_corpus

    make_corpus(folder, n_songs, seconds, seed=seed, first_index=60_000, progress=False)
    return folder


def labelling_speed(spec: str, audio: Path, out: Path) -> dict:
    from chordkd.labelling.label import label_corpus

    shutil.rmtree(out, ignore_errors=True)
    report = label_corpus(spec, audio, out, num_workers=1,
                          trainer_kwargs={"accelerator": "cpu", "devices": 1})
    return {"teacher": spec, "audio_seconds": report.audio_seconds,
            "wall_seconds": report.wall_seconds, "x_real_time": report.x_real_time}


def _stats(log_p: np.ndarray, truth: np.ndarray) -> dict:
    p = np.exp(log_p)
    top = p.max(1)
    correct = p.argmax(1) == truth
    bins = np.minimum((top * 15).astype(int), 14)
    ece = sum(abs(correct[bins == b].mean() - top[bins == b].mean()) * (bins == b).mean()
              for b in range(15) if (bins == b).any())
    tempered = torch.softmax(torch.from_numpy(log_p) / 3.0, 1).max(1).values.numpy()
    return {"accuracy": float(correct.mean()), "mean_top1": float(top.mean()),
            "mean_entropy_nats": float(-(p * np.where(p > 0, log_p, 0)).sum(1).mean()),
            "ece_15_bins": float(ece),
            "selective_full_weight": float(((tempered >= 0.1) & (tempered <= 0.9)).mean())}


def which_logits(audio: Path) -> dict:
    from chordkd.decoding import crf_decode, crf_log_marginals
    from chordkd.teachers import GRID, load_teacher, to_grid
    from chordkd.teachers.madmom import MADMOM_FPS

    cnn = load_teacher("madmom:cnn")
    vocab = get_vocabulary("majmin")
    rows: dict[str, list] = {"scores": [], "marginals": []}
    truths, crf_centre, crf_late = [], [], []
    for song in read_manifest(audio):
        samples = load_audio(song.audio)
        n = GRID.n_frames(len(samples))
        scores = cnn.frame_scores(torch.from_numpy(samples))
        truth = intervals_to_frames(*read_annotation(song.labels), vocab, n)
        for name, s in (("scores", scores), ("marginals",
                                             crf_log_marginals(scores, cnn.A, cnn.pi, cnn.tau))):
            mapped = cnn.classes(torch.from_numpy(np.asarray(s, dtype=np.float32)))
            rows[name].append(to_grid(mapped, 1 / MADMOM_FPS, n).numpy())
        path = torch.from_numpy(cnn.classes.targets[crf_decode(scores, cnn.A, cnn.pi, cnn.tau)])
        path = path[:, None]
        crf_centre.append(to_grid(path, 1 / MADMOM_FPS, n)[:, 0].numpy())
        crf_late.append(to_grid(path, 1 / MADMOM_FPS, n, offset_seconds=0.05)[:, 0].numpy())
        truths.append(truth)
    truth = np.concatenate(truths)
    out = {name: _stats(np.concatenate(v), truth) for name, v in rows.items()}
    out["crf_path_accuracy"] = {"frame_centres": float((np.concatenate(crf_centre) == truth).mean()),
                                "madmom_label_times": float((np.concatenate(crf_late) == truth).mean())}
    out["frames"] = int(len(truth))
    return out


def markdown(r: dict) -> str:
    speed = r["speed"]
    lines = [f"# madmom teachers beside BTC ({r['songs']} songs, {r['audio_seconds'] / 60:.1f} min "
             f"of rendered audio; load average {r['load_average'][0]:.1f} -> "
             f"{r['load_average'][1]:.1f} on {os.cpu_count()} CPUs)", "",
             "| teacher | labelling x real time (end to end, CPU) | wall s |", "|:---|---:|---:|"]
    lines += [f"| {s['teacher']} | {s['x_real_time']:.1f} | {s['wall_seconds']:.1f} |" for s in speed]
    w = r["which_logits"]
    lines += ["", f"madmom:cnn logits as pseudo-labels ({w['frames']} chordkd frames, majmin):", "",
              "| logits | frame accuracy | mean top-1 p | mean entropy (nats) | ECE | selective-KD full weight |",
              "|:---|---:|---:|---:|---:|---:|"]
    for name in ("scores", "marginals"):
        s = w[name]
        lines.append(f"| {name} | {100 * s['accuracy']:.2f} | {s['mean_top1']:.3f} | "
                     f"{s['mean_entropy_nats']:.3f} | {s['ece_15_bins']:.3f} | "
                     f"{100 * s['selective_full_weight']:.1f}% |")
    c = w["crf_path_accuracy"]
    lines += ["", f"CRF Viterbi path frame accuracy: {100 * c['frame_centres']:.2f} with frames at "
              f"their centres (chordkd), {100 * c['madmom_label_times']:.2f} 50 ms later "
              "(madmom's label writer)."]
    return "\n".join(lines) + "\n"


def measure(audio: Path, out: Path, btc_teacher: str) -> dict:
    load_before = os.getloadavg()[0]
    speed = []
    for spec in TEACHERS:
        source = btc_teacher if spec == "btc" else spec
        row = labelling_speed(source, audio, out / f"cache-{spec.replace(':', '-')}")
        row["teacher"] = "BTC-base (official format)" if spec == "btc" else spec
        speed.append(row)
    result = {"songs": len(read_manifest(audio)), "audio_seconds": speed[0]["audio_seconds"],
              "speed": speed, "which_logits": which_logits(audio)}
    result["load_average"] = [load_before, os.getloadavg()[0]]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher", default=str(FIXTURE_TEACHER), help="BTC teacher to compare with")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["CHORDKD_NO_PROGRESS"] = "1"
    out = Path(args.out)
    audio = render_songs(out / f"madmom_audio_{args.songs}x{args.seconds:g}s", args.songs,
                         args.seconds)
    t0 = time.perf_counter()
    result = measure(audio, out / "madmom_teacher", args.teacher)
    result["wall_seconds"] = time.perf_counter() - t0
    result["command"] = " ".join(["bench/madmom_teacher.py", *sys.argv[1:]])
    write_json(out / "madmom_teacher.json", result)
    md = markdown(result)
    write_text(out / "madmom_teacher.md", md)
    print(md)


if __name__ == "__main__":
    main()
