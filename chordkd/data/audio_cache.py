"""Decoded-audio cache: every song of a corpus decoded once into one memory-mapped file.

Training reads random windows of raw samples from here and computes the CQT on the device,
so nothing is decoded or transformed twice and corpora larger than RAM work (the OS pages
the memory map). Layout, in a cache folder:

- ``audio.pcm``: int16 little-endian mono samples at 22,050 Hz, songs back to back
  (0.16 GB per audio-hour);
- ``index.json``: per song ``offset``, ``length`` (samples), ``scale`` (int16 -> float) and the
  source file's fingerprint (size and mtime in ns); plus the sample rate. Written last and
  atomically, so a killed build leaves no index a reader would accept.

A cache whose index does not match the corpus (songs added, removed or changed) is rebuilt.
Songs that cannot be decoded are skipped with a warning and listed under ``failed``.

Concurrent builders (DDP ranks, parallel sweep trials, ``make -j``, two fits on one corpus)
are safe: a build holds ``build.lock`` (an OS file lock, released if its holder dies), writes
the samples to a temporary file of its own, and the processes that waited for the lock find
the finished cache and open it instead of decoding again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from chordkd.atomic import write_json
from chordkd.audio import SAMPLE_RATE, load_audio
from chordkd.data.manifest import Song
from chordkd.errors import AudioError, ChordkdError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
LOCK_NAME = "build.lock"


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a file's content: size and modification time (ns)."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


@dataclass(frozen=True)
class CachedSong:
    offset: int
    length: int
    scale: float


class AudioCache:
    """Read-only view of a built cache: ``cache.samples(song_id, start, stop)`` -> float32."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ChordkdError(f"{index_path}: not a readable audio-cache index ({e})") from e
        self.sr = int(index["sr"])
        self.songs = {k: CachedSong(**v["cached"]) for k, v in index["songs"].items()}
        self.sources = {k: Path(v["audio"]) for k, v in index["songs"].items()}  # decoded files
        self.failed: dict[str, str] = index.get("failed", {})
        total = sum(s.length for s in self.songs.values())
        pcm = self.folder / "audio.pcm"
        if pcm.stat().st_size != 2 * total:
            raise ChordkdError(f"{pcm}: size does not match its index (truncated cache?)")
        self._pcm = pcm
        self._mm: np.memmap | None = None

    def _map(self) -> np.ndarray:
        # Opened lazily so the object pickles cheaply into DataLoader workers.
        if self._mm is None:
            self._mm = np.memmap(self._pcm, dtype="<i2", mode="r")
        return self._mm

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}

    def __contains__(self, song_id: str) -> bool:
        return song_id in self.songs

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
            raw = self._map()[s.offset + lo : s.offset + hi]
            out[lo - start : hi - start] = raw.astype(np.float32) * s.scale
        return out


def _decode(args: tuple[str, str, int]) -> tuple[str, np.ndarray | None, str | None]:
    song_id, path, sr = args
    try:
        return song_id, load_audio(path, sr=sr), None
    except AudioError as e:
        return song_id, None, str(e)


def build_audio_cache(
    songs: list[Song],
    folder: str | os.PathLike,
    sr: int = SAMPLE_RATE,
    workers: int = 0,
    strict: bool = False,
    progress: bool = True,
) -> AudioCache:
    """Decode ``songs`` into ``folder`` unless an up-to-date cache is already there.

    Returns the opened cache. With ``strict`` the first unreadable file raises AudioError;
    otherwise it is skipped, logged, and listed in the index's ``failed`` map.
    """
    folder = Path(folder)
    wanted = {s.id: {"audio": str(s.audio), "fingerprint": _safe_fingerprint(s.audio)} for s in songs}
    key = hashlib.sha1(json.dumps([sr, FORMAT_VERSION, wanted], sort_keys=True).encode()).hexdigest()
    cache = _open_if_current(folder, key)
    if cache is not None:
        return cache
    folder.mkdir(parents=True, exist_ok=True)
    # One builder at a time; the others wait here, then find its cache current.
    with FileLock(folder / LOCK_NAME):
        cache = _open_if_current(folder, key)
        if cache is not None:
            return cache
        _build(songs, folder, wanted, key, sr, workers, strict, progress)
    return AudioCache(folder)


def _open_if_current(folder: Path, key: str) -> AudioCache | None:
    """The cache in ``folder`` if its index was built for ``key``, else None."""
    try:
        if json.loads((folder / "index.json").read_text()).get("key") == key:
            return AudioCache(folder)
    except (OSError, json.JSONDecodeError, ChordkdError):
        pass
    return None


def _build(songs: list[Song], folder: Path, wanted: dict, key: str, sr: int, workers: int,
           strict: bool, progress: bool) -> None:
    """Decode ``songs`` into ``folder`` (the caller holds the build lock)."""
    index_path = folder / "index.json"
    with contextlib.suppress(FileNotFoundError):
        index_path.unlink()  # the old index must not describe the new pcm file
    from tqdm.auto import tqdm

    jobs = [(s.id, str(s.audio), sr) for s in songs]
    index_songs: dict[str, dict] = {}
    failed: dict[str, str] = {}
    offset = 0
    # A name of its own: a builder killed mid-write leaves a stray file, never a shared one.
    fd, tmp_pcm = tempfile.mkstemp(prefix=".audio.pcm.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            pool = ProcessPoolExecutor(workers) if workers > 1 else None
            results = pool.map(_decode, jobs, chunksize=4) if pool else map(_decode, jobs)
            try:
                for song_id, audio, err in tqdm(
                    results, total=len(jobs), desc="decoding audio", unit="song",
                    disable=not progress,
                ):
                    if err is not None:
                        if strict:
                            raise AudioError(err)
                        log.warning("skipping %s", err)
                        failed[song_id] = err
                        continue
                    peak = float(np.abs(audio).max()) if audio.size else 0.0
                    scale = max(peak, 1.0) / 32767.0
                    pcm = np.round(audio / scale).clip(-32767, 32767).astype("<i2")
                    out.write(pcm.tobytes())
                    index_songs[song_id] = {
                        **wanted[song_id],
                        "cached": {"offset": offset, "length": int(len(pcm)), "scale": scale},
                    }
                    offset += len(pcm)
            finally:
                if pool:
                    pool.shutdown(cancel_futures=True)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_pcm, 0o644)
        os.replace(tmp_pcm, folder / "audio.pcm")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_pcm)
        raise
    write_json(index_path, {"version": FORMAT_VERSION, "key": key, "sr": sr,
                            "songs": index_songs, "failed": failed})
    if failed:
        log.warning("%d of %d songs could not be decoded (listed in %s)", len(failed), len(songs),
                    index_path)


def _safe_fingerprint(path: Path) -> str:
    try:
        return file_fingerprint(Path(path))
    except OSError:
        return "missing"
