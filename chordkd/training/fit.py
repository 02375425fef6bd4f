"""``chordkd fit CONFIG [key=value ...]``: one experiment, from config to checkpoints and metrics.

The run folder (``runs/<name>-<student>-<hash>``) holds the resolved ``config.yaml``,
``checkpoints/`` (``best.ckpt`` by the monitored metric, ``last.ckpt``), the logger's files and
``summary.json`` (best checkpoint, its score, test metrics, the songs each split used and the
ones skipped, with the reason). Rerunning the same command finds
the same folder and resumes from ``last.ckpt`` (global step, optimiser, scheduler, early
stopping state, W&B run id); a finished run is not trained again. While a run trains, its folder
is locked (``.lock``): a second trainer of the same config stops with a one-line error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from chordkd.errors import ChordkdError, ConfigError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (see experiments/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (OmegaConf dotlist)")
    p.add_argument("--print-run-dir", action="store_true", help="print the run folder and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")



def config_or_print(args: argparse.Namespace) -> DictConfig | None:
    """The config of ``args`` (a config file and overrides); None once ``--print-run-dir`` or
    ``--print-config`` has printed what it asks for (the commands `fit` and `pretrain` share)."""
    from chordkd.training.config import load_config, run_dir

    # the run folder is a hash of the whole config: only printing the config may leave a ??? open
    cfg = load_config(args.config, args.overrides,
                      allow_missing=args.print_config and not args.print_run_dir)
    if args.print_run_dir:
        print(run_dir(cfg))
        return None
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return None
    return cfg

def run(args: argparse.Namespace) -> int:
    cfg = config_or_print(args)
    if cfg is None:
        return 0
    summary = fit(cfg)
    best = summary.get("best_checkpoint")
    print(f"run folder: {summary['run_dir']}\nbest checkpoint: {best}")
    for k, v in sorted(summary.get("test", {}).items()):
        print(f"  {k}: {v:.4f}")
    return 0


def _logger(cfg: DictConfig, folder: Path):
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(folder, name="csv")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(folder, name="tensorboard")
    from lightning.pytorch.loggers import WandbLogger

    # One W&B run per experiment folder: its id is kept so a resumed job continues the run.
    id_file = folder / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if run_id is None:
        import uuid

        run_id = uuid.uuid4().hex[:12]  # W&B accepts any [a-z0-9] id; kept for resumption
        # only rank 0 logs to W&B: under torchrun / SLURM every process gets here, and another
        # rank's id written last would make the resumed job start a new W&B run
        if _is_global_rank_zero():
            from chordkd.atomic import write_text

            write_text(id_file, run_id + "\n")
    mode = wandb_mode(cfg.logger.mode, os.environ)
    os.environ["WANDB_MODE"] = mode  # what wandb itself reads, in this process and its ranks
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(
        project=cfg.logger.project, entity=cfg.logger.entity, name=folder.name, id=run_id,
        resume="allow", save_dir=str(folder), offline=mode == "offline", mode=mode,
        tags=list(cfg.logger.tags), config=OmegaConf.to_container(cfg, resolve=True),
    )


def wandb_mode(configured: str | None, environ: Mapping[str, str]) -> str:
    """The W&B mode of a run: ``logger.mode`` if the config sets it, else ``WANDB_MODE``, else
    ``offline``. The Makefile exports ``WANDB_MODE=offline``, so an explicit
    ``logger.mode=online`` must win over the environment, not the other way round."""
    return configured or environ.get("WANDB_MODE") or "offline"


@contextlib.contextmanager
def open_run(cfg: DictConfig) -> Iterator[tuple[Path, dict | None]]:
    """The run folder of ``cfg``, held by this process while the block runs, and, when the run
    is finished (``summary.json``, ``resume=auto``), its summary. Otherwise the folder is made,
    its ``config.yaml`` written and the seed set."""
    import json

    import lightning as L

    from chordkd.atomic import write_text
    from chordkd.training.config import run_dir

    folder = run_dir(cfg)
    done = folder / "summary.json"

    def finished() -> dict | None:
        return json.loads(done.read_text()) if cfg.resume == "auto" and done.is_file() else None

    summary = finished()
    if summary is not None:
        log.info("%s is finished (summary.json); nothing to do (resume=never retrains)", folder)
        yield folder, summary
        return
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder):
        summary = finished()  # its trainer may have finished since the check
        if summary is None:
            write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        yield folder, summary


LOCK_FILE = ".lock"


def _is_global_rank_zero() -> bool:
    """Rank 0 of the job, from the launcher's environment (torchrun, SLURM, Lightning's own
    launcher): known before the Trainer exists."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return (_get_rank() or 0) == 0


