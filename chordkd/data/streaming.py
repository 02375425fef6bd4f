"""Streamed stage-1 corpora: audio and the teacher's top-K outputs in litdata shards.

For a pool that is not on the local disk (object storage, a shared filesystem, another
machine's folder), ``chordkd stream`` writes the training windows of a corpus, each with its
teacher outputs, through ``litdata.optimize`` into chunk files of a fixed size; stage 1 reads
them back with ``litdata.StreamingDataset`` (``data.format=stream data.stream=DIR_OR_URL``),
which downloads chunks ahead of use, splits them across nodes, ranks and DataLoader workers,
shuffles chunk order and items within a window of chunks from a seed and the epoch, and
saves its position in the checkpoint (``StreamingDataLoader.state_dict``), so a mid-epoch
resume continues with the same samples in the same order.

One item is one training window of ``W`` frames with ``CONTEXT`` frames of audio on each side:

- ``audio`` int16 ``[(W + 2 * CONTEXT) * hop]`` and its ``scale`` (int16 -> float), zeros
  outside the song (the memory-mapped path's window, to the sample);
- ``values`` float16 ``[W, K]``, ``indices`` uint8 ``[W, K]``, ``logz`` float32 ``[W]``,
  ``logz_t`` float32 ``[W]`` and ``tail_temperature`` (0 when not cached): the teacher cache's
  rows for those frames, zero past the song's end;
- ``song`` (position in the sorted song list), ``start`` (first frame), ``frames`` (valid
  frames, < W only for a song shorter than one window).

Windows tile each song every ``W`` frames, the last one ending at the song's end, so a
streamed epoch visits every frame once (about 1.15x the audio in bytes), where the
memory-mapped grid moves a stride of ``W / 2`` by a per-epoch offset and visits each frame
twice. The pitch shift (and SpecAugment masks) are drawn per item from (seed, epoch, song,
start) as there; features, pitch shifting and KD then run on the device unchanged.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os

import numpy as np
import torch
from litdata import StreamingDataset

from chordkd.data.datasets import CONTEXT, SpecAugment, _unit_hash
from chordkd.errors import ChordkdError
from chordkd.features import FeatureSettings
from chordkd.training.losses import IGNORE

log = logging.getLogger(__name__)


def window_starts(n_frames: int, window: int) -> list[int]:
    """First frames of the windows that tile a song of ``n_frames``: every ``window`` frames,
    the last one moved back to end at the song's end (overlapping its neighbour)."""
    last = max(n_frames - window, 0)
    starts = list(range(0, last + 1, window))
    return starts if starts[-1] == last else starts + [last]


@functools.lru_cache(maxsize=2)
def _open_caches(audio_dir: str, teacher_dir: str):
    # once per writer process, not once per song: opening parses both indexes
    from chordkd.data.audio_cache import AudioCache
    from chordkd.labelling.teacher_cache import TeacherCache

    return AudioCache(audio_dir), TeacherCache(teacher_dir)


def _song_windows(job: tuple[int, str], audio_dir: str, teacher_dir: str, window: int,
                  hop: int, n_frames_of: dict[str, int]):
    """litdata ``optimize`` function: yields the stream items of one song."""
    index, song_id = job
    audio, teacher = _open_caches(audio_dir, teacher_dir)
    out = teacher.read(song_id)
    n_frames = n_frames_of[song_id]
    scale = audio.songs[song_id].scale
    k = out.values.shape[1]
    for f0 in window_starts(n_frames, window):
        n = min(window, n_frames - f0)
        pcm = audio.samples(song_id, (f0 - CONTEXT) * hop, (f0 + window + CONTEXT) * hop)
        item = {
            "song": index, "start": f0, "frames": n, "scale": float(scale),
            "audio": np.round(pcm / scale).astype(np.int16),
            "values": np.zeros((window, k), np.float16), "indices": np.zeros((window, k), np.uint8),
            "logz": np.zeros(window, np.float32), "logz_t": np.zeros(window, np.float32),
            "tail_temperature": float(out.tail_temperature or 0.0),
        }
        item["values"][:n] = out.values[f0 : f0 + n]
        item["indices"][:n] = out.indices[f0 : f0 + n]
        item["logz"][:n] = out.logz[f0 : f0 + n]
        if out.logz_t is not None:
            item["logz_t"][:n] = out.logz_t[f0 : f0 + n]
        yield item


