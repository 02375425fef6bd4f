"""Teacher cache size and fidelity per K: bytes per audio-hour, argmax agreement and mean
KL(full || rebuilt) at T = 1 and T = 3, measured through the real writer and reader.

    .venv/bin/python bench/teacher_cache.py                       # fixture teacher, tone audio
    .venv/bin/python bench/teacher_cache.py --teacher runs/teacher/.../last.ckpt --audio DIR

Writes bench/out/teacher_cache[-NAME].json and .md. The reference is the teacher's float32
logits; K = 0 ("full") stores them as float16, so its KL is float16 rounding alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio import FIXTURE_TEACHER, make_tone_corpus  # noqa: E402

from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.audio import load_audio  # noqa: E402
from chordkd.data.manifest import read_manifest  # noqa: E402
from chordkd.features import LogCQT  # noqa: E402
from chordkd.inference import song_logits  # noqa: E402
from chordkd.labelling.teacher_cache import (  # noqa: E402
    AudioFingerprint,
    CacheWriter,
    TeacherCache,
    rebuild_log_probs,
)
from chordkd.models.loading import load_model  # noqa: E402

KS = (1, 4, 8, 16, 0)
TAIL_T = 3.0
TEMPERATURES = (1.0, 3.0)


def teacher_logits(teacher: str, audio: str) -> tuple[list[torch.Tensor], float, int]:
    """Full float32 logits ``[T, C]`` per song, total audio seconds, frames per second."""
    loaded = load_model(teacher)
    cqt = LogCQT(loaded.features)
    out, seconds = [], 0.0
    with torch.inference_mode():
        for song in read_manifest(audio):
            wave = load_audio(song.audio, sr=loaded.features.sr)
            seconds += len(wave) / loaded.features.sr
            out.append(song_logits(loaded.model.eval(), cqt(torch.from_numpy(wave))))
    return out, seconds, loaded.features


def measure(logits: list[torch.Tensor], seconds: float, k: int, tail: bool) -> dict:
    n_classes = logits[0].shape[-1]
    fp = AudioFingerprint("0" * 40, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        with CacheWriter(tmp) as w:
            for i, lg in enumerate(logits):
                logz = torch.logsumexp(lg, -1)
                logp = lg - logz[:, None]
                logz_t = torch.logsumexp(lg / TAIL_T, -1).numpy() if tail else None
                if k:
                    v, idx = logp.topk(k, -1)
                    w.write_logits(f"s{i}", logz.numpy(), v.half().numpy(), idx.to(torch.uint8).numpy(),
                                   n_classes, audio=fp, teacher="bench", features="bench",
                                   logz_t=logz_t, tail_temperature=TAIL_T)
                else:
                    w.write_logits(f"s{i}", logz.numpy(), logp.half().numpy(), None, n_classes,
                                   audio=fp, teacher="bench", features="bench")
        shard_bytes = sum(p.stat().st_size for p in Path(tmp).glob("shard-*"))
        cache = TeacherCache(tmp)
        agree, top1, frames = 0, 0, 0
        kl = {t: 0.0 for t in TEMPERATURES}
        for i, lg in enumerate(logits):
            o = cache.read(f"s{i}")
            args = [torch.from_numpy(np.array(a))[None] for a in (o.values, o.indices, o.logz)]
            logz_t = None if o.logz_t is None else torch.from_numpy(np.array(o.logz_t))[None]
            for t in TEMPERATURES:
                rebuilt = rebuild_log_probs(*args, n_classes=n_classes, temperature=t,
                                            logz_t=logz_t, tail_temperature=o.tail_temperature)[0]
                full = torch.log_softmax(lg / t, -1)
                kl[t] += float((full.exp() * (full - rebuilt)).sum(-1).sum())
                if t == 1.0:
                    agree += int((rebuilt.argmax(-1) == lg.argmax(-1)).sum())
            # the hard pseudo-label of stage 1
            top1 += int((torch.from_numpy(o.best_class()) == lg.argmax(-1)).sum())
            frames += lg.shape[0]
    return {
        "k": k or "full",
        "tail_logz_T3": bool(tail and k),
        "bytes_per_frame": shard_bytes / frames,
        "mb_per_audio_hour": shard_bytes / seconds * 3600 / 1e6,
        "argmax_agreement": agree / frames,
        "top1_index_agreement": top1 / frames,
        **{f"mean_kl_T{t:g}": kl[t] / frames for t in TEMPERATURES},
    }


def sharpening_scale(logits: list[torch.Tensor], target_top1: float) -> float:
    """The factor s for which softmax(s * logits) has mean top-1 probability ``target_top1``."""
    lg = torch.cat(logits)
    lo, hi = 1e-3, 1e3
    for _ in range(60):  # bisection in log space; top-1 probability grows with s
        mid = (lo * hi) ** 0.5
        if float((mid * lg).softmax(-1).max(-1).values.mean()) < target_top1:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5


def distribution_stats(logits: list[torch.Tensor]) -> dict:
    """How peaked the teacher is: mean top-1 probability, mean entropy, residual mass beyond K=8."""
    lg = torch.cat(logits)
    p = lg.softmax(-1)
    p3 = (lg / 3).softmax(-1)
    return {
        "mean_top1_prob_T1": float(p.max(-1).values.mean()),
        "mean_top1_prob_T3": float(p3.max(-1).values.mean()),
        "mean_entropy_T1_nats": float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean()),
        "mean_residual_mass_beyond_top8_T1": float(1 - p.topk(8, -1).values.sum(-1).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(FIXTURE_TEACHER))
    ap.add_argument("--audio", default=None, help="folder or manifest (default: generated tones)")
    ap.add_argument("--name", default="fixture", help="suffix of the output files")
    ap.add_argument("--sharpen", type=float, default=None, metavar="P",
                    help="scale the teacher's logits so its mean top-1 probability is P "
                         "(a stand-in for a trained teacher when only random weights exist)")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    out = Path(args.out)
    audio = args.audio or str(make_tone_corpus(out / "tone_audio", n_songs=6, seconds=60.0))
    t0 = time.perf_counter()
    logits, seconds, features = teacher_logits(args.teacher, audio)
    scale = 1.0
    if args.sharpen is not None:
        scale = sharpening_scale(logits, args.sharpen)
        logits = [lg * scale for lg in logits]
    rows = [measure(logits, seconds, k, tail) for k in KS for tail in ((False, True) if k else (False,))]
    result = {
        "teacher": args.teacher, "audio": audio, "audio_seconds": seconds,
        "frames": sum(x.shape[0] for x in logits), "n_classes": logits[0].shape[-1],
        "frames_per_second": 1 / features.frame_seconds, "logit_scale": scale, "teacher_stats": distribution_stats(logits),
        "rows": rows, "bench_seconds": time.perf_counter() - t0,
    }
    write_json(out / f"teacher_cache-{args.name}.json", result)
    md = [f"# Teacher cache size and fidelity ({args.name})", "",
          f"teacher `{args.teacher}`, {seconds / 60:.1f} min of audio, {result['frames']} frames, "
          f"{result['n_classes']} classes, logits scaled by {scale:.3g}", "",
          "teacher: " + ", ".join(f"{k} {v:.3f}" for k, v in result["teacher_stats"].items()), "",
          "| K | logz at T=3 cached | bytes/frame | MB per audio-hour | top-1 index agreement | argmax of rebuilt agreement "
          "| mean KL T=1 (nats) | mean KL T=3 (nats) |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['k']} | {'yes' if r['tail_logz_T3'] else 'no'} | {r['bytes_per_frame']:.1f} | {r['mb_per_audio_hour']:.2f} | "
           f"{100 * r['top1_index_agreement']:.2f}% | {100 * r['argmax_agreement']:.2f}% | {r['mean_kl_T1']:.2e} | {r['mean_kl_T3']:.2e} |"
           for r in rows]
    write_text(out / f"teacher_cache-{args.name}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
