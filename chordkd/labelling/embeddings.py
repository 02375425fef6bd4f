"""Teacher embeddings for feature-space distillation: ``chordkd label --embeddings``.

An *embedding* is one song's sequence of feature vectors ``[T', D]`` at its own frame period
``hop_seconds``; frame ``j`` is centred at ``offset_seconds + j * hop_seconds`` seconds (chordkd's
frame convention, in which ``offset_seconds`` is 0). Two sources:

- a chordkd teacher (``--teacher CKPT``: a chordkd checkpoint or an official BTC file): the
  network's last hidden layer (``ChordModel.forward_features``), computed on whole songs in the
  same 108-frame windows, stitched by nearest window centre, as the logits are
  (:func:`chordkd.inference.song_logits`). Its frames are chordkd's own (hop / sr = 0.0929 s,
  offset 0), so ``T'`` is the song's frame count ``T``.
- any torch module (``--embedding-module package.module:factory``): ``factory()`` returns an
  ``nn.Module`` that maps a mono waveform ``[1, samples]`` float32 at 22,050 Hz to ``[T', D]``
  (or ``[1, T', D]``) and has an attribute ``hop_seconds`` (its frame period, seconds) and
  optionally ``offset_seconds`` (centre of its frame 0, default 0; a model whose frame ``j``
  spans ``[j * hop, (j + 1) * hop)`` sets ``hop / 2``). The input is the waveform, not log-CQT,
  so pretrained audio-embedding models plug in unchanged (resampling inside if they need).

Embeddings are records of kind ``"embeddings"`` in the teacher-cache machinery
(:mod:`chordkd.labelling.teacher_cache`): ``values`` float16 ``[T', D]``, with ``hop_seconds``,
``offset_seconds``, ``dim`` and ``source`` in the entry's ``extra``. Writing is sharded,
journaled and kill-safe, and a rerun skips the songs already embedded by the same source
(checkpoint sha1, or the module's spec, code and weights) with unchanged audio, exactly as
for logits. :class:`EmbeddingCache` reads them back.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from chordkd.audio import SAMPLE_RATE
from chordkd.data.manifest import Song, read_manifest
from chordkd.errors import CacheError, ChordkdError, ConfigError
from chordkd.features import FeatureSettings, LogCQT
from chordkd.inference import songs_logits
from chordkd.labelling.label import (
    CacheWriterCallback,
    LabelReport,
    predict_into_cache,
    songs_to_label,
)
from chordkd.labelling.teacher_cache import (
    AudioFingerprint,
    CacheEntry,
    CacheWriter,
    TeacherCache,
    file_sha1,
)
from chordkd.models import ChordModel
from chordkd.teachers.factory import import_factory, module_identity, positive_seconds

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings"
# The "features" fingerprint of a waveform module's records: its input is the raw waveform.
WAVEFORM_INPUT = f"waveform-{SAMPLE_RATE}Hz"


def network_blocks(net: nn.Module) -> nn.ModuleList:
    """The main stack of a student network, whose outputs ``layer=k`` picks: BTC's
    self-attention layers, 2E1D's decoder layers."""
    blocks = getattr(getattr(net, "self_attn_layers", None), "self_attn_layers", None)
    return blocks if blocks is not None else net.decoder


def check_layer(layer: str, net: nn.Module, where: str) -> str:
    """``layer`` if ``net`` has it: ``last`` (last hidden layer), ``logits``, or ``k`` (1-based
    output of block ``k`` of :func:`network_blocks`); else ConfigError naming ``where``."""
    n = len(network_blocks(net))
    if layer in ("last", "logits") or (layer.isdigit() and 1 <= int(layer) <= n):
        return layer
    raise ConfigError(f"{where}: layer {layer!r} is not last, logits or a block 1..{n}")


class HiddenLayer(nn.Module):
    """A ``ChordModel`` seen through one layer: raw log-CQT ``[B, T, 144]`` -> ``[B, T, H]``
    (so the windowing of :func:`songs_logits` applies unchanged). ``layer``: see
    :func:`check_layer` (default ``last``, the last hidden layer)."""

    def __init__(self, model: ChordModel, layer: str = "last") -> None:
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.layer in ("last", "logits"):
            return self.model.forward_features(raw)[self.layer == "logits"]
        seen: list[torch.Tensor] = []
        block = network_blocks(self.model.net)[int(self.layer) - 1]
        handle = block.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            self.model.forward_features(raw)
        finally:
            handle.remove()
        return seen[0]