def write_stream(
    corpus: str | os.PathLike,
    teacher_cache: str | os.PathLike,
    out: str,
    window: int = 108,
    settings: FeatureSettings | None = None,
    chunk_bytes: str = "64MB",
    num_workers: int = 1,
    strict: bool = False,
) -> int:
    """Write the stage-1 windows of ``corpus`` (a folder or manifest of audio) joined with its
    ``teacher_cache`` (``chordkd label``) as litdata chunks under ``out`` (a local folder or a
    ``s3://`` / ``gs://`` URL litdata can write). Returns the number of songs written; songs
    with unreadable audio or without teacher outputs are skipped with a warning (raise with
    ``strict``)."""
    from litdata import optimize

    from chordkd.data.audio_cache import build_audio_cache
    from chordkd.data.datamodule import cache_folder
    from chordkd.data.manifest import read_manifest
    from chordkd.labelling.teacher_cache import TeacherCache

    settings = settings or FeatureSettings()
    songs = read_manifest(corpus)
    audio = build_audio_cache(songs, cache_folder(corpus), sr=settings.sr, strict=strict)
    teacher = TeacherCache(teacher_cache)
    usable: dict[str, int] = {}
    for s in sorted(songs, key=lambda s: s.id):
        problem = None
        if s.id not in audio:
            problem = audio.failed.get(s.id, f"{s.audio}: not decoded")
        elif s.id not in teacher:
            problem = f"{teacher_cache}: no teacher output for song {s.id!r}"
        elif teacher.frames(s.id) != settings.n_frames(audio.length(s.id)):
            problem = (f"{teacher_cache}: song {s.id!r} has {teacher.frames(s.id)} cached frames "
                       f"but its audio gives {settings.n_frames(audio.length(s.id))}")
        if problem:
            if strict:
                raise ChordkdError(problem)
            log.warning("skipping %s", problem)
            continue
        usable[s.id] = settings.n_frames(audio.length(s.id))
    if not usable:
        raise ChordkdError(f"{corpus}: no song has both decodable audio and teacher outputs")
    fn = functools.partial(_song_windows, audio_dir=str(audio.folder),
                           teacher_dir=str(teacher_cache), window=window, hop=settings.hop,
                           n_frames_of=usable)
    optimize(fn=fn, inputs=list(enumerate(usable)), output_dir=str(out),
             chunk_bytes=chunk_bytes, num_workers=num_workers, mode="overwrite",
             verbose=False)
    log.info("%s: %d songs streamed to %s", corpus, len(usable), out)
    return len(usable)