class RunInUseError(ChordkdError):
    """The run folder is being trained by another process."""


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this process: a second ``fit`` of the same config (another terminal,
    a sweep trial, a duplicated ``make`` job) would write the same checkpoints and summary, so it
    stops with :class:`RunInUseError` naming the holder instead. The lock is an ``flock`` on
    ``folder/.lock``: the kernel drops it when its holder exits, killed or not, so there is no
    stale lock to clean up. Only global rank 0 takes it; the other DDP ranks of the same job
    share the folder by design. (Not ``filelock``, as the audio cache uses: there a second
    builder waits for the first, here it must stop, and say which process holds the folder.)"""
    import fcntl

    if not _is_global_rank_zero():
        yield
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RunInUseError(
                f"{folder} is being trained by another process ({holder}); two trainers of one "
                "folder would overwrite each other's checkpoints. Wait for it to finish (a "
                "rerun then resumes or reuses it), or change a key (seed=, run_dir=) for a "
                "new folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def fit(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Train (or resume) the experiment ``cfg``; returns the run summary (also in summary.json).

    ``callbacks``: Lightning callbacks added after chordkd's own (a probe, a user's logger).
    Under torchrun or SLURM every process calls this with the same ``cfg``; Lightning reads
    the ranks from the launcher's environment (``trainer.num_nodes`` x ``trainer.devices``
    processes in all).
    """
    with open_run(cfg) as (folder, finished):
        return finished if finished is not None else _train(cfg, folder, callbacks)


def _train(cfg: DictConfig, folder: Path, callbacks: list | None) -> dict:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from chordkd.atomic import write_json
    from chordkd.data.datamodule import ChordDataModule
    from chordkd.training.config import config_hash
    from chordkd.training.distillation import SelectiveKD
    from chordkd.training.seeding import EpochSeed
    from chordkd.training.student import StudentModule
    from chordkd.training.validation import MirEvalValidation

    d = cfg.data
    dm = ChordDataModule(
        train=d.train, valid=d.valid, test=d.test, targets=d.targets,
        teacher_cache=d.teacher_cache, vocabulary=cfg.vocabulary, window=d.window,
        batch_size=d.batch_size, num_workers=d.num_workers, pitch_shift=d.pitch_shift,
        seed=cfg.seed, strict=d.strict, stats_songs=d.stats_songs,
        noise=OmegaConf.to_container(d.noise), format=d.format, stream=d.stream,
        stream_cache=d.stream_cache,
        teacher=d.teacher, allow_cache_mismatch=d.allow_cache_mismatch,
        valid_targets=d.valid_targets, valid_holdout=d.valid_holdout,
        labelled=d.labelled, labelled_ratio=d.labelled_ratio,
    )
    dm.prepare_data()
    dm.setup("fit")

    init_state, encoder_only = None, False
    if cfg.init:
        from chordkd.models.loading import load_model

        loaded = load_model(cfg.init, expected_vocabulary=cfg.vocabulary)
        init_state, encoder_only = loaded.model.state_dict(), loaded.encoder_only
        mean, std = float(loaded.model.mean), float(loaded.model.std)
    else:
        mean, std = dm.feature_stats()

    module = StudentModule(
        student=cfg.student, size=cfg.model.size, vocabulary=cfg.vocabulary,
        overrides=OmegaConf.to_container(cfg.model.overrides), mean=mean, std=std,
        loss=OmegaConf.to_container(cfg.loss),
        optim={**OmegaConf.to_container(cfg.optim), "monitor": cfg.checkpoint.monitor,
               "mode": cfg.checkpoint.mode},
        features=dm.settings.to_dict(),
    )
    if init_state is not None:
        load_init(module.model, init_state, encoder_only, f"init checkpoint {cfg.init}",
                  f"student={cfg.student} size={cfg.model.size}")

    ckpt_dir = folder / "checkpoints"
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
        enable_version_counter=False, auto_insert_metric_name=False,
    )
    # last.ckpt after every epoch, whatever the monitor did: ModelCheckpoint(save_last=True)
    # refreshes it only when a top-k file is saved, so a killed run would resume from its last
    # improvement and a finished run's last.ckpt would not hold its final weights.
    last_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
        save_on_train_epoch_end=True, enable_version_counter=False,
    )
    extra = list(callbacks or [])
    callbacks = [MirEvalValidation(), best_cb, last_cb, EpochSeed(cfg.seed)]
    if cfg.checkpoint.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.checkpoint.patience))
    if cfg.kd.enabled:
        callbacks.append(SelectiveKD(cfg.kd.alpha, cfg.kd.temperature, cfg.kd.rule, cfg.kd.theta,
                                     cfg.kd.confidence))
    if cfg.feature_kd.enabled:
        from chordkd.training.feature_kd import FeatureKD

        # after SelectiveKD, whose alpha mixes only the logit-KD and supervised terms
        f = cfg.feature_kd
        callbacks.append(FeatureKD(f.cache, f.loss, f.weight, f.layer))
    callbacks += extra

    trainer = build_trainer(cfg, folder, callbacks)
    ckpt_path = _resume_path(cfg, ckpt_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)

    best = best_cb.best_model_path or str(ckpt_dir / "last.ckpt")
    summary = {
        "name": cfg.name, "role": cfg.role, "student": cfg.student, "size": cfg.model.size,
        "config_hash": config_hash(cfg), "run_dir": str(folder),
        "best_checkpoint": best, "monitor": monitor,
        "best_score": float(best_cb.best_model_score) if best_cb.best_model_score is not None else None,
        "global_step": trainer.global_step, "epochs": trainer.current_epoch,
        "skipped": dm.skipped,
        # songs each split used: with "skipped", every song of every corpus is accounted for
        "songs": {split: len(ds.songs) for split, ds in
                  (("train", getattr(dm, "pool_set", dm.train_set)),
                   ("labelled", dm.labelled_set), ("valid", dm.val_set), ("test", dm.test_set))
                  if ds is not None and hasattr(ds, "songs")},  # a stream counts windows
        "train_windows": getattr(dm.train_set, "n_windows", len(dm.train_set)),
        "valid_targets": d.valid_targets,
    }
    if d.valid_holdout:  # the training songs held out for validation, by id
        summary["valid_holdout"] = sorted(r.id for r in dm.val_set.songs)
    if cfg.test and d.test and Path(best).is_file():
        results = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
        summary["test"] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        write_json(folder / "summary.json", summary)
    if cfg.logger.kind == "wandb" and trainer.is_global_zero:
        import wandb

        wandb.finish()  # else the next fit in this process (a sweep) would log into this run
    return summary


