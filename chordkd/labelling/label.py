"""``chordkd label``: run a teacher over a corpus once and cache its top-K logits.

Pipeline: a :class:`SongAudio` dataset decodes whole songs (``load_audio``, 22,050 Hz) in
DataLoader workers; :class:`TeacherLabeller` (a LightningModule holding the teacher, so it moves
to the device) asks the teacher for logits on chordkd's frame grid. The teacher is any
:class:`chordkd.teachers.Teacher` (``--teacher``: a chordkd checkpoint, an official BTC file,
``madmom:cnn``, ``madmom:deepchroma`` or ``package.module:factory``). A checkpoint teacher
computes the log-CQT on the device and runs whole-song inference as
:func:`chordkd.inference.song_logits` does it: 108-frame windows that overlap by half, each
frame taking its logits from the window whose centre is nearest; with ``batch_size`` > 1 the
windows of all songs in a batch share forward passes (:func:`chordkd.inference.songs_logits`),
which matters on a GPU when songs are short. The labeller then takes the top-K
log-probabilities and the log-partitions on the device. :class:`CacheWriterCallback`
(a ``BasePredictionWriter``, one per rank) appends each song to the rank's shard and journal
(``teacher_cache``); after a barrier, rank 0 folds the journals into the index and writes
``label_report.json``. The same command therefore runs on one CPU, several GPUs or nodes.

Reruns are incremental: a song already cached with the same teacher (its ``identity``: sha1 of
a checkpoint file, of madmom's model files, or of a factory model's code and weights), the same
input settings and unchanged audio (``AudioFingerprint``) is skipped before
any decoding; a song whose audio changed is relabelled and its new record supersedes the old.
Unreadable audio is reported, not fatal, unless ``strict``.

``--embeddings`` (or ``--embedding-module MODULE:FACTORY``) caches a teacher's last hidden layer
or any module's embedding instead, with the same writer, resumption and report
(:mod:`chordkd.labelling.embeddings`), for feature-space distillation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from chordkd.atomic import write_json
from chordkd.audio import load_audio
from chordkd.data.manifest import Song, read_manifest
from chordkd.errors import AudioError, ChordkdError
from chordkd.labelling.teacher_cache import (
    AudioFingerprint,
    CacheWriter,
    TeacherCache,
    consolidate,
)
from chordkd.teachers.base import Teacher

log = logging.getLogger(__name__)

# K = 8 with logsumexp(logits / 3) cached: 32 bytes per frame (1.24 MB per audio-hour), the
# teacher's argmax kept exactly, and mean KL(full || rebuilt) at T = 3 of 0.010 nats for a
# trained (small, tone-corpus) BTC, 0.012 for a teacher with top-1 probability 0.95
# (bench/teacher_cache.py; the figures and their caveats are in its output).
DEFAULT_TOPK = 8
# The paper's KD temperature: caching logsumexp(logits / 3) makes the tempered mass of the
# classes beyond the top K exact at that temperature (see rebuild_log_probs).
TAIL_TEMPERATURE = 3.0
REPORT_NAME = "label_report.json"
_PART = "label-part-r{rank}.json"


@dataclass
class LabelReport:
    """What a labelling job did. ``failed`` holds ``{"song", "audio", "error"}`` dicts."""

    cache: str
    teacher: str
    features: str
    topk: int
    labelled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    kind: str = "logits"  # the cache record kind written: "logits" or "embeddings"
    source: str = ""  # the teacher spec as given (checkpoint path, madmom:cnn, module:factory)

    @property
    def x_real_time(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "x_real_time": self.x_real_time}

    @classmethod
    def from_json(cls, obj: dict) -> LabelReport:
        return cls(**{k: v for k, v in obj.items() if k != "x_real_time"})

    def summary(self) -> str:
        lines = [
            f"labelled {len(self.labelled)} songs, skipped {len(self.skipped)} already cached, "
            f"failed {len(self.failed)}",
            f"{self.audio_seconds / 3600:.3f} audio hours in {self.wall_seconds:.1f} s wall "
            f"({self.x_real_time:.0f}x real time) -> {self.cache}",
        ]
        lines += [f"  failed: {f['error']}" for f in self.failed]
        return "\n".join(lines)


class SongAudio(Dataset):
    """Whole songs as decoded waveforms. Item: ``{"song", "audio", "fingerprint",
    "waveform" float32 [n_samples] or None, "error" str or None}``.

    A bad file becomes an item with ``error`` set (never an exception, which would kill the
    DataLoader); the writer records it.
    """

    def __init__(self, songs: list[Song], sr: int) -> None:
        self.songs = songs
        self.sr = sr

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        song = self.songs[i]
        item = {"song": song.id, "audio": str(song.audio), "fingerprint": None,
                "waveform": None, "error": None}
        try:
            # a plain dict: Lightning rebuilds dataclasses when moving batches to the device
            item["fingerprint"] = asdict(AudioFingerprint.of(song.audio))
            item["waveform"] = torch.from_numpy(load_audio(song.audio, sr=self.sr))
        except AudioError as e:
            item["error"] = str(e)
        except OSError as e:
            item["error"] = f"{song.audio}: {e.strerror or e}"
        return item


def _as_list(batch: list[dict]) -> list[dict]:
    return batch  # songs differ in length: no stacking


class TeacherLabeller(pl.LightningModule):
    """Holds a :class:`chordkd.teachers.Teacher` (so Lightning moves it to the device).
    ``predict_step`` maps a list of songs to per-song dicts with ``logz`` float32 ``[T]``,
    ``values`` float16 ``[T, K]`` (log-probs, best first), ``indices`` uint8 ``[T, K]``,
    ``logz_t`` float32 ``[T]`` or None (``indices`` None and ``values`` ``[T, C]`` when
    ``topk`` is 0), on the CPU."""

    def __init__(self, teacher: Teacher, topk: int,
                 tail_temperature: float | None = TAIL_TEMPERATURE) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        self.topk = topk
        self.tail_temperature = tail_temperature

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        good = [item for item in batch if item["error"] is None]
        # logits [T, C] float32 on chordkd's grid per song, whatever the precision setting
        logits = self.teacher.batch_logits([item["waveform"].to(self.device) for item in good])
        logits_of = dict(zip((item["song"] for item in good), logits))
        out = []
        for item in batch:
            if item["error"] is not None:
                out.append(item)
                continue
            logits = self.teacher.check_logits(logits_of[item["song"]].float(),
                                               int(item["waveform"].shape[0]))
            n_classes = logits.shape[-1]
            logz = torch.logsumexp(logits, dim=-1)
            log_probs = logits - logz.unsqueeze(-1)
            logz_t = None
            if self.topk:
                values, indices = log_probs.topk(min(self.topk, n_classes), dim=-1)
                indices = indices.to(torch.uint8).cpu()
                if self.tail_temperature:
                    logz_t = torch.logsumexp(logits / self.tail_temperature, dim=-1).cpu()
            else:
                values, indices = log_probs, None
            out.append({**item, "waveform": None, "n_samples": int(item["waveform"].shape[0]),
                        "n_classes": n_classes, "logz": logz.cpu(), "logz_t": logz_t,
                        "values": values.half().cpu(), "indices": indices})
        return out


class CacheWriterCallback(BasePredictionWriter):
    """Writes each predicted song into the cache as soon as its batch is done (per rank).

    On the end of predict every rank writes a part report, then ``barrier``; rank 0 folds the
    journals into the index and writes ``label_report.json``. Rank 0 shows a progress bar
    (songs, audio-hours per second, x real time); ``CHORDKD_NO_PROGRESS=1`` hides it.
    """

    def __init__(self, out: Path, report: LabelReport, sr: int, strict: bool, start: float,
                 shard_bytes: int = 1 << 30) -> None:
        super().__init__(write_interval="batch")
        self.out, self.report, self.sr, self.strict = out, report, sr, strict
        self.start, self.shard_bytes = start, shard_bytes
        self.writer: CacheWriter | None = None
        self._bar = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.writer = CacheWriter(self.out, rank=trainer.global_rank, shard_bytes=self.shard_bytes)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and os.environ.get("CHORDKD_NO_PROGRESS") != "1":
            from tqdm.auto import tqdm

            # predict shards songs rank by rank without padding: this rank's share
            n = len(trainer.predict_dataloaders.dataset)
            total = len(range(trainer.global_rank, n, trainer.world_size))
            desc = "labelling" + (f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else "")
            self._bar = tqdm(total=total, unit="song", desc=desc, dynamic_ncols=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        r = self.report
        for song in prediction:
            if song["error"] is not None:
                if self.strict:
                    raise AudioError(song["error"])
                log.warning("skipping unreadable audio: %s", song["error"])
                r.failed.append({"song": song["song"], "audio": song["audio"], "error": song["error"]})
                continue
            self.write_song(song, pl_module)
            r.labelled.append(song["song"])
            r.audio_seconds += song["n_samples"] / self.sr
        if self._bar is not None:
            wall = time.perf_counter() - self.start
            self._bar.update(len(prediction))
            self._bar.set_postfix(audio_h_per_s=f"{r.audio_seconds / 3600 / wall:.3f}",
                                  x_rt=f"{r.audio_seconds / wall:.0f}", refresh=False)

    def write_song(self, song: dict, pl_module: pl.LightningModule) -> None:
        """Append one predicted song to this rank's shard (subclasses write other kinds)."""
        r = self.report
        self.writer.write_logits(
            song["song"], song["logz"].numpy(), song["values"].numpy(),
            None if song["indices"] is None else song["indices"].numpy(),
            song["n_classes"], audio=AudioFingerprint(**song["fingerprint"]), teacher=r.teacher,
            features=r.features,
            logz_t=None if song["logz_t"] is None else song["logz_t"].numpy(),
            tail_temperature=pl_module.tail_temperature,
        )

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()
        r = self.report
        write_json(self.out / _PART.format(rank=trainer.global_rank),
                   {"labelled": r.labelled, "failed": r.failed, "audio_seconds": r.audio_seconds})
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            consolidate(self.out)
            merged = LabelReport(r.cache, r.teacher, r.features, r.topk, skipped=r.skipped,
                                 kind=r.kind, source=r.source)
            for rank in range(trainer.world_size):
                part_path = self.out / _PART.format(rank=rank)
                part = json.loads(part_path.read_text(encoding="utf-8"))
                merged.labelled += part["labelled"]
                merged.failed += part["failed"]
                merged.audio_seconds += part["audio_seconds"]
                part_path.unlink()
            merged.labelled.sort()
            merged.wall_seconds = time.perf_counter() - self.start
            write_json(self.out / REPORT_NAME, merged.to_json())

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()  # also on an exception (--strict): journaled songs stay valid

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def songs_to_label(
    songs: list[Song], out: Path, teacher: str, features: str, kind: str = "logits"
) -> tuple[list[Song], list[str]]:
    """Split ``songs`` into (to label, already cached as ``kind`` by this teacher, settings
    and audio)."""
    if not (out / "index.json").is_file() and not any(out.glob("journal-*.jsonl")):
        return songs, []
    cache = TeacherCache(out, kind=kind, verify=False)
    todo, skipped = [], []
    for song in songs:
        e = cache.entry(song.id) if song.id in cache else None
        if (e is not None and e.teacher == teacher and e.features == features
                and e.fingerprint.matches(song.audio)):
            skipped.append(song.id)
        else:
            todo.append(song)
    return todo, skipped


