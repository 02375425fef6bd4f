"""LogCQT (nnAudio, torch) against librosa.cqt (BTC's front end): speed and agreement.

nnAudio's own untrimmed ``CQT1992v2`` (the kernels LogCQT trims per octave) is timed
alongside for reference. All three transform the same 3 minutes of synthetic audio (2-s chords of harmonic notes over a
-50 dB noise floor, seeded) on the same CPU. Thread counts are pinned before numpy and torch
are imported: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` are set to
``--threads`` (default: all cores) and ``torch.set_num_threads`` likewise, so neither side gets
more cores than the other. (librosa's FFTs, soxr resampling and sparse kernel products run on
one core whatever is allowed; the thread count is what both were *offered*.)

Each transform runs once to warm up (kernel construction, caches, lazy imports), then three
timed runs; the best is reported, as x real time (audio seconds per second of compute). The
agreement of the two outputs on this audio is reported alongside (argmax bin, per-frame Pearson
correlation of the log-magnitudes, median relative magnitude error).

    .venv/bin/python bench/cqt_speed.py [--threads N] [--seconds 180]

Writes ``bench/out/cqt_speed.json`` and prints a one-line summary. ``bench/run_all.py`` calls
:func:`measure` (also on a CUDA device when there is one; librosa always runs on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=180.0, help="audio length")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per transform (best kept)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "cqt_speed.json"))
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # Must happen before numpy/torch load their BLAS/OpenMP runtimes.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chordkd.atomic import write_json  # noqa: E402
from chordkd.features import LOG_EPS, FeatureSettings, LogCQT  # noqa: E402


def chord_audio(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """``[seconds * sr]`` float32: 2-s chords (bass + three notes, 6 harmonics at 1/h), peak
    0.5, with white noise 50 dB under the peak so no CQT bin sits in digital silence."""
    rng = np.random.default_rng(seed)
    n, seg = int(seconds * sr), 2 * sr
    t = np.arange(seg) / sr
    parts = []
    for _ in range(0, n, seg):
        root = int(rng.integers(0, 12))
        midis = [root + 36, *(root + 48 + rng.integers(0, 12, size=3))]
        chord = np.zeros(seg)
        for midi in midis:
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            for h in range(1, 7):
                if f0 * h < sr / 2:
                    chord += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
        parts.append(chord)
    x = np.concatenate(parts)[:n]
    x = 0.5 * x / np.abs(x).max() + 0.5 * 10 ** (-50 / 20) * rng.standard_normal(n)
    return x.astype(np.float32)


def best_of(fn, repeats: int) -> tuple[float, list[float], float]:
    """(best, all timed runs, the untimed-in-best warm-up run) in seconds."""
    t0 = time.perf_counter()
    fn()  # warm-up: librosa's lazy imports and numba JIT, torch's first-call allocations
    warm_up = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, warm_up


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """Both ``[frames, bins]`` log-magnitudes."""
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs)])
    mo, mt = np.exp(ours) - LOG_EPS, np.exp(theirs) - LOG_EPS
    rel = np.linalg.norm(mo - mt, axis=-1) / np.linalg.norm(mt, axis=-1)
    return {
        "argmax_agreement": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
        "corr_min": float(corr.min()),
        "corr_mean": float(corr.mean()),
        "rel_mag_err_median": float(np.median(rel)),
        "rel_mag_err_max": float(rel.max()),
    }


def _timed_on(device: torch.device, fn):
    """``fn`` followed by a device synchronisation, so GPU timings cover the work itself."""
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def measure(seconds: float = 180.0, repeats: int = 3, device: str = "cpu") -> dict:
    """LogCQT, nnAudio's untrimmed ``CQT1992v2`` and ``librosa.cqt`` (always on the CPU) on
    the same audio; the torch front ends run on ``device``. Best of ``repeats`` after a
    warm-up, as x real time, plus LogCQT's agreement with librosa."""
    import librosa
    from nnAudio.features import CQT1992v2

    dev = torch.device(device)
    s = FeatureSettings()
    audio = chord_audio(seconds, s.sr)
    seconds = len(audio) / s.sr

    t0 = time.perf_counter()
    front_end = LogCQT(s).to(dev)
    build_s = time.perf_counter() - t0
    reference = CQT1992v2(sr=s.sr, hop_length=s.hop, fmin=s.fmin, n_bins=s.n_bins,
                          bins_per_octave=s.bins_per_octave, pad_mode="constant",
                          output_format="Magnitude", verbose=False).to(dev)
    wave = torch.from_numpy(audio).to(dev)

    def ours() -> np.ndarray:
        with torch.inference_mode():
            return front_end(wave).cpu().numpy()

    def nnaudio() -> None:
        with torch.inference_mode():
            reference(wave[None])

    def theirs() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = librosa.cqt(
                audio,
                sr=s.sr,
                hop_length=s.hop,
                fmin=s.fmin,
                n_bins=s.n_bins,
                bins_per_octave=s.bins_per_octave,
            )
        return np.log(np.abs(c) + LOG_EPS).T

    ours_s, ours_all, ours_first = best_of(_timed_on(dev, ours), repeats)
    ref_s, ref_all, ref_first = best_of(_timed_on(dev, nnaudio), repeats)
    theirs_s, theirs_all, theirs_first = best_of(theirs, repeats)
    a, b = ours(), theirs()
    if a.shape != b.shape:
        raise RuntimeError(f"frame counts differ: LogCQT {a.shape}, librosa {b.shape}")

    def row(best: float, runs: list[float], first: float) -> dict:
        return {"first_call_seconds": first, "best_seconds": best, "runs_seconds": runs,
                "x_real_time": seconds / best}

    return {
        "audio_seconds": seconds,
        "frames": a.shape[0],
        "device": str(dev),
        "torch_num_threads": torch.get_num_threads(),
        "env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "versions": {"torch": torch.__version__, "librosa": librosa.__version__, "numpy": np.__version__},
        "logcqt": {"build_seconds": build_s, **row(ours_s, ours_all, ours_first)},
        "nnaudio_cqt1992v2": row(ref_s, ref_all, ref_first),
        "librosa_cqt": {"device": "cpu", **row(theirs_s, theirs_all, theirs_first)},
        "speedup": theirs_s / ours_s,  # librosa time / LogCQT time; > 1 means LogCQT is faster
        "speedup_over_nnaudio": ref_s / ours_s,
        "agreement_vs_librosa_defaults": agreement(a, b),
    }


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
              **measure(args.seconds, args.repeats)}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    r = main(ARGS)
    ag = r["agreement_vs_librosa_defaults"]
    print(
        f"cqt_speed: {r['audio_seconds']:.0f} s audio, {r['threads']} threads: "
        f"LogCQT {r['logcqt']['best_seconds']:.3f} s ({r['logcqt']['x_real_time']:.0f}x real time), "
        f"nnAudio CQT1992v2 {r['nnaudio_cqt1992v2']['x_real_time']:.0f}x, "
        f"librosa.cqt {r['librosa_cqt']['best_seconds']:.3f} s ({r['librosa_cqt']['x_real_time']:.0f}x), "
        f"speedup (librosa time / LogCQT time) {r['speedup']:.2f}; argmax agreement {ag['argmax_agreement']:.4f}, "
        f"corr min/mean {ag['corr_min']:.3f}/{ag['corr_mean']:.3f} -> {ARGS.out}"
    )
