"""Stage-1 data path: chordkd's cached path against the online path, and how it scales.

*Cached* (chordkd): ``TeacherDataModule`` over a memory-mapped audio cache and a teacher cache
of top-K logits; its train dataloader yields raw-sample windows (108 frames + 8 frames of
context each side) with the teacher's cached outputs, and ``on_after_batch_transfer`` computes
``LogCQT`` on the device and applies the pitch shift. A window is counted once it has features
and targets on the device.

*Offline* (BTC's and ChordMini's preprocessing, ``offline_path.py``): features and teacher
targets computed once per song and stored; per window a memory-mapped read.

*Online* (what public ACR research code does on the fly): per window, decode the audio segment from its
file (soundfile seek + read of the same samples), ``librosa.cqt`` of the segment with BTC's
settings, log; per batch, a teacher forward (``load_official_btc``) for the argmax targets.
No pitch shift (that only flatters the online path).

Both read the same windows (same segment length, context included) of the same corpus; the
corpus is ``chordkd synth`` audio, labelled once with the real ``chordkd label`` machinery.
Larger corpora for the scaling runs replicate the base manifest's rows under new song ids
that point at the same audio files (``replicate_manifest``): every id gets its own audio
cache samples and its own teacher cache record, so the caches grow exactly as for distinct
songs, while synthesising and labelling stay cheap.

    .venv/bin/python bench/data_path.py scale --manifest M --teacher-cache C   # one JSON line
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chordkd.data.audio_cache import AudioCache  # noqa: E402
from chordkd.data.datamodule import TeacherDataModule, cache_folder  # noqa: E402
from chordkd.data.datasets import CONTEXT  # noqa: E402
from chordkd.data.manifest import read_manifest, write_manifest  # noqa: E402
from chordkd.features import LOG_EPS, FeatureSettings  # noqa: E402
from chordkd.labelling.teacher_cache import TeacherCache  # noqa: E402

WINDOW = 108
FRAME_SECONDS = FeatureSettings().frame_seconds
HOURS_PER_EPOCH_PROJECTION = 1000.0


# -- corpus ------------------------------------------------------------------------------
def synth_corpus(folder: Path, songs: int, seconds: float, seed: int = 7) -> tuple[Path, list[str]]:
    """A ``chordkd synth`` corpus in ``folder`` (reused when its manifest already has ``songs``
    rows); returns its manifest and the command that made it."""
    manifest = folder / "manifest.csv"
    cmd = [sys.executable, "-m", "chordkd", "synth", "--out", str(folder), "--songs", str(songs),
           "--seconds", f"{seconds:g}", "--seed", str(seed), "--no-progress"]
    if not (manifest.is_file() and len(read_manifest(manifest)) == songs):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return manifest, cmd


def replicate_manifest(base: Path, out: Path, times: int) -> list[str]:
    """Write ``out``: every row of the ``base`` manifest ``times`` times, ids suffixed
    ``_r<j>``, audio pointing at the same files, no labels (an unlabelled pool)."""
    with open(base, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    new = []
    for j in range(times):
        for row in rows:
            new.append({"id": f"{row['id']}_r{j:02d}", "audio": str((base.parent / row["audio"]).resolve()),
                        "labels": "", "duration": row.get("duration", "")})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, new)
    return [r["id"] for r in new]


def directory_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the cached path ---------------------------------------------------------------------
def data_module(manifest: Path, teacher_cache: Path, batch_size: int, num_workers: int,
                seed: int = 0) -> TeacherDataModule:
    """A set-up ``TeacherDataModule`` as stage 1 builds it (pitch shift +-5 semitones)."""
    dm = TeacherDataModule(str(manifest), str(teacher_cache), batch_size=batch_size,
                           num_workers=num_workers, pitch_shift=5, seed=seed, window=WINDOW)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class CachedPath:
    """Batches of the data module's train loader, moved to ``device`` and through
    ``on_after_batch_transfer``; the loader restarts when exhausted."""

    def __init__(self, dm: TeacherDataModule, device: torch.device) -> None:
        self.dm, self.device = dm, device
        self._it = iter(dm.train_dataloader())

    def _next_raw(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:  # without a trainer the loader replays epoch 0's windows
            self._it = iter(self.dm.train_dataloader())
            return next(self._it)

    def batch(self) -> tuple[int, float, float]:
        """One batch: (windows, seconds in the loader, seconds moving + on the device)."""
        t0 = time.perf_counter()
        raw = self._next_raw()
        t1 = time.perf_counter()
        moved = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in raw.items()}
        with torch.no_grad():
            out = self.dm.on_after_batch_transfer(moved, 0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        if out["features"].shape[1:] != (WINDOW, 144):
            raise RuntimeError(f"unexpected feature shape {tuple(out['features'].shape)}")
        return out["features"].shape[0], t1 - t0, t2 - t1


# -- the online path ---------------------------------------------------------------------
@dataclass
class OnlineSong:
    path: str
    n_frames: int


class OnlinePath:
    """Decode + ``librosa.cqt`` per window, teacher forward per batch (no caches at all)."""

    def __init__(self, manifest: Path, teacher: str, batch_size: int, device: torch.device,
                 seed: int = 0) -> None:
        import soundfile as sf

        from chordkd.models.official import load_official_btc

        self.settings = FeatureSettings()
        self.songs = []
        for s in read_manifest(manifest):
            info = sf.info(str(s.audio))
            if info.samplerate != self.settings.sr or info.channels != 1:
                raise RuntimeError(f"{s.audio}: the online path expects mono {self.settings.sr} Hz")
            self.songs.append(OnlineSong(str(s.audio), self.settings.n_frames(info.frames)))
        self.teacher = load_official_btc(teacher).to(device).eval()
        self.batch_size, self.device = batch_size, device
        self.rng = np.random.default_rng(seed)

    def _features(self, song: OnlineSong, f0: int) -> np.ndarray:
        """``[108, 144]`` log-CQT of one window, computed from the file."""
        import librosa
        import soundfile as sf

        s, hop = self.settings, self.settings.hop
        start, stop = (f0 - CONTEXT) * hop, (f0 + WINDOW + CONTEXT) * hop
        with sf.SoundFile(song.path) as f:  # a fresh open per window, as a Dataset would
            lo = max(start, 0)
            f.seek(lo)
            got = f.read(stop - lo, dtype="float32")
        audio = np.zeros(stop - start, dtype=np.float32)
        audio[lo - start : lo - start + len(got)] = got
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = librosa.cqt(audio, sr=s.sr, hop_length=hop, fmin=s.fmin, n_bins=s.n_bins,
                            bins_per_octave=s.bins_per_octave)
        return np.log(np.abs(c) + LOG_EPS).T[CONTEXT : CONTEXT + WINDOW]

    def batch(self) -> tuple[int, float, float]:
        """One batch: (windows, seconds decoding + CQT, seconds in the teacher)."""
        t0 = time.perf_counter()
        feats = []
        for _ in range(self.batch_size):
            song = self.songs[int(self.rng.integers(len(self.songs)))]
            f0 = int(self.rng.integers(max(song.n_frames - WINDOW, 0) + 1))
            feats.append(self._features(song, f0))
        x = torch.from_numpy(np.stack(feats)).to(self.device)
        t1 = time.perf_counter()
        with torch.no_grad():
            labels = self.teacher(x).argmax(-1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        if labels.shape != (self.batch_size, WINDOW):
            raise RuntimeError(f"unexpected label shape {tuple(labels.shape)}")
        return self.batch_size, t1 - t0, t2 - t1


# -- measurement -------------------------------------------------------------------------
def timed_rounds(runners: dict, batches: dict[str, int], rounds: int) -> dict[str, dict]:
    """Interleave the runners round by round (so load changes hit all of them alike); per
    runner the best round's windows/s and that round's time split. Each runner's ``batch()``
    returns (windows, seconds of part a, seconds of part b); one untimed warm-up batch each."""
    for run in runners.values():
        run()
    best: dict[str, dict] = {}
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            n = a = b = 0.0
            t0 = time.perf_counter()
            for _ in range(batches[name]):
                w, ta, tb = run()
                n, a, b = n + w, a + ta, b + tb
            wall = time.perf_counter() - t0
            rates[name].append(n / wall)
            if name not in best or n / wall > best[name]["windows_per_second"]:
                best[name] = {"windows": int(n), "seconds": wall, "windows_per_second": n / wall,
                              "part_a_seconds": a, "part_b_seconds": b}
    for name in best:
        best[name]["rounds_windows_per_second"] = rates[name]
    return best


def windows_per_audio_hour(dm: TeacherDataModule) -> float:
    """Training windows per epoch per hour of audio, from the data module's own window grid."""
    hours = sum(r.n_frames for r in dm.train_set.songs) * FRAME_SECONDS / 3600
    return len(dm.train_set) / hours


