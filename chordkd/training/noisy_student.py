"""``chordkd noisy-student``: iterated noisy-student training with knowledge expansion.

    chordkd noisy-student --config experiments/noisy_student.yaml --rounds 3 \\
        --sizes small,base,large --student btc [--teacher CKPT] [key=value ...]

Self-training as in Xie et al. (2020), "Self-training with Noisy Student improves ImageNet
classification", on unlabelled audio. Round 0's model is the teacher (``--teacher``; default
the demo teacher's best checkpoint, ``experiments/teacher.yaml``), whose pseudo-labels of the
pool are cached in ``--teacher-cache`` (default ``runs/teacher_cache/pool``, what ``make
label`` writes; labelled there first if missing). Round ``r`` = 1..R then:

1. trains a fresh student of size ``SIZES[r-1]``, at least as many parameters as its teacher,
   on the labelled corpus and round ``r-1``'s pseudo-labels of the pool together: every batch
   holds ``data.labelled_ratio`` of ground-truth windows of ``data.labelled`` and the rest
   pseudo-labelled pool windows (``chordkd.data.mixing``). It trains *with noise*: SpecAugment
   masks and pitch shift on the input of both (``data.noise``, ``data.pitch_shift``), the
   network's dropout, and optionally only the pool frames its teacher was confident about
   (``data.noise.min_confidence``); and to convergence: early stopping on the ground-truth
   validation corpus (``data.valid``, ``checkpoint.patience``), whose best checkpoint is the
   round's model. It is an ordinary ``chordkd fit`` run of the config with
   ``data.teacher_cache`` = the previous round's cache, ``model.size``, ``name=noisy-r{r}``
   and ``role=noisy_r{r}``;
2. relabels the pool with that student *without noise* (eval mode: no dropout, clean
   features) into ``<out>/round{r}/pool_cache`` (``label_corpus``): the next round's targets;
3. evaluates it on ``data.test`` into ``<runs>/eval/noisy-<student>/round{r}`` (role
   ``noisy_r{r}``, so ``chordkd results --runs runs/eval`` shows a row per round).

Growing sizes (small -> base -> large) is the "knowledge expansion" of the method: each
student is at least as large as its teacher, so it can absorb what the noise makes harder.
The round-0 teacher is evaluated too (into ``<out>/round0/eval``, outside ``runs/eval`` so the
results table keeps its single teacher row), and ``<out>/rounds.{md,csv,json}``
(``chordkd.training.noisy_report``) compare every round with its teacher. ``<out>`` defaults
to ``runs/noisy_student/<student>``.

Everything resumes: a finished round's fit returns at once (its ``summary.json``), labelling
skips songs already cached by the same checkpoint, and an evaluation of the same checkpoint
is read back instead of recomputed; so rerunning with ``--rounds`` raised adds rounds; an
interrupted round resumes from its ``last.ckpt``. Without ``data.labelled`` the rounds train
on pseudo-labels alone (the variant before Xie et al.'s joint training).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from chordkd.errors import CacheError, CheckpointError, ConfigError

log = logging.getLogger(__name__)

FORMAT = "chordkd-noisy-student/1"
# Keys the rounds set themselves; an override of one of them would be silently replaced.
ROUND_KEYS = ("student", "model.size", "name", "role", "data.targets", "data.teacher_cache")


def parse_sizes(sizes: str | Sequence[str], rounds: int) -> list[str]:
    """Student size per round, e.g. ``"small,base,large"`` for 3 rounds; a single size is
    used for every round. Raises ``ConfigError`` for unknown sizes or a count mismatch."""
    from chordkd.models import SIZES

    if rounds < 1:
        raise ConfigError(f"--rounds: must be at least 1, got {rounds}")
    names = [s.strip() for s in sizes.split(",")] if isinstance(sizes, str) else list(sizes)
    for s in names:
        if s not in SIZES:
            raise ConfigError(f"--sizes: unknown size {s!r}; allowed: {', '.join(SIZES)}")
    if len(names) == 1:
        return names * rounds
    if len(names) != rounds:
        raise ConfigError(f"--sizes: {len(names)} sizes ({','.join(names)}) for {rounds} rounds; "
                          "give one per round, or a single size for all")
    return names


def check_growth(teacher_parameters: int, student: str, plan: Sequence[str],
                 n_classes: int) -> None:
    """A noisy student is at least as large as its teacher (Xie et al.): refuse a plan in which
    a round's student has fewer parameters than the round before it (round 0: the teacher)."""
    from chordkd.models import build_student, count_parameters

    previous, what = teacher_parameters, "the round-0 teacher"
    for r, size in enumerate(plan, start=1):
        n = count_parameters(build_student(student, size, n_classes))
        if n < previous:
            raise ConfigError(
                f"--sizes: round {r}'s {student}-{size} student has {n:,} parameters, fewer than "
                f"{what} ({previous:,}); a noisy student is as large as its teacher or larger")
        previous, what = n, f"round {r}'s {student}-{size}"