def build_trainer(cfg: DictConfig, folder: Path, callbacks: list):
    """The Lightning trainer of an experiment: ``cfg.trainer``, its logger (W&B run id kept
    in ``folder``) and atomic checkpoint writes; shared by ``fit`` and ``pretrain``."""
    import lightning as L

    from chordkd.training.checkpoint_io import AtomicCheckpointIO

    t = cfg.trainer
    return L.Trainer(
        default_root_dir=folder,
        max_epochs=t.max_epochs, max_steps=t.max_steps, max_time=t.max_time,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val, accumulate_grad_batches=t.accumulate_grad_batches,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch, log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar, callbacks=callbacks,
        logger=_logger(cfg, folder), plugins=[AtomicCheckpointIO()],
        reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
    )


def load_init(model, state: dict, encoder_only: bool, what: str, fits: str) -> None:
    """Load ``state`` into ``model`` (a ``ChordModel``). ``encoder_only`` (a self-supervised
    checkpoint): everything but the classifier, which stays freshly initialised, so the
    vocabulary may differ from the pre-training run's."""
    if encoder_only:
        head = f"net.{model.net.classifier}."
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=not encoder_only)
        if encoder_only and (unexpected or any(not k.startswith(head) for k in missing)):
            raise RuntimeError(f"missing {[k for k in missing if not k.startswith(head)][:3]}, "
                               f"unexpected {unexpected[:3]}")
    except RuntimeError as e:
        raise ConfigError(f"{what} does not fit {fits}: {str(e).splitlines()[0]}") from None


def _resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    if cfg.resume == "never":
        return None  # a fresh run; an existing last.ckpt in the folder is overwritten
    if cfg.resume == "auto":
        # last.ckpt (end of an epoch), or the checkpoint Lightning saved on SLURM's pre-emption
        # signal (hpc_ckpt_N.ckpt in the run folder, mid-epoch), whichever is newer
        found = [p for p in [ckpt_dir / "last.ckpt", *ckpt_dir.parent.glob("hpc_ckpt_*.ckpt")]
                 if p.is_file()]
        return str(max(found, key=lambda p: p.stat().st_mtime_ns)) if found else None
    if cfg.resume == "last":
        return str(ckpt_dir / "last.ckpt")
    if not Path(cfg.resume).is_file():
        raise ConfigError(f"config key 'resume': no checkpoint at {cfg.resume}")
    return cfg.resume
