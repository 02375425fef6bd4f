"""Experiment configs: a typed schema, YAML files under ``experiments/``, ``key=value`` overrides.

An experiment YAML may name a parent with ``extends: other.yaml`` (relative to its folder);
the chain is merged over the schema's defaults, then command-line overrides are applied
(OmegaConf dotlist). Unknown keys and wrong types are errors that name the key path
(``trainer.max_epoch``), raised as ``ConfigError``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from chordkd.errors import ConfigError


@dataclass
class NoiseConfig:
    """Input noise for training windows and pseudo-label filtering (the noisy student's data side).

    SpecAugment-style masks (Park et al. 2019) are applied to the log-CQT of training windows
    after the pitch shift; labels and teacher outputs are left as they are. Off by default.
    """

    time_masks: int = 0  # masks per window over whole frames; 0 = off
    time_mask_width: int = 12  # max width in frames (each mask's width is uniform in 0..max)
    freq_masks: int = 0  # masks per window over CQT bins; 0 = off
    freq_mask_width: int = 12  # max width in CQT bins (2 bins per semitone)
    mask_value: str = "mean"  # mean (the window's mean log-magnitude) | floor (log(1e-6), silence)
    min_confidence: float = 0.0  # data.targets=teacher: frames whose teacher top probability is
    #                              below this become IGNORE; 0 = keep every frame


@dataclass
class DataConfig:
    train: str = "data/demo/train"  # corpus: manifest CSV or folder (chordkd.data.manifest)
    valid: str | None = "data/demo/valid"
    test: str | None = "data/demo/test"
    targets: str = "labels"  # labels (ground truth .lab) | teacher (cached teacher argmax)
    teacher_cache: str | None = None  # folder written by `chordkd label` for data.train
    teacher: str | None = None  # checkpoint that must have written teacher_cache (sha1 checked)
    allow_cache_mismatch: bool = False  # use a teacher cache of another teacher/audio (warns)
    window: int = 108  # frames per training window
    batch_size: int = 32
    num_workers: int = 0
    pitch_shift: int = 5  # max random shift (semitones) of training windows; 0 = off
    strict: bool = False  # stop on the first bad file instead of skipping it
    stats_songs: int = 64  # songs used for the scalar mean/std normalisation
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # masks, pseudo-label confidence
    # What validation scores against: labels (data.valid's .lab files) | teacher (the cached
    # teacher argmax of data.valid_holdout songs held out of data.train: no label is read)
    valid_targets: str = "labels"
    valid_holdout: int = 0  # songs of data.train held out for valid_targets=teacher
    format: str = "mmap"  # mmap (local audio cache) | stream (litdata shards; stage 1 only)
    stream: str | None = None  # data.format=stream: folder or URL written by `chordkd stream`
    stream_cache: str | None = None  # local folder for downloaded chunks of a remote stream
    # noisy student: a labelled corpus trained on with data.train's pseudo-labels, every batch
    # holding labelled_ratio of ground-truth windows from it (chordkd.data.mixing)
    labelled: str | None = None
    labelled_ratio: float = 0.25  # share of each batch from data.labelled, in (0, 1)


@dataclass
class ModelConfig:
    size: str = "base"  # small | base | large
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {dropout: 0.1}


@dataclass
class LossConfig:
    name: str = "focal"  # focal | ce
    gamma: float = 2.0


@dataclass
class KDConfig:
    enabled: bool = False
    alpha: float = 0.3  # weight of the KD term; 1 - alpha for the supervised term
    temperature: float = 3.0
    rule: str = "paper"  # paper | threshold | agree | all
    theta: float = 0.9  # threshold rule only
    confidence: str = "tempered"  # rules read the teacher's top probability at T, or at 1 ("teacher")


@dataclass
class FeatureKDConfig:
    enabled: bool = False
    cache: str | None = None  # folder written by `chordkd label --embeddings` for data.train
    loss: str = "distance_matrix"  # distance_matrix | cosine (cosine needs data.pitch_shift=0)
    weight: float = 1.0  # loss += weight * feature term (chordkd.training.feature_kd)
    layer: str = "last"  # last (the student's last hidden layer) | logits


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    # cosine (linear warm-up, then cosine down to min_lr, stepped per batch) | plateau (lr times
    # plateau_factor after plateau_patience validations without improvement, floor min_lr) | constant
    schedule: str = "cosine"
    # AdamW kernel: auto (fused, except foreach under 16-mixed) | fused | foreach | for-loop;
    # the same arithmetic up to float rounding (make bench, section 6)
    implementation: str = "auto"
    # cosine warm-up, over optimiser steps or whole epochs (one of the two), from
    # warmup_start_factor * lr up to lr (torch's LinearLR: the first step or epoch at the start)
    warmup_steps: int = 0
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.0
    min_lr: float = 0.0  # the cosine's end and the plateau schedule's floor
    plateau_patience: int = 3
    plateau_factor: float = 0.5


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    min_epochs: int | None = None  # early stopping cannot end a run before this many epochs
    max_steps: int = -1
    max_time: str | None = None  # "DD:HH:MM:SS"
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = 1  # int, list of ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    deterministic: bool = False
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    enable_progress_bar: bool = True


@dataclass
class CheckpointConfig:
    monitor: str = "val/mirex"  # drives ModelCheckpoint, early stopping and plateau schedules
    mode: str = "max"
    patience: int = 10  # early stopping, in validation rounds; 0 = off


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | tensorboard | none
    project: str = "chordkd"
    entity: str | None = None
    # W&B mode: offline (`wandb sync` later) | online | disabled. When set it wins over the
    # WANDB_MODE environment variable (which the Makefile exports); unset: WANDB_MODE, else offline
    mode: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class SSLConfig:
    """Self-supervised pre-training (``chordkd pretrain``; ignored by ``chordkd fit``).

    Views are drawn from one stretch of log-CQT; every augmentation leaves the chord as it is
    (no pitch shift): gain and EQ are additive in log magnitude, noise is added in magnitude.
    """

    objective: str = "contrastive"  # contrastive (InfoNCE between two views) | masked (CQT frames)
    temperature: float = 0.1  # InfoNCE temperature
    projection: int = 128  # width of the contrastive projection head's output
    segment: int = 9  # frames pooled into one contrastive embedding (~0.84 s)
    max_shift: int = 4  # max time shift between the two views, frames
    gain_db: float = 6.0  # max gain change per view, dB (uniform in +-gain_db)
    eq_db: float = 6.0  # max tilt/bump of the random EQ per view, dB
    noise_db: float = -30.0  # max noise floor per view, dB relative to the window's peak
    time_masks: int = 2  # time masks per view (masked objective: spans to predict)
    time_mask_width: int = 6  # max mask width, frames
    mask_ratio: float = 0.3  # masked objective: fraction of frames hidden and predicted


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    role: str = "student"  # teacher | baseline | stage1 | stage2 | ... (for reports)
    student: str = "btc"  # btc | 2e1d
    vocabulary: str = "large"  # large (170) | majmin (25)
    seed: int = 0
    init: str | None = None  # checkpoint whose weights start the student (fresh optimiser)
    resume: str = "auto"  # auto (last.ckpt if present) | never | a checkpoint path
    runs_dir: str = "runs"
    run_dir: str | None = None  # default: runs_dir/<name>-<student>-<hash of the config>
    test: bool = True  # evaluate the best checkpoint on data.test after fitting
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    feature_kd: FeatureKDConfig = field(default_factory=FeatureKDConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)


# Keys that do not change what is trained, left out of the run folder's hash.
_NOT_HASHED = ("resume", "run_dir", "runs_dir", "logger", "test", "data.num_workers",
               "data.stream_cache",
               "trainer.enable_progress_bar", "trainer.log_every_n_steps",
               "data.teacher", "data.allow_cache_mismatch")  # checks, not what is trained


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None,
    allow_missing: bool = False,
) -> DictConfig:
    """Schema defaults <- YAML chain (``extends``) <- ``key=value`` overrides; validated.

    ``allow_missing``: for printing only (``--print-config``): keys a YAML file marks ``???``
    and nothing sets stay ``???`` instead of raising, and the values are not checked.
    """
    schema = OmegaConf.structured(ExperimentConfig)
    try:
        cfg = schema
        required: set[str] = set()  # keys a YAML file marks ??? (must be given later)
        for layer in _yaml_chain(Path(path)) if path else []:
            required |= OmegaConf.missing_keys(layer)
            cfg = OmegaConf.merge(cfg, layer)
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.resolve(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg) | {
            k for k in required if OmegaConf.select(cfg, k, throw_on_missing=False) in (None, "???")
        })
        if missing and not allow_missing:
            raise ConfigError(f"config key '{missing[0]}' must be set (add {missing[0]}=...)")
        for key in missing:  # merged into an optional field, ??? became None: show it again
            OmegaConf.update(cfg, key, "???")
    except OmegaConfBaseException as e:
        raise ConfigError(_explain(e, path)) from None
    if not missing:
        _check_choices(cfg)
    return cfg


def _yaml_chain(path: Path, seen: tuple = ()) -> list[DictConfig]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        layer = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    parent = layer.pop("extends", None)
    chain = _yaml_chain(path.parent / parent, seen + (path.resolve(),)) if parent else []
    return chain + [layer]


def _explain(e: OmegaConfBaseException, path) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    where = f" (in {path} or the overrides)" if path else ""
    if key and "not in" in msg:
        return f"unknown config key '{key}'{where}"
    if key:
        return f"config key '{key}': {msg}{where}"
    return f"{msg}{where}"


_CHOICES = {
    "student": ("btc", "2e1d"),
    "vocabulary": ("large", "majmin"),
    "data.targets": ("labels", "teacher"),
    "data.valid_targets": ("labels", "teacher"),
    "data.format": ("mmap", "stream"),
    "data.noise.mask_value": ("mean", "floor"),
    "model.size": ("small", "base", "large"),
    "loss.name": ("focal", "ce"),
    "kd.rule": ("paper", "threshold", "agree", "all"),
    "kd.confidence": ("tempered", "teacher"),
    "feature_kd.loss": ("distance_matrix", "cosine"),
    "feature_kd.layer": ("last", "logits"),
    "optim.schedule": ("cosine", "plateau", "constant"),
    "optim.implementation": ("auto", "fused", "foreach", "for-loop"),
    "trainer.precision": ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true"),
    "checkpoint.mode": ("max", "min"),
    "logger.kind": ("wandb", "csv", "tensorboard", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "ssl.objective": ("contrastive", "masked"),
}


# key -> (low, high, (low included, high included)); a value outside is a one-line ConfigError
_INF = float("inf")
_RANGES = {
    "data.batch_size": (1, _INF, (True, False)),
    "data.window": (1, _INF, (True, False)),
    "data.num_workers": (0, _INF, (True, False)),
    "data.pitch_shift": (0, 12, (True, True)),  # the transposition tables span -12..12
    "data.stats_songs": (1, _INF, (True, False)),
    "data.valid_holdout": (0, _INF, (True, False)),
    "data.labelled_ratio": (0, 1, (False, False)),
    "loss.gamma": (0, _INF, (True, False)),
    "kd.temperature": (0, _INF, (False, False)),
    "kd.theta": (0, 1, (True, True)),
    "optim.lr": (0, _INF, (False, False)),
    "optim.weight_decay": (0, _INF, (True, False)),
    "optim.warmup_steps": (0, _INF, (True, False)),
    "optim.warmup_epochs": (0, _INF, (True, False)),
    "optim.warmup_start_factor": (0, 1, (True, True)),
    "optim.min_lr": (0, _INF, (True, False)),
    "optim.plateau_patience": (0, _INF, (True, False)),
    "optim.plateau_factor": (0, 1, (False, False)),
    "trainer.max_epochs": (-1, _INF, (True, False)),
    "trainer.min_epochs": (0, _INF, (True, False)),
    "trainer.num_nodes": (1, _INF, (True, False)),
    "trainer.accumulate_grad_batches": (1, _INF, (True, False)),
    "trainer.check_val_every_n_epoch": (1, _INF, (True, False)),
    "trainer.log_every_n_steps": (1, _INF, (True, False)),
    "checkpoint.patience": (0, _INF, (True, False)),
    "ssl.temperature": (0, _INF, (False, False)),
    "ssl.projection": (1, _INF, (True, False)),
    "ssl.segment": (1, _INF, (True, False)),
    "ssl.max_shift": (0, _INF, (True, False)),
    "ssl.gain_db": (0, _INF, (True, False)),
    "ssl.eq_db": (0, _INF, (True, False)),
    "ssl.time_masks": (0, _INF, (True, False)),
    "ssl.time_mask_width": (0, _INF, (True, False)),
    "ssl.mask_ratio": (0, 1, (False, False)),
}
_OPTIONAL = ("logger.mode",)  # None means "not set here" (see LoggerConfig.mode)


def _check_choices(cfg: DictConfig) -> None:
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is None and key in _OPTIONAL:
            continue
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(allowed)}")
    for key, (low, high, closed) in _RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        above = value >= low if closed[0] else value > low
        below = value <= high if closed[1] else value < high
        if not (above and below):
            if high == _INF:
                span = f"{'>=' if closed[0] else '>'} {low}"
            else:
                span = f"in {'[' if closed[0] else '('}{low}, {high}{']' if closed[1] else ')'}"
            raise ConfigError(f"config key '{key}': {value} must be {span}")
    noise = cfg.data.noise
    for key in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
        if noise[key] < 0:
            raise ConfigError(f"config key 'data.noise.{key}': {noise[key]} is negative")
    if not 0 <= noise.min_confidence < 1:
        raise ConfigError(f"config key 'data.noise.min_confidence': {noise.min_confidence} "
                          "is not in [0, 1)")
    if noise.min_confidence > 0 and cfg.data.targets != "teacher":
        raise ConfigError("config key 'data.noise.min_confidence': filters pseudo-labels, "
                          "so it needs data.targets=teacher")
    if not 0 <= cfg.kd.alpha <= 1:
        raise ConfigError(f"config key 'kd.alpha': {cfg.kd.alpha} is not in [0, 1]")
    _check_schedule(cfg)
    if cfg.data.labelled:
        _check_labelled(cfg)
    if cfg.data.format == "stream":
        _check_stream(cfg)
    elif cfg.data.targets == "teacher" and not cfg.data.teacher_cache:
        raise ConfigError("config key 'data.teacher_cache': needed when data.targets=teacher")
    if cfg.kd.enabled and not cfg.data.teacher_cache and cfg.data.format != "stream":
        raise ConfigError("config key 'data.teacher_cache': needed when kd.enabled=true")
    _check_validation(cfg)
    fkd = cfg.feature_kd
    if fkd.enabled and not fkd.cache:
        raise ConfigError("config key 'feature_kd.cache': needed when feature_kd.enabled=true "
                          "(run `chordkd label --embeddings` on data.train)")
    if not fkd.weight >= 0:
        raise ConfigError(f"config key 'feature_kd.weight': {fkd.weight} is not >= 0")
    if fkd.enabled and fkd.loss == "cosine" and cfg.data.pitch_shift:
        raise ConfigError("config key 'data.pitch_shift': feature_kd.loss=cosine compares frames "
                          "with embeddings of the unshifted audio; set data.pitch_shift=0")


def _check_schedule(cfg: DictConfig) -> None:
    o = cfg.optim
    if o.warmup_steps and o.warmup_epochs:
        raise ConfigError("config keys 'optim.warmup_steps' and 'optim.warmup_epochs': set one "
                          "of the two (the other to 0)")
    if o.min_lr >= o.lr:
        raise ConfigError(f"config key 'optim.min_lr': {o.min_lr} must be below optim.lr ({o.lr})")


def _check_validation(cfg: DictConfig) -> None:
    d = cfg.data
    if d.valid_targets == "labels":
        if d.valid_holdout:
            raise ConfigError("config key 'data.valid_holdout': held-out songs are scored against "
                              "the teacher; it needs data.valid_targets=teacher")
        return
    # valid_targets=teacher: validation songs come out of data.train and its teacher cache
    # (data.valid_holdout=0: no validation, as data.valid=null is with labels)
    if d.valid:
        raise ConfigError("config key 'data.valid': data.valid_targets=teacher validates on "
                          "data.valid_holdout songs of data.train, not on a labelled corpus; "
                          "set data.valid=null")
    if d.valid_holdout and d.format != "mmap":
        raise ConfigError("config key 'data.valid_holdout': holds out whole songs of the local "
                          "audio cache; use data.format=mmap with it (or data.valid_holdout=0)")
    if d.valid_holdout and not d.teacher_cache:
        raise ConfigError("config key 'data.teacher_cache': needed when "
                          "data.valid_targets=teacher")


def _check_labelled(cfg: DictConfig) -> None:
    # mixed batches: ground truth for the labelled windows, hard pseudo-labels for the pool's
    from chordkd.data.mixing import labelled_per_batch

    d = cfg.data
    if d.targets != "teacher" or d.format != "mmap":
        raise ConfigError("config key 'data.labelled': mixes ground truth into batches of "
                          "pseudo-labelled data.train, so it needs data.targets=teacher and "
                          "data.format=mmap")
    if cfg.kd.enabled or cfg.feature_kd.enabled:
        raise ConfigError("config key 'data.labelled': labelled windows carry no teacher "
                          "outputs; mixing trains on hard targets (kd and feature_kd off)")
    labelled_per_batch(d.labelled_ratio, d.batch_size)


def _check_stream(cfg: DictConfig) -> None:
    # the stream holds audio and teacher outputs of stage 1's training windows, nothing else
    if not cfg.data.stream:
        raise ConfigError("config key 'data.stream': needed when data.format=stream "
                          "(a folder or URL written by `chordkd stream`)")
    if cfg.data.targets != "teacher":
        raise ConfigError("config key 'data.format': stream holds teacher pseudo-labels, "
                          "so it needs data.targets=teacher (stage 1)")
    if cfg.feature_kd.enabled:
        raise ConfigError("config key 'data.format': feature_kd reads a local embedding cache "
                          "per song; use data.format=mmap with it")


# Sections of features that are off by default: left out of the hash while at their defaults,
# so adding such a feature to chordkd keeps existing run folders (and their checkpoints) valid.
_HASHED_IF_CHANGED = ("data.noise", "feature_kd", "data.format", "data.stream",
                      "optim.implementation", "data.valid_targets", "data.valid_holdout",
                      "optim.warmup_epochs", "optim.warmup_start_factor", "optim.min_lr", "ssl",
                      "data.labelled", "data.labelled_ratio", "trainer.min_epochs", "kd.confidence")
# Keys taken out of the schema, hashed at the one value every run had, so run folders made
# before keep their names (optim.min_lr_ratio: replaced by optim.min_lr, 0 in every run).
_RETIRED = {"optim": {"min_lr_ratio": 0.0}}


def config_hash(cfg: DictConfig) -> str:
    """Short hash of everything that changes what is trained."""
    c = OmegaConf.to_container(cfg, resolve=True)
    defaults = OmegaConf.to_container(OmegaConf.structured(ExperimentConfig))
    for dotted in _NOT_HASHED + _HASHED_IF_CHANGED:
        *parents, leaf = dotted.split(".")
        node, default = c, defaults
        for p in parents:
            node, default = node.get(p, {}), default.get(p, {})
        if dotted in _NOT_HASHED or node.get(leaf) == default.get(leaf):
            node.pop(leaf, None)
    for section, keys in _RETIRED.items():
        c[section].update(keys)
    return hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:8]


def run_dir(cfg: DictConfig) -> Path:
    """The run's folder: rerunning the same config finds (and resumes) the same folder."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.runs_dir) / f"{cfg.name}-{cfg.student}-{config_hash(cfg)}"