def compare(manifest: Path, teacher_cache: Path, teacher: str, device: str, batch_size: int,
            rounds: int, cached_batches: int, online_batches: int, offline_batches: int,
            offline_folder: Path, num_workers: int = 0) -> dict:
    """Section 2: chordkd's cached path, the online peer and the offline peer, interleaved.

    The training step these are compared with is measured once, in the training section
    (``run_all`` joins the two), so one figure has one measurement.
    """
    from offline_path import OfflinePath

    dev = torch.device(device)
    dm = data_module(manifest, teacher_cache, batch_size, num_workers)
    cached = CachedPath(dm, dev)
    online = OnlinePath(manifest, teacher, batch_size, dev)
    offline = OfflinePath(manifest, offline_folder, teacher, batch_size, dev)
    offline_prep = offline.prepare()
    rows = timed_rounds({"cached": cached.batch, "online": online.batch, "offline": offline.batch},
                        {"cached": cached_batches, "online": online_batches, "offline": offline_batches},
                        rounds)
    rows["cached"]["parts"] = {"loader_seconds": rows["cached"].pop("part_a_seconds"),
                               "device_cqt_seconds": rows["cached"].pop("part_b_seconds")}
    rows["online"]["parts"] = {"decode_and_librosa_cqt_seconds": rows["online"].pop("part_a_seconds"),
                               "teacher_seconds": rows["online"].pop("part_b_seconds")}
    rows["offline"]["parts"] = {"stored_window_reads_seconds": rows["offline"].pop("part_a_seconds"),
                                "to_device_seconds": rows["offline"].pop("part_b_seconds")}
    rows["offline"]["preprocessing"] = {
        **offline_prep, "x_real_time": offline_prep["audio_seconds"] / offline_prep["prepare_seconds"]
        if offline_prep["prepare_seconds"] > 0 else None}
    per_hour = windows_per_audio_hour(dm)
    for row in rows.values():
        add_projection(row, per_hour)
    c, o, f = (rows[k]["windows_per_second"] for k in ("cached", "online", "offline"))
    return {
        "device": str(dev), "batch_size": batch_size, "num_workers": num_workers,
        "rounds": rounds, "threads": torch.get_num_threads(),
        "corpus_songs": len(dm.train_set.songs), "windows_per_audio_hour": per_hour,
        **rows,
        "cached_over_online": c / o,
        "cached_over_offline": c / f,
    }