def label_corpus(
    teacher: str | os.PathLike | Teacher,
    songs: list[Song] | str | os.PathLike,
    out: str | os.PathLike,
    topk: int = DEFAULT_TOPK,
    strict: bool = False,
    batch_size: int = 1,
    num_workers: int = 1,
    trainer_kwargs: dict | None = None,
    tail_temperature: float | None = TAIL_TEMPERATURE,
) -> LabelReport:
    """Label ``songs`` (a list, a manifest or a folder) with ``teacher`` (a spec for
    :func:`chordkd.teachers.load_teacher`, or a loaded teacher) into the cache folder ``out``; returns the report (also written to ``out/label_report.json``).

    ``topk`` 0 stores full logits; ``tail_temperature`` (None: not cached) is the temperature
    whose log-partition is cached beside the top-K logits. ``batch_size`` counts songs.
    ``trainer_kwargs`` go to ``lightning.Trainer`` (devices, accelerator, precision,
    strategy, ...). Raises ``AudioError`` on the first unreadable file when ``strict``.
    """
    from chordkd.teachers import load_teacher

    start = time.perf_counter()
    out = Path(out)
    if topk < 0:
        raise ChordkdError(f"--topk must be >= 0 (0 = full logits), got {topk}")
    if not isinstance(songs, list):
        songs = read_manifest(songs)
    loaded = teacher if isinstance(teacher, Teacher) else load_teacher(teacher)
    report = LabelReport(str(out), loaded.identity, loaded.input_fingerprint, topk,
                         source=loaded.spec)
    todo, report.skipped = songs_to_label(songs, out, report.teacher, report.features)
    log.info("%d songs to label with %s, %d already cached", len(todo), loaded.description,
             len(report.skipped))
    return predict_into_cache(
        todo, out, report, start, lambda: CacheWriterCallback(out, report, loaded.sr, strict, start),
        lambda: TeacherLabeller(loaded, topk, tail_temperature),
        loaded.sr, batch_size, num_workers, trainer_kwargs,
    )