def round_config(
    config: str | os.PathLike, overrides: Sequence[str], student: str, size: str, r: int,
    teacher_cache: str | os.PathLike,
) -> DictConfig:
    """The experiment config of round ``r``: ``config`` + ``overrides`` + the round's keys."""
    from chordkd.training.config import load_config

    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if key in ROUND_KEYS:
            raise ConfigError(f"override {o!r}: noisy-student sets {key!r} for each round "
                              "(use --student, --sizes, --teacher-cache)")
    return load_config(config, [
        *overrides, f"student={student}", f"model.size={size}", f"name=noisy-r{r}",
        f"role=noisy_r{r}", "data.targets=teacher", f"data.teacher_cache={teacher_cache}",
    ])


def default_teacher(config: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """The demo teacher's best checkpoint: ``teacher.yaml`` beside ``config``, its run folder
    under ``runs_dir`` (what ``chordkd fit experiments/teacher.yaml --print-run-dir`` prints)."""
    from chordkd.training.config import load_config, run_dir

    teacher_yaml = Path(config).parent / "teacher.yaml"
    cfg = load_config(teacher_yaml, ["student=btc", f"runs_dir={runs_dir}"])
    return run_dir(cfg) / "checkpoints" / "best.ckpt"


def noisy_student(
    config: str | os.PathLike,
    rounds: int,
    sizes: str | Sequence[str],
    student: str = "btc",
    teacher: str | os.PathLike | None = None,
    teacher_cache: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    out: str | os.PathLike | None = None,
    eval_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``rounds`` noisy-student rounds; returns the report of ``rounds.json``.

    ``config``: the round recipe (``experiments/noisy_student.yaml``; ``data.train`` is the
    unlabelled pool, ``data.test`` the labelled test corpus). ``teacher``: round 0's
    checkpoint (chordkd or official BTC; default :func:`default_teacher`). ``teacher_cache``:
    its pool cache (default ``<runs_dir>/teacher_cache/pool``). ``out``: default
    ``<runs_dir>/noisy_student/<student>``; ``eval_root``: default ``<runs_dir>/eval``.
    """
    from lightning.pytorch.utilities import rank_zero_only

    from chordkd.labelling.label import label_corpus
    from chordkd.training.config import run_dir
    from chordkd.training.fit import fit

    plan = parse_sizes(sizes, rounds)
    # round 1's config without its cache (not known before runs_dir is): the shared settings
    base = round_config(config, overrides, student, plan[0], 1, "<round-0 cache>")
    runs = Path(base.runs_dir)
    out = Path(out) if out is not None else runs / "noisy_student" / student
    eval_root = Path(eval_root) if eval_root is not None else runs / "eval"
    teacher = Path(teacher) if teacher is not None else default_teacher(config, runs)
    if not teacher.is_file():
        raise ConfigError(f"round-0 teacher {teacher}: no such checkpoint (train it with "
                          "`make teacher`, or pass --teacher CKPT)")
    from chordkd.models import count_parameters
    from chordkd.models.loading import load_model

    net = load_model(teacher).model.net
    check_growth(count_parameters(net), student, plan, net.n_classes)
    cache = Path(teacher_cache) if teacher_cache is not None else runs / "teacher_cache" / "pool"
    pool, test = base.data.train, base.data.test
    if not test:
        raise ConfigError("config key 'data.test': noisy-student evaluates every round on it")
    device = "cpu" if base.trainer.accelerator == "cpu" else "auto"  # for the evaluations
    label_kwargs = {"trainer_kwargs": _label_trainer_kwargs(base),
                    "num_workers": base.data.num_workers}  # audio decoding processes

    _check_cache_teacher(cache, teacher)
    log.info("round 0: pseudo-labels of %s by %s in %s", pool, teacher, cache)
    label_corpus(teacher, pool, cache, **label_kwargs)
    rows = []
    if rank_zero_only.rank == 0:
        rows.append(_evaluate_round(0, teacher, test, out / "round0" / "eval", student, None,
                                    trained_on=None, pool_cache=cache, min_confidence=0.0,
                                    device=device, training=_teacher_training(teacher)))
    for r, size in enumerate(plan, start=1):
        cfg = round_config(config, overrides, student, size, r, cache)
        log.info("round %d: %s-%s student on %s (%s)", r, student, size, cache, cfg.name)
        labels = labels_digest(cache)
        provenance = _Provenance(out / f"round{r}" / "trained_on.json")
        if provenance.stale(run_dir(cfg), labels):
            # the cache path is the same but an earlier round was retrained since: its
            # pseudo-labels changed, so this round's finished run no longer follows from them
            log.warning("round %d: %s was trained on other pseudo-labels than %s holds now; "
                        "training it again", r, run_dir(cfg), cache)
            cfg.resume = "never"
        summary = fit(cfg)
        if rank_zero_only.rank == 0:
            provenance.record(summary["run_dir"], labels)
        best = Path(summary["best_checkpoint"])
        if not best.is_file():
            raise CheckpointError(f"round {r}: {summary['run_dir']} has no checkpoint to label with")
        trained_on, cache = cache, out / f"round{r}" / "pool_cache"
        label_corpus(best, pool, cache, **label_kwargs)
        if rank_zero_only.rank == 0:
            rows.append(_evaluate_round(
                r, best, test, eval_root / f"noisy-{student}" / f"round{r}", student, size,
                trained_on=trained_on, pool_cache=cache,
                min_confidence=cfg.data.noise.min_confidence, run_dir=summary["run_dir"],
                device=device, training=_training(summary, cfg),
            ))
    report = {
        "format": FORMAT, "student": student, "config": str(config),
        "overrides": list(overrides), "sizes": plan, "teacher": str(teacher), "pool": pool,
        "labelled": base.data.labelled, "labelled_ratio": base.data.labelled_ratio,
        "valid": base.data.valid, "test": test, "out": str(out), "rounds": rows,
    }
    if rank_zero_only.rank == 0:
        from chordkd.training.noisy_report import write_rounds_report

        write_rounds_report(report, out)
    return report


def _training(summary: dict[str, Any], cfg: DictConfig | None) -> dict[str, Any]:
    """What a round's row says of its training: data mix, epochs run, best validation score."""
    labelled = cfg.data.labelled if cfg is not None else None
    return {"labelled": labelled,
            "labelled_ratio": cfg.data.labelled_ratio if labelled else None,
            "epochs": summary.get("epochs"), "monitor": summary.get("monitor"),
            "best_score": summary.get("best_score")}


def _teacher_training(teacher: Path) -> dict[str, Any]:
    """The round-0 row's training facts, from the teacher's run folder when it is chordkd's
    (``<run>/checkpoints/best.ckpt`` beside ``<run>/summary.json``); else unknown."""
    found = teacher.parent.parent / "summary.json"
    summary = json.loads(found.read_text(encoding="utf-8")) if found.is_file() else {}
    return _training(summary, None)


def labels_digest(cache: str | os.PathLike) -> str:
    """Identity of a cache's pseudo-labels: sha1 over every song's (id, labelling checkpoint's
    sha1, record checksum). Relabelling with the same model gives the same bytes and digest."""
    from chordkd.labelling.teacher_cache import TeacherCache

    found = TeacherCache(cache, verify=False)
    digest = hashlib.sha1()
    for song in found.song_ids:
        e = found.entry(song)
        digest.update(f"{song}\0{e.teacher}\0{e.checksum}\n".encode())
    return digest.hexdigest()


class _Provenance:
    """Which pseudo-labels (``labels_digest``) each run folder of a round was trained on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, str] = (json.loads(path.read_text(encoding="utf-8"))
                                     if path.is_file() else {})

    def stale(self, folder: Path, labels: str) -> bool:
        """A finished run of ``folder`` trained on labels other than ``labels``."""
        known = self.runs.get(str(folder))
        return known is not None and known != labels and (folder / "summary.json").is_file()

    def record(self, folder: str, labels: str) -> None:
        from chordkd.atomic import write_json

        self.runs[str(folder)] = labels
        write_json(self.path, self.runs)


def _label_trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    # Label on the devices the rounds train on; float32, as `chordkd label` does by default.
    t = OmegaConf.to_container(cfg.trainer)
    return {"accelerator": t["accelerator"], "devices": t["devices"], "strategy": t["strategy"],
            "num_nodes": t["num_nodes"], "precision": "32-true"}


def _check_cache_teacher(cache: Path, teacher: Path) -> None:
    """Refuse to overwrite another teacher's pseudo-labels in the (shared) round-0 cache:
    ``label_corpus`` would relabel every song whose cached teacher differs."""
    from chordkd.labelling.teacher_cache import TeacherCache, file_sha1

    if not (cache / "index.json").is_file() and not any(cache.glob("journal-*.jsonl")):
        return
    found = TeacherCache(cache, verify=False)
    theirs = {found.entry(s).teacher for s in found.song_ids}
    ours = file_sha1(teacher)
    if theirs - {ours}:
        raise CacheError(
            f"{cache}: holds pseudo-labels of another teacher (sha1 {sorted(theirs - {ours})[0]}"
            f"), not of {teacher} (sha1 {ours}); pass --teacher-cache DIR for this teacher"
        )


def _evaluate_round(
    r: int, checkpoint: Path, test: str, folder: Path, student: str, size: str | None, *,
    trained_on: Path | None, pool_cache: Path, min_confidence: float,
    run_dir: str | None = None, device: str = "auto", training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate round ``r``'s model on ``test`` into ``folder`` (reused when it already holds
    this checkpoint's evaluation); returns the round's row of the report."""
    from chordkd.data.datasets import confident_fraction
    from chordkd.data.manifest import read_manifest
    from chordkd.evaluation.report import evaluate_models
    from chordkd.labelling.teacher_cache import TeacherCache
    from chordkd.models import count_parameters
    from chordkd.models.loading import load_model
    from chordkd.transcribe import resolve_device

    name = f"noisy-r{r}"
    loaded = load_model(checkpoint)
    overall_path = folder / "overall.json"
    summary = _previous_evaluation(overall_path, name, checkpoint)
    if summary is None:
        loaded.model.to(resolve_device(device)).eval()
        meta = {"role": f"noisy_r{r}", "student": student, "round": r}
        evaluate_models({name: loaded}, read_manifest(test, require_labels=True), folder,
                        meta={name: meta})
        summary = json.loads(overall_path.read_text(encoding="utf-8"))["models"][name]
    kept = None
    if trained_on is not None:
        used = TeacherCache(trained_on, verify=False)
        kept = confident_fraction(used, used.song_ids, min_confidence)
    return {
        "round": r, "model": "teacher" if r == 0 else name,
        "size": size or _size_of(loaded.model.net), "student": loaded.model.net.config.get("name"),
        "parameters": count_parameters(loaded.model.net), "checkpoint": str(checkpoint),
        "run_dir": run_dir, "trained_on": None if trained_on is None else str(trained_on),
        "min_confidence": min_confidence, "pseudo_labels_kept": kept,
        "pool_cache": str(pool_cache), "evaluation": str(folder),
        "metrics": summary["metrics"], "mean": summary["mean"], "acqa": summary["acqa"],
        "n_songs": summary["n_songs"], **(training or {}),
    }


def _previous_evaluation(path: Path, name: str, checkpoint: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))["models"][name]
    except (ValueError, KeyError):
        return None  # another model's or a damaged report: evaluate again (atomic rewrite)
    return summary if summary["meta"].get("checkpoint") == str(checkpoint) else None


def _size_of(net) -> str:
    """The named size whose configuration ``net`` has, else ``"custom"``."""
    from chordkd.models import SIZES, build_student

    config = net.config
    for size in SIZES:
        if build_student(config["name"], size, net.n_classes).config == config:
            return size
    return "custom"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the round recipe (experiments/noisy_student.yaml)")
    p.add_argument("--rounds", type=int, default=3, help="student rounds after the teacher (default 3)")
    p.add_argument("--sizes", default="small",
                   help="student size per round, comma-separated, or one size for all, none "
                        "smaller than the round before (default small: the demo teacher's)")
    p.add_argument("--student", default="btc", choices=("btc", "2e1d"), help="student network")
    p.add_argument("--teacher", default=None,
                   help="round-0 checkpoint (default: the demo teacher's best.ckpt)")
    p.add_argument("--teacher-cache", default=None,
                   help="round-0 pseudo-labels of the pool (default runs/teacher_cache/pool)")
    p.add_argument("--out", default=None, help="default runs/noisy_student/<student>")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for every round (OmegaConf dotlist)")


def run(args: argparse.Namespace) -> int:
    report = noisy_student(
        args.config, args.rounds, args.sizes, student=args.student, teacher=args.teacher,
        teacher_cache=args.teacher_cache, overrides=args.overrides, out=args.out,
    )
    if report["rounds"]:  # rank zero: the report is written
        print((Path(report["out"]) / "rounds.md").read_text(encoding="utf-8"))
    return 0
