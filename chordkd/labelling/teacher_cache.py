"""The teacher cache: a teacher's opinion on every frame of a corpus, stored once, streamed back.

On-disk layout of a cache folder (writer and reader both live in this module)::

    CACHE/
      index.json                      consolidated index (written atomically)
      journal-<session>-r<rank>.jsonl one JSON line per song written by a running job
      shard-<session>-r<rank>-<n>.bin raw little-endian arrays, songs back to back

A *record* is one song's arrays of one ``kind``, back to back in a shard, each array's start
aligned to 8 bytes. Kind ``"logits"`` holds, for a song of ``T`` frames and ``C`` classes:

- ``logz``    float32 ``[T]``: log-partition ``logsumexp`` of each frame's full logit row;
- ``logz_t``  float32 ``[T]``: the same for the row divided by ``tail_temperature`` (the KD
  temperature, 3 by default; optional), which makes the missing classes' tempered mass exact;
- ``values``  float16 ``[T, K]``: the K largest log-probabilities ``logits - logz`` per frame,
  best first (float16 is most precise near 0, where the probable classes lie; a softmax
  over them is the softmax over the logits, and ``values + logz`` are the logits);
- ``indices`` uint8   ``[T, K]``: their class indices (K > 0 only).

``K = 0`` stores all C log-probabilities ``values`` float16 ``[T, C]`` (no indices). The kept
classes' probabilities ``exp(values)`` are exact at temperature 1 (up to float16 rounding)
and the residual mass ``1 - sum(p_kept)`` is known, which is what :func:`rebuild_log_probs`
spreads over the missing classes. Other kinds (e.g. per-song embeddings ``values``
float16 ``[T', D]``) go through the same machinery under their own ``kind``. The index is JSON and the arrays raw bytes: nothing is ever unpickled.

Crash safety (``kill -9`` at any moment): a writer appends a song's bytes to its own shard
and fsyncs, *then* appends one JSON line naming the bytes and their blake2b checksum to its
journal and fsyncs. A reader accepts a journal line only if it parses and the shard bytes it
names exist and match the checksum, so a torn shard tail or a torn journal line is never
taken for data. :func:`consolidate` (run by rank 0 at the end of a labelling job, and by a
rerun that finds nothing to label) folds the verified journals into ``index.json``
atomically, then removes them and any shard no entry refers to. When a song appears twice
(relabelled after its audio changed), the later write (``written_at``, wall clock) wins.
One labelling job per cache folder at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from chordkd.atomic import fsync_dir, write_json
from chordkd.errors import CacheError

log = logging.getLogger(__name__)

FORMAT = "chordkd-teacher-cache"
VERSION = 1
INDEX_NAME = "index.json"
LOGITS = "logits"
ALIGN = 8
DEFAULT_SHARD_BYTES = 1 << 30
# Test hook for the kill -9 test: with this set to N, the writer stops after the shard bytes
# of its (N+1)-th record are on disk and before their journal line, says so on stderr, and
# waits for a signal, so a test can SIGKILL the real process at the worst moment.
PAUSE_ENV = "CHORDKD_TEST_PAUSE_BEFORE_JOURNAL"
# Plain numeric dtypes only: the format can never carry objects.
_DTYPES = {"<f2": np.float16, "<f4": np.float32, "|u1": np.uint8, "<i8": np.int64}


class TeacherOutputs(NamedTuple):
    """One song's cached teacher outputs (memory-mapped, read-only).

    ``values`` float16 ``[T, K]`` log-probabilities (logits - logz), best first (for a full
    cache ``K = C`` in class order); ``indices`` uint8 ``[T, K]`` their classes; ``logz``
    float32 ``[T]`` log-partition of the full rows; ``logz_t`` float32 ``[T]`` log-partition of
    the rows divided by ``tail_temperature`` (None if not cached). Pass them all to
    :func:`rebuild_log_probs`; :meth:`best_class` gives the hard pseudo-labels.
    """

    values: np.ndarray
    indices: np.ndarray
    logz: np.ndarray
    logz_t: np.ndarray | None = None
    tail_temperature: float | None = None

    def best_class(self) -> np.ndarray:
        """The teacher's argmax class per frame, int64 ``[T]`` (stage 1's hard labels).

        Top-K values are stored best first, so float16 ties resolve to the class the teacher
        ranked first; for a full cache it is the argmax of the float16 values.
        """
        best = np.asarray(self.values).argmax(-1)[:, None]
        return np.take_along_axis(np.asarray(self.indices), best, axis=1)[:, 0].astype(np.int64)


@dataclass(frozen=True)
class AudioFingerprint:
    """Identity of an audio file: ``sha1`` of its bytes, plus size and mtime to skip rehashing.

    The sha1 changes whenever the audio changes. Size and ``mtime_ns`` only let a rerun trust
    the stored sha1 without reading the file again (git's index does the same); a file whose
    size or mtime differs is rehashed, so touching a file does not relabel it.
    """

    sha1: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> AudioFingerprint:
        st = os.stat(path)
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return cls(digest.hexdigest(), st.st_size, st.st_mtime_ns)

    def matches(self, path: str | os.PathLike) -> bool:
        """True if ``path`` still holds the audio this fingerprint was taken from."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_size == self.size and st.st_mtime_ns == self.mtime_ns:
            return True
        return st.st_size == self.size and AudioFingerprint.of(path).sha1 == self.sha1


def file_sha1(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes (the teacher checkpoint hash)."""
    return AudioFingerprint.of(path).sha1


@dataclass(frozen=True)
class CacheEntry:
    """Index entry of one record: where its bytes are and what produced them."""

    song: str
    kind: str
    shard: str  # file name inside the cache folder
    offset: int  # bytes
    nbytes: int
    checksum: str  # "blake2b-128:<hex>" of the record's bytes
    arrays: dict  # name -> {"dtype", "shape", "offset" (relative to the record)}
    frames: int
    k: int  # kept classes per frame; 0 = full logits
    n_classes: int
    audio: dict  # AudioFingerprint as a dict
    teacher: str  # sha1 of the teacher checkpoint
    features: str  # FeatureSettings().fingerprint()
    written_at: int  # time.time_ns() of the write; the later write of a song wins
    tail_temperature: float | None = None  # the temperature of the cached ``logz_t``
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> CacheEntry:
        return cls(**obj)

    @property
    def fingerprint(self) -> AudioFingerprint:
        return AudioFingerprint(**self.audio)


def _checksum(buf) -> str:
    return "blake2b-128:" + hashlib.blake2b(buf, digest_size=16).hexdigest()


def _pack(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """Arrays -> one record's bytes (little-endian, each start 8-byte aligned) and its layout."""
    parts, layout, pos = [], {}, 0
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dt.str not in _DTYPES:
            raise CacheError(f"array {name!r}: dtype {a.dtype} cannot be cached")
        raw = a.astype(dt, copy=False).tobytes()
        layout[name] = {"dtype": dt.str, "shape": list(a.shape), "offset": pos}
        pad = -len(raw) % ALIGN
        parts += [raw, b"\0" * pad]
        pos += len(raw) + pad
    return b"".join(parts), layout


class CacheWriter:
    """Appends records to this process's own shard and journal (one writer per rank).

    Files are named by a random session id and the rank, so a resumed job or several ranks
    never write into each other's files.
    """

    def __init__(
        self, root: str | os.PathLike, rank: int = 0, shard_bytes: int = DEFAULT_SHARD_BYTES
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.session = f"{uuid.uuid4().hex[:10]}-r{rank}"
        self.shard_bytes = shard_bytes
        self._shard_no = -1
        self._shard = None
        self._journal = None
        self._records = 0
        self._pause_at = int(os.environ.get(PAUSE_ENV, "-1"))

    def _open_shard(self) -> None:
        if self._shard is not None:
            self._shard.close()
        self._shard_no += 1
        name = f"shard-{self.session}-{self._shard_no:04d}.bin"
        self._shard = open(self.root / name, "ab")
        self._shard_name = name
        fsync_dir(self.root)

    def write(
        self, song: str, kind: str, arrays: dict[str, np.ndarray], *, frames: int, k: int,
        n_classes: int, audio: AudioFingerprint, teacher: str, features: str,
        tail_temperature: float | None = None, extra: dict | None = None,
    ) -> CacheEntry:
        """Append one record; returns its entry once bytes and journal line are on disk."""
        data, layout = _pack(arrays)
        if self._shard is None or self._shard.tell() + len(data) > self.shard_bytes > 0:
            if self._shard is None or self._shard.tell() > 0:
                self._open_shard()
        offset = self._shard.tell()
        self._shard.write(data)
        self._shard.flush()
        os.fsync(self._shard.fileno())
        if self._records == self._pause_at:
            print(f"{PAUSE_ENV}: paused before the journal line of {song!r}", file=sys.stderr,
                  flush=True)
            signal.pause()
        self._records += 1
        entry = CacheEntry(
            song=song, kind=kind, shard=self._shard_name, offset=offset, nbytes=len(data),
            checksum=_checksum(data), arrays=layout, frames=int(frames), k=int(k),
            n_classes=int(n_classes), audio=asdict(audio), teacher=teacher, features=features,
            written_at=time.time_ns(), tail_temperature=tail_temperature, extra=extra or {},
        )
        if self._journal is None:
            self._journal = open(self.root / f"journal-{self.session}.jsonl", "a", encoding="utf-8")
            fsync_dir(self.root)
        self._journal.write(json.dumps(entry.to_json(), separators=(",", ":")) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        return entry

    def write_logits(
        self, song: str, logz: np.ndarray, values: np.ndarray, indices: np.ndarray | None,
        n_classes: int, *, audio: AudioFingerprint, teacher: str, features: str,
        logz_t: np.ndarray | None = None, tail_temperature: float | None = None,
    ) -> CacheEntry:
        """Append one song's top-K: ``logz`` float32 ``[T]``, ``values`` ``[T, K]`` log-probs
        (logits - logz) best first, ``indices`` ``[T, K]`` (None: ``values`` are the full ``[T, C]``), optionally
        ``logz_t`` ``[T]`` = logsumexp(logits / ``tail_temperature``)."""
        t = len(logz)
        arrays = {"logz": np.asarray(logz, np.float32)}
        if logz_t is not None:
            if tail_temperature is None or len(logz_t) != t:
                raise CacheError(f"{song}: logz_t needs {t} frames and its tail_temperature")
            arrays["logz_t"] = np.asarray(logz_t, np.float32)
        else:
            tail_temperature = None
        arrays["values"] = np.asarray(values, np.float16)
        if indices is None:
            if values.shape != (t, n_classes):
                raise CacheError(f"{song}: full logits must be [{t}, {n_classes}], got {values.shape}")
            k = 0
        else:
            if n_classes > 256:
                raise CacheError(f"{song}: uint8 indices hold at most 256 classes, not {n_classes}")
            if values.shape != indices.shape or values.shape[0] != t:
                raise CacheError(f"{song}: values {values.shape}, indices {indices.shape}, {t} frames")
            arrays["indices"] = np.asarray(indices, np.uint8)
            k = values.shape[1]
        return self.write(song, LOGITS, arrays, frames=t, k=k, n_classes=n_classes, audio=audio,
                          teacher=teacher, features=features, tail_temperature=tail_temperature)

    def close(self) -> None:
        for f in (self._shard, self._journal):
            if f is not None:
                f.close()
        self._shard = self._journal = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Shards:
    """Read-only memory maps of shard files, opened on first use (corpora larger than RAM)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._maps: dict[str, np.ndarray] = {}
        self._checked: set[tuple[str, int, str]] = set()

    def __getstate__(self) -> dict:
        # Pickling a memmap copies its bytes: a reader sent to spawned DataLoader workers
        # reopens its maps there instead.
        return {"root": self.root, "_maps": {}, "_checked": set()}

    def record(self, e: CacheEntry) -> np.ndarray | None:
        """The record's bytes ``uint8 [nbytes]``, or None if the shard is missing or too short."""
        if Path(e.shard).name != e.shard or not e.shard.startswith("shard-"):
            return None  # a record lives in a shard of this folder, nowhere else
        mm = self._maps.get(e.shard)
        if mm is None or len(mm) < e.offset + e.nbytes:  # reopen: a shard may have grown
            path = self.root / e.shard
            try:
                size = path.stat().st_size
            except OSError:
                return None
            if size < e.offset + e.nbytes:
                return None
            mm = self._maps[e.shard] = np.memmap(path, dtype=np.uint8, mode="r")
        return mm[e.offset : e.offset + e.nbytes]

    def verified(self, e: CacheEntry) -> np.ndarray | None:
        """The record's bytes if they match its checksum (checked once per process: training
        reads many windows of each song)."""
        rec = self.record(e)
        key = (e.shard, e.offset, e.checksum)
        if rec is None or (key not in self._checked and _checksum(rec) != e.checksum):
            return None
        self._checked.add(key)
        return rec


def _read_index(root: Path) -> list[CacheEntry]:
    path = root / INDEX_NAME
    if not path.is_file():
        return []
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        if obj.get("format") != FORMAT or obj.get("version") != VERSION:
            raise CacheError(f"{path}: not a {FORMAT} v{VERSION} index")
        return [CacheEntry.from_json(e) for e in obj["entries"]]
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{path}: unreadable index ({e})") from e


def _read_journals(root: Path, shards: _Shards) -> tuple[list[CacheEntry], list[str], list[Path]]:
    """Verified journal entries, the problems met (one line each) and the journal files."""
    entries, problems = [], []
    journals = sorted(root.glob("journal-*.jsonl"))
    for jpath in journals:
        with open(jpath, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                where = f"{jpath}:{lineno}"
                try:
                    e = CacheEntry.from_json(json.loads(line))
                except (ValueError, TypeError) as err:
                    problems.append(f"{where}: unreadable journal line ignored ({err})")
                    continue
                if shards.verified(e) is None:
                    problems.append(f"{where}: {e.song}: shard bytes missing or checksum "
                                    "mismatch; record ignored")
                    continue
                entries.append(e)
    return entries, problems, journals


def _latest(entries: Iterable[CacheEntry]) -> dict[tuple[str, str], CacheEntry]:
    best: dict[tuple[str, str], CacheEntry] = {}
    for e in entries:
        key = (e.kind, e.song)
        if key not in best or e.written_at > best[key].written_at:
            best[key] = e
    return best


def consolidate(root: str | os.PathLike) -> list[str]:
    """Fold verified journals into ``index.json`` (atomically), then drop journals and orphans.

    Call only when no writer is active on ``root``. Returns the problems met (ignored journal
    lines), also logged as warnings. Safe to repeat and safe to kill: until the new index is
    in place the journals stay, and folding them in again gives the same index.
    """
    root = Path(root)
    shards = _Shards(root)
    entries, problems, journals = _read_journals(root, shards)
    for p in problems:
        log.warning(p)
    if not journals and (root / INDEX_NAME).is_file():
        return problems
    best = _latest(_read_index(root) + entries)
    ordered = sorted(best.values(), key=lambda e: (e.kind, e.song))
    write_json(root / INDEX_NAME, {"format": FORMAT, "version": VERSION,
                                   "entries": [e.to_json() for e in ordered]})
    for j in journals:
        j.unlink()
    used = {e.shard for e in ordered}
    for s in root.glob("shard-*.bin"):
        if s.name not in used:
            s.unlink()
    return problems


class TeacherCache:
    """Reader of a teacher cache folder: ``index.json`` plus any verified pending journals.

    >>> cache = TeacherCache("runs/cache")
    >>> out = cache.read("song-001")  # values [T, K] f16, indices [T, K] u8, logz [T] f32
    """

    def __init__(self, path: str | os.PathLike, kind: str = LOGITS, verify: bool = True) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise CacheError(f"{self.root}: no such teacher cache folder")
        self.kind = kind
        self.verify = verify
        self._shards = _Shards(self.root)
        journal_entries, self.problems, _ = _read_journals(self.root, self._shards)
        for p in self.problems:
            log.warning(p)
        self._all = _latest(_read_index(self.root) + journal_entries)
        self._entries = {s: e for (k, s), e in self._all.items() if k == kind}

    @property
    def song_ids(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, song_id: object) -> bool:
        return song_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, song_id: str) -> CacheEntry:
        try:
            return self._entries[song_id]
        except KeyError:
            raise CacheError(f"{self.root}: song {song_id!r} is not in the cache "
                             f"(kind {self.kind!r})") from None

    def frames(self, song_id: str) -> int:
        return self.entry(song_id).frames

    @property
    def n_classes(self) -> int:
        """The teacher's class count, shared by every song (CacheError if they differ)."""
        counts = {e.n_classes for e in self._entries.values()}
        if len(counts) != 1:
            raise CacheError(f"{self.root}: songs disagree on the class count ({sorted(counts)})"
                             if counts else f"{self.root}: the cache holds no songs")
        return counts.pop()

    def arrays(self, song_id: str) -> dict[str, np.ndarray]:
        """The record's arrays by name, memory-mapped (read-only views into the shard)."""
        e = self.entry(song_id)
        rec = self._shards.verified(e) if self.verify else self._shards.record(e)
        if rec is None:
            raise CacheError(f"{self.root}: song {song_id!r}: shard {e.shard} is truncated, "
                             "missing or fails its checksum")
        out = {}
        for name, a in e.arrays.items():
            dt = np.dtype(_DTYPES[a["dtype"]]).newbyteorder("<")
            n = int(np.prod(a["shape"], dtype=np.int64))
            start = a["offset"]
            out[name] = rec[start : start + n * dt.itemsize].view(dt).reshape(a["shape"])
        return out

    def read(self, song_id: str) -> TeacherOutputs:
        """Top-K logits of one song; for a full-logit cache (K = 0) ``indices`` is ``arange(C)``."""
        e = self.entry(song_id)
        a = self.arrays(song_id)
        indices = a.get("indices")
        if indices is None:
            indices = np.broadcast_to(np.arange(e.n_classes, dtype=np.uint8), (e.frames, e.n_classes))
        return TeacherOutputs(a["values"], indices, a["logz"], a.get("logz_t"), e.tail_temperature)

    def check(self, teacher: str | None = None, features: str | None = None) -> None:
        """Raise CacheError if any song was labelled by another teacher or feature settings."""
        for song, e in self._entries.items():
            for what, want, got in (("teacher", teacher, e.teacher), ("features", features, e.features)):
                if want is not None and got != want:
                    raise CacheError(f"{self.root}: song {song!r} was labelled with {what} "
                                     f"{got}, expected {want}")


def cache_differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """How two caches differ in content (songs, metadata, array bytes); [] if equal.

    Shard layout, write times and checksums' positions are ignored.
    """
    ca, cb = TeacherCache(a), TeacherCache(b)
    diffs = []
    keys_a, keys_b = set(ca._all), set(cb._all)
    diffs += [f"only in {a}: {k}" for k in sorted(keys_a - keys_b)]
    diffs += [f"only in {b}: {k}" for k in sorted(keys_b - keys_a)]
    meta = ("frames", "k", "n_classes", "teacher", "features", "checksum", "arrays")
    for key in sorted(keys_a & keys_b):
        ea, eb = ca._all[key], cb._all[key]
        for m in meta:
            if getattr(ea, m) != getattr(eb, m):
                diffs.append(f"{key}: {m} differs ({getattr(ea, m)!r} vs {getattr(eb, m)!r})")
        if ea.audio["sha1"] != eb.audio["sha1"]:
            diffs.append(f"{key}: audio sha1 differs")
        ra, rb = ca._shards.verified(ea), cb._shards.verified(eb)
        if ra is None or rb is None or not np.array_equal(ra, rb):
            diffs.append(f"{key}: record bytes differ or fail their checksum")
    return diffs


# ---- on-device reconstruction ------------------------------------------------------------


def rebuild_log_probs(
    values: torch.Tensor, indices: torch.Tensor, logz: torch.Tensor, n_classes: int,
    temperature: float = 1.0, logz_t: torch.Tensor | None = None,
    tail_temperature: float | None = None,
) -> torch.Tensor:
    """Teacher log-probabilities ``[B, T, C]`` at ``temperature`` from cached top-K log-probs
    ``values`` and classes ``indices`` ``[B, T, K]``, log-partition ``logz`` ``[B, T]`` and,
    when cached, ``logz_t`` ``[B, T]`` = logsumexp(logits / ``tail_temperature``).

    The kept classes keep their log-probs ``u``. The ``M = C - K`` missing ones share one
    value, chosen so that together they carry the right mass at the target temperature: let
    ``A(b) = log sum_missing exp(b * u_i)`` (the missing classes' log-partition at inverse
    temperature ``b``, in log-prob units). The cache gives ``A(1) = log(1 - sum exp(u_kept))``
    exactly, ``logz_t`` gives ``A(1 / tail_temperature)`` exactly, and ``A(0) = log M``. ``A``
    is convex in ``b``, so it is interpolated piecewise-linearly through those knots
    (extrapolated along the last segment for T < 1), and each missing class gets the tempered
    value ``A(1/T) - log M``.

    Hence: at T = 1 the kept probabilities are exact and the residual mass is spread uniformly
    (the maximum-entropy choice when nothing is known of the missing classes); at
    ``T = tail_temperature`` the same holds for the tempered distribution; in between, the
    chord of a convex function slightly over-states the tail. Without ``logz_t`` this is the
    uniform-residual logit divided by T, which over-states the tempered tail badly for peaked
    teachers (``bench/teacher_cache.py``). What remains at the knots is the tail's shape
    (uniform vs. actual). ``K = C`` is exact up to float16 rounding.
    """
    beta = 1.0 / temperature
    u = values.float()
    k = u.shape[-1]
    n_missing = n_classes - k
    out = torch.empty(*u.shape[:-1], n_classes, device=u.device)
    if n_missing > 0:
        log_m = math.log(n_missing)
        zero = torch.zeros(u.shape[:-1], device=u.device)
        knots = [(0.0, torch.full_like(zero, log_m)), (1.0, _tail_log_partition(u, zero, 1.0))]
        if logz_t is not None:
            if tail_temperature is None:
                raise ValueError("logz_t needs its tail_temperature")
            b0 = 1.0 / tail_temperature
            # the tempered log-partition in log-prob units: logsumexp(b0 * u) over all classes
            c = logz_t.float() - b0 * logz.float()
            knots.append((b0, _tail_log_partition(u, c, b0)))
        knots.sort(key=lambda kv: kv[0])
        seg = next((n for n in range(len(knots) - 1) if beta <= knots[n + 1][0]), len(knots) - 2)
        (b_lo, a_lo), (b_hi, a_hi) = knots[seg], knots[seg + 1]
        a_beta = a_lo + (beta - b_lo) * (a_hi - a_lo) / (b_hi - b_lo)
        out[:] = (a_beta - log_m).unsqueeze(-1)
    out.scatter_(-1, indices.long(), u * beta)
    return torch.log_softmax(out, dim=-1)


def _tail_log_partition(u: torch.Tensor, c: torch.Tensor, beta: float) -> torch.Tensor:
    """``log sum_missing exp(beta * u_i)`` from the kept ``u`` ``[..., K]`` and the whole
    row's ``c = logsumexp(beta * u)`` ``[...]``: ``c + log(1 - sum_kept exp(beta * u - c))``."""
    kept = torch.exp(u * beta - c.unsqueeze(-1)).sum(-1)
    # float16 rounding can push the kept mass to (or past) 1: keep a tiny residual.
    return c + torch.log((1.0 - kept).clamp_min(1e-12))


def transpose_indices(indices: torch.Tensor | np.ndarray, index_map: np.ndarray):
    """Map cached class ``indices`` (any shape) through a vocabulary's
    ``transpose_index_map(semitones)`` (``[C]``, N and X map to themselves).

    Pair with ``pitch_shift_cqt`` by the same number of semitones.
    """
    if isinstance(indices, torch.Tensor):
        table = torch.as_tensor(np.asarray(index_map), device=indices.device)
        return table[indices.long()].to(indices.dtype)
    return np.asarray(index_map)[np.asarray(indices).astype(np.int64)].astype(indices.dtype)