def predict_into_cache(
    todo: list[Song], out: Path, report: LabelReport, start: float, make_writer, make_module,
    sr: int, batch_size: int, num_workers: int, trainer_kwargs: dict | None,
) -> LabelReport:
    """Run ``Trainer.predict`` of ``make_module()`` over the songs ``todo``, written to the cache
    ``out`` by ``make_writer()``; with nothing to do, only fold a killed job's journals.
    Shared by logits (``label_corpus``) and embeddings (``embeddings.embed_corpus``)."""
    if not todo:  # nothing to run, so no other rank exists: fold any journals of a killed job
        out.mkdir(parents=True, exist_ok=True)
        consolidate(out)
        report.wall_seconds = time.perf_counter() - start
        write_json(out / REPORT_NAME, report.to_json())
        return report
    kwargs = {"accelerator": "auto", "devices": "auto", "precision": "32-true",
              "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
              **(trainer_kwargs or {})}
    trainer = pl.Trainer(callbacks=[make_writer()], **kwargs)
    loader = DataLoader(SongAudio(todo, sr), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_as_list, persistent_workers=False)
    trainer.predict(make_module(), loader, return_predictions=False)  # under inference_mode
    if trainer.is_global_zero:
        return LabelReport.from_json(json.loads((out / REPORT_NAME).read_text(encoding="utf-8")))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", metavar="SPEC",
                        help="the teacher: a chordkd checkpoint, an official BTC file, madmom:cnn, "
                             "madmom:deepchroma or package.module:factory (chordkd.teachers)")
    parser.add_argument("--embeddings", action="store_true",
                        help="cache the teacher's last hidden layer [T, H] instead of its logits "
                             "(feature-space KD; chordkd.labelling.embeddings)")
    parser.add_argument("--embedding-module", metavar="MODULE:FACTORY",
                        help="cache the embeddings of a torch module built by FACTORY() in "
                             "MODULE (waveform [1, samples] at 22,050 Hz -> [T', D], frame "
                             "period in its hop_seconds attribute); implies --embeddings")
    parser.add_argument("--audio", required=True, help="folder of audio files or a manifest.csv")
    parser.add_argument("--out", required=True, help="cache folder (created; reruns resume)")
    parser.add_argument("--topk", type=int, default=DEFAULT_TOPK,
                        help=f"logits kept per frame (default {DEFAULT_TOPK}; 0 = all)")
    parser.add_argument("--tail-temperature", type=float, default=TAIL_TEMPERATURE,
                        help="also cache logsumexp(logits / T) for this KD temperature "
                             f"(default {TAIL_TEMPERATURE:g}; 0 = do not)")
    parser.add_argument("--strict", action="store_true", help="stop on the first unreadable file")
    parser.add_argument("--batch-size", type=int, default=1, help="songs per batch")
    parser.add_argument("--devices", default="auto", help="Lightning devices (e.g. 1, 4, auto)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy (e.g. ddp)")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed")
    parser.add_argument("--num-workers", type=int, default=1, help="audio decoding workers")


