"""Decoded-audio cache: every song of a corpus decoded once, one shard file per song.

Training reads random windows of raw samples from here and computes the CQT on the device,
so nothing is decoded or transformed twice and corpora larger than RAM work (reads go
through the OS page cache). Layout, in a cache folder:

- ``songs/<xx>/<key>.pcm``: one song's int16 little-endian mono samples at 22,050 Hz
  (0.16 GB per audio-hour). ``key`` hashes the song id, its audio path, the file's
  fingerprint (size and mtime in ns), the sample rate and the format version, so a changed
  song gets a new shard and an unchanged one keeps its own; ``xx`` (the key's first two hex
  digits) keeps folders small at a million songs. No file grows with the corpus but the
  index (about 200 bytes per song).
- ``index.json``: per song its audio path, fingerprint and ``cached`` = shard ``file``,
  ``length`` (samples) and ``scale`` (int16 -> float); the songs that failed to decode, with
  the error; the sample rate. Written last and atomically, so a killed build leaves the
  previous index, whose shards are all still there.

Builds are incremental: adding, removing or changing one song decodes that song only; a
song that failed to decode is retried only when its file changes. Shards no index refers
to are deleted after the new index is in place.

Concurrent builders (DDP ranks, nodes of one job on a shared filesystem, sweep trials,
``make -j``) are safe: a build holds ``build.lock`` (an OS file lock, released if its holder
dies), every shard is written to a temporary name of its own and renamed, and the processes
that waited for the lock find the finished cache and open it instead of decoding again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from chordkd.atomic import write_bytes, write_json
from chordkd.audio import SAMPLE_RATE, load_audio
from chordkd.data.manifest import Song
from chordkd.errors import AudioError, ChordkdError

log = logging.getLogger(__name__)
FORMAT_VERSION = 2
LOCK_NAME = "build.lock"
SHARDS = "songs"


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a file's content: size and modification time (ns)."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


@dataclass(frozen=True)
class CachedSong:
    file: str  # shard path, relative to the cache folder
    length: int  # samples
    scale: float  # int16 -> float


class AudioCache:
    """Read-only view of a built cache: ``cache.samples(song_id, start, stop)`` -> float32."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        try:
            index = json.loads(index_path.read_text())
            if index.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {index.get('version')}, not {FORMAT_VERSION}")
            self.sr = int(index["sr"])
            self.songs = {k: CachedSong(**v["cached"]) for k, v in index["songs"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ChordkdError(f"{index_path}: not a readable audio-cache index ({e})") from e
        self.sources = {k: Path(v["audio"]) for k, v in index["songs"].items()}  # decoded files
        self.failed: dict[str, str] = {k: v["error"] for k, v in index.get("failed", {}).items()}
        for song_id, s in self.songs.items():
            shard = self.folder / s.file
            size = shard.stat().st_size if shard.is_file() else -1
            if size != 2 * s.length:
                raise ChordkdError(f"{shard}: song {song_id!r} has {size} bytes, its index says "
                                   f"{2 * s.length} (truncated or deleted shard?)")

    def __contains__(self, song_id: str) -> bool:
        return song_id in self.songs

    @property
    def total_samples(self) -> int:
        return sum(s.length for s in self.songs.values())

    def length(self, song_id: str) -> int:
        """Number of samples of the song."""
        return self.songs[song_id].length

    def samples(self, song_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 samples ``[stop - start]``; positions outside the song read as zeros."""
        s = self.songs[song_id]
        stop = s.length if stop is None else stop
        out = np.zeros(stop - start, dtype=np.float32)
        lo, hi = max(start, 0), min(stop, s.length)
        if hi > lo:
            # one positioned read per window: no file handle or map is held between reads,
            # so a million shards cost no descriptors and the object pickles into workers
            raw = np.fromfile(self.folder / s.file, dtype="<i2", count=hi - lo, offset=2 * lo)
            out[lo - start : hi - start] = raw.astype(np.float32) * s.scale
        return out


def _decode(args: tuple[str, str, int]) -> tuple[str, np.ndarray | None, str | None]:
    song_id, path, sr = args
    try:
        return song_id, load_audio(path, sr=sr), None
    except AudioError as e:
        return song_id, None, str(e)


def _source(song: Song, sr: int) -> dict:
    """What the cache must match for ``song``: its path, fingerprint and shard key."""
    fingerprint = _safe_fingerprint(song.audio)
    key = hashlib.sha1(json.dumps([FORMAT_VERSION, sr, song.id, str(song.audio), fingerprint])
                       .encode()).hexdigest()[:24]
    return {"audio": str(song.audio), "fingerprint": fingerprint, "key": key}


def build_audio_cache(
    songs: list[Song],
    folder: str | os.PathLike,
    sr: int = SAMPLE_RATE,
    workers: int = 0,
    strict: bool = False,
    progress: bool = True,
) -> AudioCache:
    """Bring the cache in ``folder`` up to date with ``songs`` and open it.

    Only songs that are new or whose audio changed are decoded. With ``strict`` the first
    unreadable file raises AudioError; otherwise it is skipped, logged, and listed in the
    index's ``failed`` map.
    """
    folder = Path(folder)
    wanted = {s.id: _source(s, sr) for s in songs}
    cache = _open_if_current(folder, wanted, sr)
    if cache is not None:
        return cache
    folder.mkdir(parents=True, exist_ok=True)
    # One builder at a time; the others wait here, then find its cache current.
    with FileLock(folder / LOCK_NAME):
        cache = _open_if_current(folder, wanted, sr)
        if cache is not None:
            return cache
        _build(songs, folder, wanted, sr, workers, strict, progress)
    return AudioCache(folder)


def _read_index(folder: Path, sr: int) -> dict:
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if index.get("version") != FORMAT_VERSION or index.get("sr") != sr:
        return {}
    return index


def _open_if_current(folder: Path, wanted: dict, sr: int) -> AudioCache | None:
    """The cache in ``folder`` if its index holds exactly ``wanted``, else None."""
    index = _read_index(folder, sr)
    held = {**index.get("songs", {}), **index.get("failed", {})}
    if not index or held.keys() != wanted.keys():
        return None
    if any(held[k].get("key") != w["key"] for k, w in wanted.items()):
        return None
    try:
        return AudioCache(folder)
    except ChordkdError:
        return None


def _reusable(folder: Path, entry: dict, want: dict) -> bool:
    if entry.get("key") != want["key"]:
        return False
    if "error" in entry:
        return True  # failed before on this very file: do not retry until it changes
    shard = folder / entry["cached"]["file"]
    return shard.is_file() and shard.stat().st_size == 2 * entry["cached"]["length"]


def _build(songs: list[Song], folder: Path, wanted: dict, sr: int, workers: int,
            strict: bool, progress: bool) -> None:
    """Decode the songs the index lacks, write the new index, drop orphan shards (the caller
    holds the build lock)."""
    from tqdm.auto import tqdm

    old = _read_index(folder, sr)
    old_entries = {**old.get("songs", {}), **old.get("failed", {})}
    index_songs: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for song_id, want in wanted.items():
        entry = old_entries.get(song_id)
        if entry is not None and _reusable(folder, entry, want):
            (failed if "error" in entry else index_songs)[song_id] = entry
    kept = index_songs.keys() | failed.keys()
    jobs = [(s.id, str(s.audio), sr) for s in songs if s.id not in kept]
    if old:
        log.info("audio cache %s: %d songs to decode, %d kept", folder, len(jobs),
                 len(index_songs) + len(failed))
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
    results = pool.map(_decode, jobs, chunksize=4) if pool else map(_decode, jobs)
    try:
        for song_id, audio, err in tqdm(results, total=len(jobs), desc="decoding audio",
                                        unit="song", disable=not progress or not jobs):
            want = wanted[song_id]
            if err is not None:
                if strict:
                    raise AudioError(err)
                log.warning("skipping %s", err)
                failed[song_id] = {**want, "error": err}
                continue
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            scale = max(peak, 1.0) / 32767.0
            pcm = np.round(audio / scale).clip(-32767, 32767).astype("<i2")
            rel = f"{SHARDS}/{want['key'][:2]}/{want['key']}.pcm"
            write_bytes(folder / rel, pcm.tobytes())  # a unique temporary name, then renamed
            index_songs[song_id] = {**want, "cached": {"file": rel, "length": int(len(pcm)),
                                                       "scale": scale}}
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    write_json(folder / "index.json", {"version": FORMAT_VERSION, "sr": sr,
                                       "songs": index_songs, "failed": failed})
    _remove_orphans(folder, {e["cached"]["file"] for e in index_songs.values()})
    if failed:
        log.warning("%d of %d songs could not be decoded (listed in %s)", len(failed),
                    len(songs), folder / "index.json")


def _remove_orphans(folder: Path, keep: set[str]) -> None:
    """Delete shards of removed or changed songs, a killed builder's temporary files, and the
    single ``audio.pcm`` of format 1."""
    with contextlib.suppress(FileNotFoundError):
        (folder / "audio.pcm").unlink()
    for path in (folder / SHARDS).glob("*/*"):
        if path.relative_to(folder).as_posix() not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _safe_fingerprint(path: Path) -> str:
    try:
        return file_fingerprint(Path(path))
    except OSError:
        return "missing"