def add_projection(row: dict, windows_per_hour: float) -> None:
    """Add frames/s and the hours one epoch over 1,000 audio-hours would take at this rate."""
    row["frames_per_second"] = row["windows_per_second"] * WINDOW
    row["epoch_hours_for_1000h"] = (windows_per_hour * HOURS_PER_EPOCH_PROJECTION
                                    / row["windows_per_second"] / 3600)


def join_train_step(data_path_row: dict, training_row: dict) -> None:
    """Put the training section's measurement of the BTC-base fp32 step (median frames/s of
    its timed steps, with min and max) in the data-path table: one measurement, two tables."""
    w = training_row["windows_per_second"]
    step = {"windows_per_second": w, "windows_per_second_min": training_row["frames_per_second_min"] / WINDOW,
            "windows_per_second_max": training_row["frames_per_second_max"] / WINDOW,
            "steps": training_row["steps"], "source": "training section, same row"}
    add_projection(step, data_path_row["windows_per_audio_hour"])
    data_path_row["train_step"] = step
    data_path_row["cached_over_train_step"] = data_path_row["cached"]["windows_per_second"] / w
    data_path_row["stage1_epoch_bound_by"] = ("data" if data_path_row["cached"]["windows_per_second"] < w
                                              else "training step")


# -- scaling -----------------------------------------------------------------------------
def memory_status() -> dict[str, int]:
    """Resident memory of this process from /proc: anonymous (heap, tensors) and file-backed
    (mapped files such as the audio and teacher caches; reclaimable page cache), in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def scale_run(manifest: Path, teacher_cache: Path, batch_size: int, batches: int,
              device: str, rounds: int) -> dict:
    """One corpus size: build its audio cache, then windows/s and memory of the cached path."""
    dev = torch.device(device)
    before = memory_status()
    t0 = time.perf_counter()
    dm = data_module(manifest, teacher_cache, batch_size, num_workers=0)
    setup_s = time.perf_counter() - t0
    after_setup = memory_status()
    cached = CachedPath(dm, dev)
    rate = timed_rounds({"cached": cached.batch}, {"cached": batches}, rounds)["cached"]
    after = memory_status()
    songs = [r.id for r in dm.train_set.songs]
    hours = sum(r.n_frames for r in dm.train_set.songs) * FRAME_SECONDS / 3600
    audio = AudioCache(cache_folder(manifest))
    tc = TeacherCache(teacher_cache, verify=False)
    teacher_bytes = sum(tc.entry(s).nbytes for s in songs)
    return {
        "songs": len(songs), "audio_hours": hours,
        "setup_seconds": setup_s,  # decoding into the audio cache + joining the teacher cache
        "windows_per_second": rate["windows_per_second"],
        "rounds_windows_per_second": rate["rounds_windows_per_second"],
        "audio_cache_bytes_per_hour": 2 * audio.total_samples / hours,
        "audio_cache_index_bytes": (audio.folder / "index.json").stat().st_size,
        "teacher_cache_bytes_per_hour": teacher_bytes / hours,
        "memory_bytes": {"start": before, "after_setup": after_setup, "after_batches": after},
        "rss_anon_growth_bytes": after["RssAnon"] - before["RssAnon"],
        "batches_per_round": batches, "rounds": rounds,
    }


def interleaved_rates(manifests: dict[int, Path], teacher_cache: Path, batch_size: int,
                      batches: int, rounds: int, device: str) -> dict[int, dict]:
    """Windows/s of every corpus size in one process, round by round, so that a change in
    the machine's load hits all sizes alike (the per-size processes give the memory)."""
    dev = torch.device(device)
    paths = {n: CachedPath(data_module(m, teacher_cache, batch_size, num_workers=0), dev)
             for n, m in manifests.items()}
    rows = timed_rounds({n: p.batch for n, p in paths.items()}, dict.fromkeys(paths, batches), rounds)
    return {n: {"windows_per_second": r["windows_per_second"],
                "rounds_windows_per_second": r["rounds_windows_per_second"]} for n, r in rows.items()}


def scale_in_subprocess(manifest: Path, teacher_cache: Path, batch_size: int, batches: int,
                        device: str, rounds: int, threads: int) -> tuple[dict, list[str]]:
    """:func:`scale_run` in a fresh interpreter (clean memory figures)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "scale", "--manifest", str(manifest),
           "--teacher-cache", str(teacher_cache), "--batch-size", str(batch_size),
           "--batches", str(batches), "--device", device, "--rounds", str(rounds),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "CHORDKD_NO_PROGRESS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("scale", help="windows/s and memory of the cached path on one corpus")
    sc.add_argument("--manifest", type=Path, required=True)
    sc.add_argument("--teacher-cache", type=Path, required=True)
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--batches", type=int, default=4)
    sc.add_argument("--rounds", type=int, default=2)
    sc.add_argument("--device", default="cpu")
    sc.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = scale_run(args.manifest, args.teacher_cache, args.batch_size, args.batches,
                       args.device, args.rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