def run(args: argparse.Namespace) -> int:
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    if args.embeddings or args.embedding_module:
        from chordkd.labelling.embeddings import embed_corpus

        report = embed_corpus(
            args.audio, args.out, teacher=args.teacher, module=args.embedding_module,
            strict=args.strict, batch_size=args.batch_size, num_workers=args.num_workers,
            trainer_kwargs={"devices": devices, "accelerator": args.accelerator,
                            "strategy": args.strategy, "num_nodes": args.num_nodes,
                            "precision": args.precision},
        )
        if rank_zero_only.rank == 0:
            print(report.summary())
        return 0
    if not args.teacher:
        from chordkd.teachers import SPEC_HELP

        raise ChordkdError(f"--teacher is required ({SPEC_HELP})")
    report = label_corpus(
        args.teacher, args.audio, args.out, topk=args.topk, strict=args.strict,
        batch_size=args.batch_size, num_workers=args.num_workers,
        tail_temperature=args.tail_temperature or None,
        trainer_kwargs={"devices": devices, "accelerator": args.accelerator,
                        "strategy": args.strategy, "num_nodes": args.num_nodes,
                        "precision": args.precision},
    )
    if rank_zero_only.rank == 0:  # every rank returns; the merged report is rank 0's
        print(report.summary())
    return 0