class TeacherHidden(nn.Module):
    """Waveforms -> a chordkd model's last hidden layer ``[T, H]`` per song, on chordkd's frames."""

    def __init__(self, model: ChordModel, features: FeatureSettings, layer: str = "last") -> None:
        super().__init__()
        self.cqt = LogCQT(features)
        self.hidden = HiddenLayer(model.eval(), layer)
        self.hop_seconds = features.frame_seconds
        self.offset_seconds = 0.0
        what = "last hidden layer" if layer == "last" else f"layer {layer}"
        self.description = f"teacher {what} ({type(model.net).__name__})"

    def embed(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[n_samples]`` float32 per song -> ``[T, H]`` float32 per song."""
        return songs_logits(self.hidden, [self.cqt(w) for w in waveforms])


class WaveformEmbedding(nn.Module):
    """A user module mapping a waveform ``[1, samples]`` at 22,050 Hz to ``[T', D]``."""

    def __init__(self, module: nn.Module, spec: str) -> None:
        super().__init__()
        self.module = module.eval()
        self.spec = spec
        self.hop_seconds = _positive_seconds(getattr(module, "hop_seconds", None), spec, "hop_seconds")
        self.offset_seconds = float(getattr(module, "offset_seconds", 0.0))
        if not math.isfinite(self.offset_seconds):
            raise ConfigError(f"--embedding-module {spec}: offset_seconds must be finite")
        self.description = f"module {spec}"

    def embed(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for w in waveforms:
            e = self.module(w[None].float())
            if e.dim() == 3 and e.shape[0] == 1:
                e = e[0]
            if e.dim() != 2 or e.shape[0] == 0:
                raise ChordkdError(f"--embedding-module {self.spec}: returned shape "
                                   f"{tuple(e.shape)} for {w.shape[0]} samples; expected [T', D]")
            out.append(e.float())
        return out


def _positive_seconds(value, spec: str, name: str) -> float:
    return positive_seconds(value, spec, name, flag="--embedding-module")


def load_embedding_module(spec: str) -> nn.Module:
    """Import ``package.module:factory`` and return ``factory()`` (an ``nn.Module``, eval mode).

    Raises ConfigError naming the spec when it cannot be imported, is not callable, does not
    return a module or lacks ``hop_seconds``.
    """
    module = import_factory(spec, flag="--embedding-module")()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"--embedding-module {spec!r}: {spec.partition(':')[2]}() returned "
                          f"{type(module).__name__}, not a torch.nn.Module")
    _positive_seconds(getattr(module, "hop_seconds", None), spec, "hop_seconds")
    return module.eval()


class EmbeddingLabeller(pl.LightningModule):
    """Holds an embedding source (so Lightning moves it to the device). ``predict_step`` maps
    a list of songs to per-song dicts with ``values`` float16 ``[T', D]`` on the CPU."""

    def __init__(self, source: TeacherHidden | WaveformEmbedding) -> None:
        super().__init__()
        self.source = source

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        good = [item for item in batch if item["error"] is None]
        embedded = self.source.embed([item["waveform"].to(self.device) for item in good])
        by_song = dict(zip((item["song"] for item in good), embedded))
        out = []
        for item in batch:
            if item["error"] is not None:
                out.append(item)
                continue
            values = by_song[item["song"]].half()
            if not bool(torch.isfinite(values).all()):
                raise ChordkdError(f"{item['audio']}: the embedding has values beyond the "
                                   "float16 range (|x| > 65504) or NaN; scale the embedding")
            out.append({**item, "waveform": None, "n_samples": int(item["waveform"].shape[0]),
                        "values": values.cpu()})
        return out


class EmbeddingWriterCallback(CacheWriterCallback):
    """:class:`CacheWriterCallback` writing ``"embeddings"`` records with their frame timing."""

    def write_song(self, song: dict, pl_module: pl.LightningModule) -> None:
        src = pl_module.source
        write_embedding(
            self.writer, song["song"], song["values"].numpy(), src.hop_seconds,
            offset_seconds=src.offset_seconds, audio=AudioFingerprint(**song["fingerprint"]),
            teacher=self.report.teacher, features=self.report.features, source=src.description,
        )


def write_embedding(
    writer: CacheWriter, song: str, values: np.ndarray, hop_seconds: float, *,
    offset_seconds: float = 0.0, audio: AudioFingerprint, teacher: str, features: str,
    source: str = "",
) -> CacheEntry:
    """Append one song's embedding ``values`` ``[T', D]`` (stored float16) with its frame
    timing: the single definition of an ``"embeddings"`` record."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] == 0:
        raise CacheError(f"{song}: an embedding must be [T', D], got shape {values.shape}")
    return writer.write(
        song, EMBEDDINGS, {"values": values.astype(np.float16)}, frames=values.shape[0], k=0,
        n_classes=0, audio=audio, teacher=teacher, features=features,
        extra={"hop_seconds": float(hop_seconds), "offset_seconds": float(offset_seconds),
               "dim": int(values.shape[1]), "source": source},
    )


def embed_corpus(
    songs: list[Song] | str | os.PathLike,
    out: str | os.PathLike,
    teacher: str | os.PathLike | None = None,
    module: str | None = None,
    strict: bool = False,
    batch_size: int = 1,
    num_workers: int = 1,
    trainer_kwargs: dict | None = None,
    layer: str = "last",
) -> LabelReport:
    """Cache the embeddings of ``songs`` (a list, a manifest or a folder) into ``out``.

    Exactly one source: ``teacher`` (a chordkd checkpoint or an official BTC file; its
    ``layer``, see :func:`check_layer`) or ``module`` (``"package.module:factory"``, see the
    module docstring).
    Returns the report (also written to ``out/label_report.json``, ``kind`` "embeddings").
    ``trainer_kwargs`` go to ``lightning.Trainer``; ``batch_size`` counts songs.
    """
    if (teacher is None) == (module is None):
        raise ConfigError("embeddings need exactly one source: --teacher CKPT or "
                          "--embedding-module MODULE:FACTORY")
    start = time.perf_counter()
    out = Path(out)
    if not isinstance(songs, list):
        songs = read_manifest(songs)
    if teacher is not None:
        from chordkd.models.loading import load_model

        loaded = load_model(teacher)
        layer = check_layer(str(layer), loaded.model.net, str(teacher))
        source: TeacherHidden | WaveformEmbedding = TeacherHidden(loaded.model, loaded.features,
                                                                  layer)
        identity, features, sr = file_sha1(teacher), loaded.features.fingerprint(), loaded.features.sr
        if layer != "last":  # another layer of the same file is another source
            identity = f"{identity}@{layer}"
    else:
        source = WaveformEmbedding(load_embedding_module(module), module)
        identity, features, sr = module_identity(module, source.module), WAVEFORM_INPUT, SAMPLE_RATE
    report = LabelReport(str(out), identity, features, topk=0, kind=EMBEDDINGS)
    todo, report.skipped = songs_to_label(songs, out, identity, features, kind=EMBEDDINGS)
    log.info("%d songs to embed, %d already cached", len(todo), len(report.skipped))
    return predict_into_cache(
        todo, out, report, start, lambda: EmbeddingWriterCallback(out, report, sr, strict, start),
        lambda: EmbeddingLabeller(source), sr, batch_size, num_workers, trainer_kwargs,
    )


class EmbeddingCache:
    """Reader of an embeddings cache: one ``[T', D]`` float16 array per song, one frame rate.

    >>> emb = EmbeddingCache("runs/teacher_cache/train_embeddings")
    >>> emb.hop_seconds, emb.dim, emb.read("song-001").shape   # (0.0929, 64, (431, 64))
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = Path(path)
        self.cache = TeacherCache(self.root, kind=EMBEDDINGS)
        if not len(self.cache):
            raise CacheError(f"{self.root}: holds no embeddings (write them with "
                             "`chordkd label --embeddings`)")
        timings = {self._timing(self.cache.entry(s)) for s in self.cache.song_ids}
        if len(timings) != 1:
            raise CacheError(f"{self.root}: songs disagree on (hop_seconds, offset_seconds, "
                             f"dim): {sorted(timings)}")
        ((self.hop_seconds, self.offset_seconds, self.dim),) = timings

    def _timing(self, e: CacheEntry) -> tuple[float, float, int]:
        try:
            return (float(e.extra["hop_seconds"]), float(e.extra.get("offset_seconds", 0.0)),
                    int(e.extra["dim"]))
        except (KeyError, TypeError, ValueError):
            raise CacheError(f"{self.root}: song {e.song!r}: embedding entry without "
                             "hop_seconds and dim") from None

    @property
    def song_ids(self) -> list[str]:
        return self.cache.song_ids

    def __contains__(self, song_id: object) -> bool:
        return song_id in self.cache

    def __len__(self) -> int:
        return len(self.cache)

    def frames(self, song_id: str) -> int:
        """Embedding frames ``T'`` of one song."""
        return self.cache.frames(song_id)

    def read(self, song_id: str) -> np.ndarray:
        """One song's embedding, float16 ``[T', D]``, memory-mapped (read-only)."""
        return self.cache.arrays(song_id)["values"]
