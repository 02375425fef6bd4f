"""Load any model chordkd can run: a chordkd (Lightning) checkpoint or an official BTC file.

Both are read with ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, never code. A chordkd checkpoint carries a ``chordkd`` block (network config,
vocabulary, feature settings) written by ``StudentModule.on_save_checkpoint``, so the plain
network is rebuilt without Lightning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chordkd.errors import CheckpointError
from chordkd.features import FeatureSettings
from chordkd.models import ChordModel
from chordkd.models.official import load_official_btc, read_checkpoint

VOCABULARY_BY_CLASSES = {170: "large", 25: "majmin"}


@dataclass
class LoadedModel:
    """An eval-mode model with what is needed to run and decode it."""

    model: ChordModel
    vocabulary: str
    features: FeatureSettings
    source: str  # "chordkd" or "official"
    path: Path
    # a self-supervised checkpoint (``chordkd pretrain``): its classifier was never trained
    encoder_only: bool = False


def load_model(path: str | os.PathLike, expected_vocabulary: str | None = None) -> LoadedModel:
    """Load ``path`` (chordkd checkpoint or BTC release file) as an eval-mode ``ChordModel``.

    Raises CheckpointError naming the file for unreadable or truncated files, unknown layouts,
    and a vocabulary other than ``expected_vocabulary`` (not checked for an encoder-only
    checkpoint, whose classifier is replaced by whoever uses it).
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and "chordkd" in ckpt:
        loaded = _from_chordkd(ckpt, path)
    elif isinstance(ckpt, dict) and {"model", "mean", "std"} <= set(ckpt):
        model = load_official_btc(path)
        vocab = VOCABULARY_BY_CLASSES.get(model.n_classes)
        if vocab is None:
            raise CheckpointError(f"{path}: {model.n_classes} classes match no chordkd vocabulary")
        loaded = LoadedModel(model, vocab, FeatureSettings(), "official", path)
    else:
        keys = (
            ", ".join(map(repr, list(ckpt)[:6])) if isinstance(ckpt, dict) else type(ckpt).__name__
        )
        raise CheckpointError(
            f"{path}: neither a chordkd checkpoint nor a BTC release file (top level: {keys})"
        )
    if (expected_vocabulary is not None and loaded.vocabulary != expected_vocabulary
            and not loaded.encoder_only):
        from chordkd.chords import get_vocabulary

        need = get_vocabulary(expected_vocabulary).size
        raise CheckpointError(
            f"checkpoint {path} has {loaded.model.n_classes} classes (vocabulary "
            f"{loaded.vocabulary!r}), the vocabulary {expected_vocabulary!r} needs {need}"
        )
    return loaded


def _from_chordkd(ckpt: dict, path: Path) -> LoadedModel:
    meta = ckpt["chordkd"]
    try:
        model = ChordModel.from_config(meta["model"])
        prefix = "model."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        model.load_state_dict(state, strict=True)
        features = FeatureSettings(**meta.get("features", {}))
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: inconsistent chordkd checkpoint ({str(e).splitlines()[0]})"
        ) from None
    return LoadedModel(model.eval(), meta["vocabulary"], features, "chordkd", path,
                       encoder_only=bool(meta.get("encoder_only", False)))