class StreamedWindows(StreamingDataset):
    """A ``litdata.StreamingDataset`` over shards written by :func:`write_stream` whose items
    are ``WindowDataset``'s (``targets="teacher"``): ``audio`` float32
    ``[(W + 2 * CONTEXT) * hop]``, ``shift``, ``labels`` int64 ``[W]`` (teacher argmax,
    ``IGNORE`` past the song's end and below ``min_confidence``), ``teacher_*`` tensors, and
    ``song`` / ``start``. Remote ``source`` URLs are downloaded into ``cache_dir``. Read it
    through a ``litdata.StreamingDataLoader``, which numbers the epochs (from 1) and saves
    the position for a resume."""

    def __init__(self, source: str, settings: FeatureSettings, window: int, max_shift: int = 0,
                 seed: int = 0, spec_augment: SpecAugment | None = None,
                 min_confidence: float = 0.0, shuffle: bool = True,
                 cache_dir: str | None = None) -> None:
        try:
            super().__init__(source, cache_dir=cache_dir, shuffle=shuffle, seed=seed,
                             drop_last=False)
        except (FileNotFoundError, ValueError, AssertionError) as e:
            raise ChordkdError(f"{source}: not a chordkd stream (write one with `chordkd "
                               f"stream`; {str(e).splitlines()[0]})") from None
        self.settings, self.window, self.max_shift = settings, window, max_shift
        self.spec_augment = spec_augment if spec_augment is not None and spec_augment.enabled else None
        self.min_confidence = min_confidence

    def __getitem__(self, index) -> dict:
        return _to_window(super().__getitem__(index), self.current_epoch, self.settings,
                          self.window, self.max_shift, self.seed, self.spec_augment,
                          self.min_confidence)


def _to_window(raw: dict, epoch: int, settings: FeatureSettings, window: int, max_shift: int,
               seed: int, spec_augment: SpecAugment | None, min_confidence: float) -> dict:
    if raw["values"].shape[0] != window:
        raise ChordkdError(f"stream windows hold {raw['values'].shape[0]} frames but "
                           f"data.window is {window}: write the stream again with this window")
    song, f0, n = int(raw["song"]), int(raw["start"]), int(raw["frames"])
    h = _unit_hash(seed, epoch, song, f0)
    shift = (h >> 20) % (2 * max_shift + 1) - max_shift if max_shift else 0
    values = torch.from_numpy(np.asarray(raw["values"]))
    indices = torch.from_numpy(np.asarray(raw["indices"]).astype(np.int64))
    labels = torch.full((window,), IGNORE, dtype=torch.int64)
    labels[:n] = indices[:n, 0]  # top-K is stored best first: the teacher's argmax
    if min_confidence > 0:
        weak = values[:n].float().amax(-1) < math.log(min_confidence)
        labels[:n][weak] = IGNORE
    item = {
        "audio": torch.from_numpy(np.asarray(raw["audio"], dtype=np.float32) * raw["scale"]),
        "shift": torch.tensor(shift), "song": torch.tensor(song), "start": torch.tensor(f0),
        "teacher_values": values, "teacher_indices": indices,
        "teacher_logz": torch.from_numpy(np.asarray(raw["logz"])), "labels": labels,
    }
    if raw["tail_temperature"]:
        item["teacher_logz_t"] = torch.from_numpy(np.asarray(raw["logz_t"]))
        item["teacher_tail_temperature"] = torch.tensor(float(raw["tail_temperature"]))
    if spec_augment is not None:
        rng = np.random.default_rng(_unit_hash(seed, epoch, song, f0, 1))
        time_masks, freq_masks = spec_augment.draw(rng, window, settings.n_bins)
        item["time_masks"] = torch.from_numpy(time_masks)
        item["freq_masks"] = torch.from_numpy(freq_masks)
    return item


# -- ``chordkd stream`` ------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", required=True, help="folder of audio files or a manifest.csv")
    p.add_argument("--teacher-cache", required=True, help="folder written by `chordkd label`")
    p.add_argument("--out", required=True, help="output folder or s3:// / gs:// URL")
    p.add_argument("--window", type=int, default=108, help="frames per window (data.window)")
    p.add_argument("--chunk-bytes", default="64MB", help="litdata chunk size (default 64MB)")
    p.add_argument("--num-workers", type=int, default=1, help="writer processes")
    p.add_argument("--strict", action="store_true", help="stop on the first unusable song")


def run(args: argparse.Namespace) -> int:
    n = write_stream(args.audio, args.teacher_cache, args.out, window=args.window,
                     chunk_bytes=args.chunk_bytes, num_workers=args.num_workers,
                     strict=args.strict)
    print(f"streamed {n} songs to {args.out}")
    return 0
