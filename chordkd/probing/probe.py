"""``chordkd probe ENCODER... --data DIR --tasks ... --out DIR``: frozen encoders compared.

Each encoder (spec: :mod:`chordkd.probing.encoders`) embeds every song of ``--data`` once
(cached under ``OUT/embeddings``, reused by reruns); then, per task
(:mod:`chordkd.probing.tasks`), a linear and an MLP probe are trained on the task's training
songs and scored on its held-out songs (:mod:`chordkd.probing.probes`). Writes
``probe.json``, ``probe.csv``, ``probe.md`` and ``probe.png`` (encoder x task) to ``OUT``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from chordkd.probing.tasks import TASKS

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("encoders", nargs="+", metavar="ENCODER",
                   help="CKPT[@LAYER] (chordkd or official BTC file; LAYER: last, logits, "
                        "or block k), random:STUDENT[:SIZE], madmom:cnn, package.module:factory")
    p.add_argument("--data", required=True, help="corpus (manifest or folder) with metadata")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, metavar="TASK",
                   help=f"probe tasks (default: all of {', '.join(TASKS)})")
    p.add_argument("--out", required=True, help="folder for probe.{md,csv,json,png}")
    p.add_argument("--names", nargs="+", help="one table name per encoder")
    p.add_argument("--cache", help="embedding caches (default: OUT/embeddings)")
    p.add_argument("--seed", type=int, default=0, help="the probes' seed")


def run(args: argparse.Namespace) -> int:
    from chordkd.errors import ChordkdError
    from chordkd.probing.encoders import parse_encoder

    if args.names and len(args.names) != len(args.encoders):
        raise ChordkdError(f"--names gives {len(args.names)} names for {len(args.encoders)} encoders")
    names = args.names or [None] * len(args.encoders)
    encoders = [parse_encoder(spec, name) for spec, name in zip(args.encoders, names)]
    result = probe(encoders, args.data, args.tasks, Path(args.out),
                   Path(args.cache) if args.cache else None, args.seed)
    for reason in result["skipped"].values():
        print(f"skipped {reason}")
    print(f"wrote {Path(args.out) / 'probe.md'}")
    return 0


def probe(encoders: list, data: str | Path, tasks: list[str], out: Path,
          cache: Path | None = None, seed: int = 0) -> dict:
    """Embed ``data`` with every encoder and score every task; returns what probe.json holds."""
    from chordkd.data.manifest import read_manifest
    from chordkd.probing.encoders import embed
    from chordkd.probing.report import write_report
    from chordkd.probing.tasks import Skipped, build_task, with_aside_metadata

    start = time.perf_counter()
    songs = with_aside_metadata(read_manifest(data), data)
    built, skipped = {}, {}
    for name in dict.fromkeys(tasks):
        try:
            built[name] = build_task(name, songs, str(data))
        except Skipped as e:
            skipped[name] = str(e)
            log.warning("skipped %s", e)
    rows = []
    for enc in encoders:
        t0 = time.perf_counter()
        emb = embed(enc, data, cache or out / "embeddings", songs=songs)
        frames = {s: emb.read(s) for s in emb.song_ids}
        for task in built.values():
            rows += score_task(task, frames, emb.hop_seconds, emb.offset_seconds, enc.name, seed)
        log.info("%s: %.0f s", enc.name, time.perf_counter() - t0)
    result = {
        "data": str(data), "seed": seed,
        "encoders": [{"name": e.name, "spec": e.spec} for e in encoders],
        "tasks": {t.name: {"level": t.level, "classes": t.classes, "train_songs": t.train,
                           "test_songs": t.test} for t in built.values()},
        "skipped": skipped, "rows": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    write_report(result, out)
    return result


def score_task(task, embeddings: Mapping[str, np.ndarray], hop_seconds: float,
               offset_seconds: float, encoder: str, seed: int = 0) -> list[dict]:
    """Train both probes of ``task`` on its training songs' ``embeddings`` (song id ->
    ``[T', D]``) and score them on its test songs: one row per probe. Songs without an
    embedding are left out (and counted)."""
    from chordkd.probing.probes import PROBES, accuracy, song_vector, tempo_scores, train_probe
    from chordkd.probing.tasks import frame_targets

    def examples(ids: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        ids = [s for s in ids if s in embeddings]
        if task.level == "song":
            x = np.stack([song_vector(embeddings[s]) for s in ids]) if ids else np.zeros((0, 1))
            y = np.array([task.targets[s] for s in ids])
            return x, (np.log2(y) if not task.classes else y), len(ids)
        xs, ys = [], []
        for s in ids:
            e = np.asarray(embeddings[s], dtype=np.float32)
            y = frame_targets(task, s, e.shape[0], hop_seconds, offset_seconds)
            xs.append(e[y >= 0])
            ys.append(y[y >= 0])
        return np.concatenate(xs), np.concatenate(ys), len(ids)

    x_tr, y_tr, n_tr = examples(task.train)
    x_te, y_te, n_te = examples(task.test)
    base = {"encoder": encoder, "task": task.name, "train_songs": n_tr, "test_songs": n_te,
            "train_examples": int(len(y_tr)), "test_examples": int(len(y_te))}
    if not len(y_tr) or not len(y_te):
        return [{**base, "probe": p, "score": float("nan"), "chance": float("nan"),
                 "note": "no embedded songs on one side of the split"} for p in PROBES]
    rows = []
    for kind in PROBES:
        if task.classes:
            predict = train_probe(x_tr, y_tr, kind, len(task.classes), seed)
            majority = np.bincount(y_tr.astype(int)).argmax()
            rows.append({**base, "probe": kind, "metric": "accuracy",
                         "score": accuracy(predict(x_te), y_te),
                         "chance": accuracy(np.full_like(y_te, majority), y_te)})
        else:
            predict = train_probe(x_tr, y_tr, kind, None, seed)
            scores = tempo_scores(2 ** predict(x_te), 2 ** y_te)
            chance = tempo_scores(np.full(len(y_te), 2 ** np.median(y_tr)), 2 ** y_te)
            rows.append({**base, "probe": kind, "metric": "accuracy within 4%",
                         "score": scores["accuracy"], "chance": chance["accuracy"],
                         "octave_errors": scores["octave_errors"]})
    return rows
