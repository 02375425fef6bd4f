"""Encoder specs of ``chordkd probe``, each turned into an embeddings cache over a corpus.

- ``PATH[@LAYER]``: a chordkd checkpoint (student, teacher or ``chordkd pretrain``) or an
  official BTC file, at ``LAYER`` (``last``, the default: the last hidden layer; ``logits``;
  ``k``: the output of block ``k``, see :func:`chordkd.labelling.embeddings.check_layer`).
- ``random:STUDENT[:SIZE]``: a freshly initialised student (seed 0), normalised with the
  corpus's own feature statistics: what an encoder gives before any training.
- ``madmom:cnn`` / ``madmom:deepchroma``: the features madmom's chord CRF reads (10 fps).
- ``cqt``: the students' own input, chordkd's log-CQT (144 bins): what any encoder starts from,
  so the row an encoder must beat to have learnt something a probe can use.
- ``package.module:factory``: a user's waveform module (as for ``chordkd label --embeddings``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chordkd.errors import ConfigError
from chordkd.labelling.embeddings import EmbeddingCache, embed_corpus

MADMOM_FEATURES = {"madmom:cnn": "chordkd.probing.encoders:madmom_cnn",
                   "madmom:deepchroma": "chordkd.probing.encoders:madmom_deepchroma"}
BUILTIN_FEATURES = {**MADMOM_FEATURES, "cqt": "chordkd.probing.encoders:log_cqt"}


@dataclass(frozen=True)
class Encoder:
    """A parsed spec: ``name`` (for tables and folders), and either a checkpoint ``path`` at
    ``layer`` or a waveform ``module`` spec, or ``random`` = (student, size)."""

    spec: str
    name: str
    path: Path | None = None
    layer: str = "last"
    module: str | None = None
    random: tuple[str, str] | None = None


def parse_encoder(spec: str, name: str | None = None) -> Encoder:
    """One encoder spec (see the module docstring) -> :class:`Encoder`; ConfigError if it is
    none of them."""
    label = name or _default_name(spec)
    if spec.startswith("random:"):
        parts = spec.split(":")[1:]
        if not 1 <= len(parts) <= 2 or not parts[0]:
            raise ConfigError(f"encoder {spec!r}: write random:STUDENT or random:STUDENT:SIZE")
        return Encoder(spec, label, random=(parts[0], parts[1] if len(parts) == 2 else "base"))
    if spec in BUILTIN_FEATURES:
        return Encoder(spec, label, module=BUILTIN_FEATURES[spec])
    path, _, layer = spec.partition("@")
    if Path(path).is_file():
        return Encoder(spec, label, path=Path(path), layer=layer or "last")
    if ":" in spec and "/" not in spec:
        return Encoder(spec, label, module=spec)
    raise ConfigError(f"encoder {spec!r}: no such checkpoint file, and not random:STUDENT, "
                      f"{', '.join(BUILTIN_FEATURES)} or package.module:factory")


def _default_name(spec: str) -> str:
    path, _, layer = spec.partition("@")
    p = Path(path)
    if p.suffix == ".ckpt" and p.parent.name == "checkpoints":  # runs/<run>/checkpoints/best.ckpt
        base = p.parent.parent.name
    elif p.suffix in (".ckpt", ".pt", ".pth"):
        base = p.stem
    else:
        base = spec
    return base + (f"@{layer}" if layer and layer != "last" else "")


def folder_name(encoder: Encoder) -> str:
    """A file-system-safe, unique folder name for an encoder's cache."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)[:60]
    return f"{safe}-{hashlib.sha1(encoder.spec.encode()).hexdigest()[:8]}"


def embed(encoder: Encoder, data: str | Path, out: Path, songs=None,
          trainer_kwargs: dict | None = None) -> EmbeddingCache:
    """The embeddings of every song of ``data`` by ``encoder``, cached under ``out``
    (a rerun embeds only what is missing)."""
    cache = out / folder_name(encoder)
    kwargs = {"trainer_kwargs": {"devices": 1, "enable_progress_bar": False,
                                 **(trainer_kwargs or {})}}
    target = songs if songs is not None else data
    if encoder.random is not None:
        path = random_checkpoint(*encoder.random, data, cache.parent / (cache.name + ".ckpt"))
        embed_corpus(target, cache, teacher=path, **kwargs)
    elif encoder.path is not None:
        embed_corpus(target, cache, teacher=encoder.path, layer=encoder.layer, **kwargs)
    else:
        embed_corpus(target, cache, module=encoder.module, **kwargs)
    return EmbeddingCache(cache)


def random_checkpoint(student: str, size: str, data: str | Path, path: Path,
                      stats_songs: int = 16) -> Path:
    """Write (once) a chordkd checkpoint of a freshly initialised ``student`` (seed 0, 25
    classes) normalised by the log-CQT statistics of up to ``stats_songs`` songs of ``data``."""
    if path.is_file():
        return path
    from chordkd.atomic import torch_save
    from chordkd.audio import load_audio
    from chordkd.data.manifest import read_manifest
    from chordkd.features import FeatureSettings, FeatureStats, LogCQT
    from chordkd.models import ChordModel, build_student
    from chordkd.training.student import CHECKPOINT_FORMAT

    settings, stats = FeatureSettings(), FeatureStats()
    cqt = LogCQT(settings)
    with torch.inference_mode():
        for song in read_manifest(data)[:stats_songs]:
            stats.update(cqt(torch.from_numpy(load_audio(song.audio, settings.sr))))
    torch.manual_seed(0)
    model = ChordModel(build_student(student, size, 25), stats.mean, stats.std)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "chordkd": {"format": CHECKPOINT_FORMAT, "student": student, "size": size,
                    "vocabulary": "majmin", "n_classes": 25, "overrides": {},
                    "model": model.config, "features": settings.to_dict(),
                    "encoder_only": True, "pretraining": "none (random initialisation)"},
    }, path)
    return path


class MadmomFeatures(nn.Module):
    """madmom's chord-CRF input features as a waveform embedding module (10 fps)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        from chordkd.teachers.madmom import MADMOM_FPS, MadmomTeacher

        self.teacher = MadmomTeacher(kind)
        self.hop_seconds = 1.0 / MADMOM_FPS
        self.offset_seconds = 0.0

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[1, samples]`` at 22,050 Hz -> ``[T', D]``."""
        return torch.from_numpy(np.ascontiguousarray(self.teacher.frame_features(waveform[0])))


def madmom_cnn() -> MadmomFeatures:
    return MadmomFeatures("cnn")


def madmom_deepchroma() -> MadmomFeatures:
    return MadmomFeatures("deepchroma")


class LogCQTFeatures(nn.Module):
    """chordkd's log-CQT, the students' input, as a waveform embedding module."""

    def __init__(self) -> None:
        super().__init__()
        from chordkd.features import FeatureSettings, LogCQT

        settings = FeatureSettings()
        self.cqt = LogCQT(settings)
        self.hop_seconds = settings.frame_seconds
        self.offset_seconds = 0.0

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[1, samples]`` at 22,050 Hz -> ``[T', 144]``."""
        return self.cqt(waveform)[0]


def log_cqt() -> LogCQTFeatures:
    return LogCQTFeatures()
