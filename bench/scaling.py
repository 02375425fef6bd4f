"""Past one machine: the incremental audio cache and the streamed stage-1 data path.

    .venv/bin/python bench/scaling.py            # ~3-5 min on 2 CPU cores
    .venv/bin/python bench/scaling.py --quick    # fewer songs and rounds, ~1-2 min

Writes ``bench/scaling.json`` and ``bench/scaling.md`` (the figures ``docs/scaling.md`` is
derived from), measured side by side in one run:

1. **Incremental rebuild**: a full build of the sharded audio cache of ``--songs`` songs
   (60 s each, 44.1 kHz .wav, so decoding resamples as real corpora do) against the rebuild
   after one song's file changed, interleaved in rounds, best of each. Target: <= 5 %.
2. **Stage-1 data path, streamed vs memory-mapped**: the same corpus and teacher outputs read
   as stage 1 reads them (``ChordDataModule``: loader, then ``on_after_batch_transfer`` =
   device CQT and pitch shift) from the local audio cache (``data.format=mmap``) and from
   litdata shards (``data.format=stream``), rounds interleaved, best of each, in windows per
   second. Target: stream >= 0.8x mmap. Also the loader alone (no CQT), where the formats
   differ most, and bytes per audio-hour of each format.

Teacher outputs are random top-8 log-probabilities written through ``CacheWriter`` (their
values do not change how fast they are read); audio is decaying chord tones with noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chordkd.atomic import write_json, write_text  # noqa: E402
from chordkd.data.audio_cache import build_audio_cache  # noqa: E402
from chordkd.data.datamodule import ChordDataModule, cache_folder  # noqa: E402
from chordkd.data.manifest import read_manifest  # noqa: E402
from chordkd.data.streaming import write_stream  # noqa: E402
from chordkd.features import FeatureSettings  # noqa: E402
from chordkd.labelling.teacher_cache import AudioFingerprint, CacheWriter, consolidate  # noqa: E402

HERE = Path(__file__).resolve().parent
SETTINGS = FeatureSettings()
WINDOW, BATCH = 108, 32


def write_corpus(folder: Path, songs: int, seconds: float, sr: int = 44100) -> Path:
    """``songs`` .wav files of ``seconds`` (reused if present)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in sorted(folder.glob("song_*.wav"))[songs:]:
        stale.unlink()  # a corpus of another size from an earlier run
    for i in range(songs):
        path = folder / f"song_{i:04d}.wav"
        if path.is_file():
            continue
        rng = np.random.default_rng(i)
        t = np.arange(int(seconds * sr)) / sr
        y = 0.01 * rng.standard_normal(t.size)
        for k in range(int(seconds // 2)):
            seg = (t >= 2 * k) & (t < 2 * k + 2)
            for f in 110 * 2 ** (rng.integers(0, 24, 3) / 12):
                y[seg] += 0.1 * np.sin(2 * np.pi * f * t[seg]) * np.exp(-(t[seg] - 2 * k))
        sf.write(path, y.astype(np.float32), sr)
    return folder


def fake_teacher_cache(corpus: Path, out: Path, k: int = 8, n_classes: int = 170) -> Path:
    """Random top-``k`` teacher outputs for every song of ``corpus`` on chordkd's frames."""
    shutil.rmtree(out, ignore_errors=True)
    audio = build_audio_cache(read_manifest(corpus), cache_folder(corpus), progress=False)
    writer = CacheWriter(out)
    rng = np.random.default_rng(0)
    for song in read_manifest(corpus):
        t = SETTINGS.n_frames(audio.length(song.id))
        values = np.sort(np.log(rng.dirichlet(np.ones(n_classes), t)), axis=1)[:, ::-1][:, :k]
        indices = np.argsort(rng.random((t, n_classes)), axis=1)[:, :k].astype(np.uint8)
        writer.write_logits(song.id, rng.standard_normal(t).astype(np.float32),
                            values.astype(np.float16), indices, n_classes,
                            audio=AudioFingerprint.of(song.audio), teacher="random",
                            features=SETTINGS.fingerprint(),
                            logz_t=rng.standard_normal(t).astype(np.float32), tail_temperature=3.0)
    writer.close()
    consolidate(out)
    return out


# -- 1. incremental rebuild ----------------------------------------------------------------
def rebuild_rounds(corpus: Path, scratch: Path, rounds: int) -> dict:
    songs = read_manifest(corpus)
    full, one = [], []
    for r in range(rounds):
        folder = scratch / f"cache_{r}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        build_audio_cache(songs, folder, progress=False)
        full.append(time.perf_counter() - t0)
        changed = songs[r % len(songs)].audio
        y, sr = sf.read(changed, dtype="float32")
        sf.write(changed, y * 0.9, sr)  # one song changes, as an edit or a re-render would
        t0 = time.perf_counter()
        build_audio_cache(read_manifest(corpus), folder, progress=False)
        one.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    build_audio_cache(read_manifest(corpus), folder, progress=False)
    unchanged = time.perf_counter() - t0
    shard_sizes = [p.stat().st_size for p in (folder / "songs").rglob("*.pcm")]
    return {"songs": len(songs), "full_build_s": min(full), "one_changed_s": min(one),
            "unchanged_s": unchanged, "ratio": min(one) / min(full),
            "largest_file_bytes": max(shard_sizes),
            "index_bytes": (folder / "index.json").stat().st_size,
            "all_full_s": full, "all_one_changed_s": one}


# -- 2. streamed vs memory-mapped -------------------------------------------------------------
def data_module(corpus: Path, teacher: Path, fmt: str, stream: Path | None) -> ChordDataModule:
    dm = ChordDataModule(str(corpus), targets="teacher", teacher_cache=str(teacher),
                         window=WINDOW, batch_size=BATCH, pitch_shift=5, format=fmt,
                         stream=str(stream) if stream else None)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class Batches:
    """Endless batches of one data module's train loader: ``batch(with_cqt)`` -> windows."""

    def __init__(self, dm: ChordDataModule) -> None:
        self.dm, self._it = dm, iter(dm.train_dataloader())

    def batch(self, with_cqt: bool) -> int:
        try:
            raw = next(self._it)
        except StopIteration:
            self._it = iter(self.dm.train_dataloader())
            raw = next(self._it)
        if with_cqt:
            with torch.no_grad():
                raw = self.dm.on_after_batch_transfer(raw, 0)
            assert raw["features"].shape[1:] == (WINDOW, 144)
        return raw["labels"].shape[0]


def interleaved(paths: dict[str, Batches], batches: int, rounds: int, with_cqt: bool) -> dict:
    best = {name: 0.0 for name in paths}
    for _ in range(rounds):
        for name, p in paths.items():
            p.batch(with_cqt)  # warm-up
            t0, n = time.perf_counter(), 0
            for _ in range(batches):
                n += p.batch(with_cqt)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def data_path_rounds(corpus: Path, teacher: Path, scratch: Path, rounds: int,
                     batches: int) -> dict:
    stream = scratch / "stream"
    write_stream(corpus, teacher, str(stream), window=WINDOW, num_workers=1)  # overwrites
    paths = {"mmap": Batches(data_module(corpus, teacher, "mmap", None)),
             "stream": Batches(data_module(corpus, teacher, "stream", stream))}
    hours = paths["mmap"].dm.train_set.audio.total_samples / SETTINGS.sr / 3600
    with_cqt = interleaved(paths, batches, rounds, with_cqt=True)
    loader_only = interleaved(paths, batches, rounds, with_cqt=False)
    audio_bytes = sum(p.stat().st_size for p in (cache_folder(corpus) / "songs").rglob("*.pcm"))
    teacher_bytes = sum(p.stat().st_size for p in teacher.glob("shard-*"))
    stream_bytes = sum(p.stat().st_size for p in stream.glob("*"))
    return {"audio_hours": hours, "batch": BATCH, "window": WINDOW,
            "windows_per_s": with_cqt, "loader_windows_per_s": loader_only,
            "ratio": with_cqt["stream"] / with_cqt["mmap"],
            "loader_ratio": loader_only["stream"] / loader_only["mmap"],
            "bytes_per_audio_hour": {"audio_cache": audio_bytes / hours,
                                     "teacher_cache": teacher_bytes / hours,
                                     "stream": stream_bytes / hours},
            "windows_per_audio_hour": {"mmap": len(paths["mmap"].dm.train_set) / hours,
                                       "stream": len(paths["stream"].dm.train_set) / hours}}


# -- 3. per-process bookkeeping ---------------------------------------------------------------
def traced_bytes(build) -> tuple[int, object]:
    """Python heap bytes that ``build()``'s result holds (tracemalloc, after collection)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    obj = build()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, obj


def bookkeeping(audio_cache: Path, teacher: Path, songs: int = 2000,
                song_seconds: float = 240.0) -> dict:
    """Heap bytes every training process holds per song (the two caches' indexes, opened) and
    per window (the memory-mapped path's window grid, for ``songs`` songs of 4 minutes)."""
    from chordkd.data.audio_cache import AudioCache
    from chordkd.data.datasets import SongRecord, WindowDataset
    from chordkd.labelling.teacher_cache import TeacherCache

    audio_bytes, audio = traced_bytes(lambda: AudioCache(audio_cache))
    teacher_bytes, tc = traced_bytes(lambda: TeacherCache(teacher))
    n = SETTINGS.n_frames(int(song_seconds * SETTINGS.sr))
    records = [SongRecord(f"song_{i:07d}", int(song_seconds * SETTINGS.sr), n)
               for i in range(songs)]
    grid_bytes, ds = traced_bytes(lambda: WindowDataset(records, None, SETTINGS, WINDOW).grid)
    return {"audio_index_bytes_per_song": audio_bytes / len(audio.songs),
            "teacher_index_bytes_per_song": teacher_bytes / len(tc),
            "grid_bytes_per_window": grid_bytes / len(ds), "grid_windows": len(ds)}


def markdown(r: dict) -> str:
    b, d, m = r["rebuild"], r["data_path"], r["bookkeeping"]
    ok = lambda v: "yes" if v else "**no**"  # noqa: E731
    w, lw, bph = d["windows_per_s"], d["loader_windows_per_s"], d["bytes_per_audio_hour"]
    return "\n".join([
        "# Past one machine: cache and streaming benchmarks (`bench/scaling.py`)", "",
        f"Measured {r['when']} by `{r['command']}`, {r['wall_s']:.0f} s in all. Machine: "
        f"{r['machine']}, {r['threads']} threads; 1-minute load {r['load'][0]:.2f} before, "
        f"{r['load'][1]:.2f} after (a shared machine: figures are pessimistic).", "",
        "| target | measured | threshold | holds |", "|---|---:|---:|---|",
        f"| rebuild after 1 changed song of {b['songs']} / full build | {b['ratio']:.3f} | "
        f"0.05 | {ok(b['ratio'] <= 0.05)} |",
        f"| streamed / memory-mapped stage-1 data path | {d['ratio']:.2f} | 0.8 | "
        f"{ok(d['ratio'] >= 0.8)} |", "",
        "## Incremental audio cache", "",
        f"{b['songs']} songs of 60 s (44.1 kHz .wav, resampled to 22,050 Hz), best of "
        f"{len(b['all_full_s'])} rounds: full build {b['full_build_s']:.2f} s, rebuild after one "
        f"changed song {b['one_changed_s']:.3f} s, check of an unchanged corpus "
        f"{b['unchanged_s']:.3f} s. Largest file: one song's shard, "
        f"{b['largest_file_bytes'] / 1e6:.2f} MB; the index: {b['index_bytes'] / 1e3:.1f} kB.", "",
        "## Stage-1 data path", "",
        f"{d['audio_hours']:.2f} audio-hours, batches of {d['batch']} x {d['window']} frames, "
        "rounds interleaved, best of each.", "",
        "| format | windows/s (loader + device CQT + shift) | windows/s (loader alone) | "
        "windows per audio-hour per epoch |", "|---|---:|---:|---:|",
        f"| mmap | {w['mmap']:.1f} | {lw['mmap']:.0f} | {d['windows_per_audio_hour']['mmap']:.0f} |",
        f"| stream | {w['stream']:.1f} | {lw['stream']:.0f} | "
        f"{d['windows_per_audio_hour']['stream']:.0f} |", "",
        f"Bytes per audio-hour: audio cache {bph['audio_cache'] / 1e6:.0f} MB, teacher cache "
        f"(K=8) {bph['teacher_cache'] / 1e6:.2f} MB, stream (audio + teacher, windows with "
        f"context) {bph['stream'] / 1e6:.0f} MB.", "",
        "## Bookkeeping per process", "",
        f"Python heap held by every training process (and DataLoader worker): audio-cache index "
        f"{m['audio_index_bytes_per_song']:.0f} B per song, teacher-cache index "
        f"{m['teacher_index_bytes_per_song']:.0f} B per song, the memory-mapped path's window "
        f"grid {m['grid_bytes_per_window']:.0f} B per window (measured on "
        f"{m['grid_windows']:,} windows). The streamed path holds litdata's chunk index instead.",
        ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--songs", type=int, default=100, help="songs for the rebuild benchmark")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    scratch = HERE / "out" / "scaling"
    rounds = 2 if args.quick else 3
    corpus = write_corpus(scratch / "corpus", args.songs, 60.0)
    rebuild = rebuild_rounds(corpus, scratch, rounds)
    small = scratch / "corpus_stream"
    write_corpus(small, 10 if args.quick else 24, 60.0)
    teacher = fake_teacher_cache(small, scratch / "teacher_cache")
    data = data_path_rounds(small, teacher, scratch, rounds, batches=3 if args.quick else 6)
    memory = bookkeeping(scratch / "cache_0", teacher)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python bench/scaling.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}",
        "threads": args.threads, "load": [load0, os.getloadavg()[0]],
        "wall_s": time.perf_counter() - start, "rebuild": rebuild, "data_path": data,
        "bookkeeping": memory,
    }
    write_json(args.out / "scaling.json", result)
    write_text(args.out / "scaling.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
