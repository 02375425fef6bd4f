"""Adapter: any model built by ``package.module:factory`` as a teacher, and the one parser of
such specs (also used by ``chordkd label --embedding-module``).

``factory()`` returns a callable (usually an ``nn.Module``, which Lightning then moves to the
device) that maps a mono waveform ``[1, samples]`` float32 to per-frame logits ``[T', C']``
(or ``[1, T', C']``), with these attributes:

- ``classes``: ``C'`` Harte labels, one per output column, in the model's order (``"N"`` for
  no chord; ``"X"`` maps to the large vocabulary's X class);
- ``hop_seconds``: its frame period in seconds; ``offset_seconds`` (default 0): the centre of
  its frame 0 (a model whose frame ``j`` spans ``[j * hop, (j + 1) * hop)`` sets ``hop / 2``);
- ``sample_rate`` (default 22,050): the rate it wants; chordkd resamples (torchaudio);
- ``vocabulary`` (optional): ``"majmin"`` or ``"large"``; by default ``majmin`` when the
  classes stay distinct in it, else ``large``.

The logits are mapped into the vocabulary and onto chordkd's grid as in
:mod:`chordkd.teachers.base`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from chordkd.audio import resample
from chordkd.chords import VOCABULARIES, get_vocabulary
from chordkd.errors import ChordkdError, ConfigError
from chordkd.teachers.base import GRID, ClassMap, Teacher, to_grid

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` has the form ``package.module:factory`` (dotted names, one colon)."""
    return bool(_SPEC.match(spec))


def import_factory(spec: str, flag: str = "--teacher") -> Callable[[], Any]:
    """The callable named by ``package.module:factory``; ConfigError naming ``flag`` and the
    spec when it is malformed, cannot be imported, or names no callable."""
    if not is_factory_spec(spec):
        raise ConfigError(f"{flag} {spec!r}: expected MODULE:FACTORY "
                          "(e.g. mypackage.models:build)")
    mod_name, _, factory_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{flag} {spec!r}: cannot import {mod_name!r} ({e})") from None
    factory = getattr(mod, factory_name, None)
    if not callable(factory):
        raise ConfigError(f"{flag} {spec!r}: {mod_name} has no callable {factory_name!r}")
    return factory


def positive_seconds(value: Any, spec: str, name: str, flag: str = "--teacher") -> float:
    """``value`` as a finite positive float, else ConfigError naming the spec and attribute."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{flag} {spec}: the model needs an attribute {name} "
                          f"(its frame period in seconds, > 0), got {value!r}")
    return seconds


def module_identity(spec: str, module: Any) -> str:
    """sha1 of a model's spec, timing, class source and weights: a rerun with the same model
    skips songs already cached, and any change to code or weights relabels them."""
    h = hashlib.sha1(spec.encode())
    h.update(repr((getattr(module, "hop_seconds", None),
                   getattr(module, "offset_seconds", 0.0))).encode())
    teacher_attrs = tuple(getattr(module, a, None) for a in ("sample_rate", "classes", "vocabulary"))
    if any(a is not None for a in teacher_attrs):  # (embedding modules keep their old identity)
        h.update(repr(teacher_attrs).encode())
    try:
        h.update(inspect.getsource(type(module)).encode())
    except (OSError, TypeError):  # classes defined in a REPL have no source file
        h.update(type(module).__qualname__.encode())
    state = module.state_dict() if isinstance(module, nn.Module) else {}
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "module-" + h.hexdigest()


class FactoryTeacher(Teacher):
    """A user model as a teacher (see the module docstring for what it must provide)."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        model = import_factory(spec)()
        if not callable(model):
            raise ConfigError(f"--teacher {spec!r}: the factory returned "
                              f"{type(model).__name__}, which is not callable")
        if isinstance(model, nn.Module):
            model.eval()
        self.model = model
        self.spec = spec
        self.hop_seconds = positive_seconds(getattr(model, "hop_seconds", None), spec, "hop_seconds")
        self.offset_seconds = float(getattr(model, "offset_seconds", 0.0))
        self.sample_rate = int(getattr(model, "sample_rate", GRID.sr))
        labels = getattr(model, "classes", None)
        if not labels or isinstance(labels, str):
            raise ConfigError(f"--teacher {spec}: the model needs an attribute classes (one "
                              "Harte label per output column, e.g. ['C:maj', ..., 'N'])")
        vocabulary = getattr(model, "vocabulary", None) or _smallest_vocabulary(labels)
        if vocabulary not in VOCABULARIES:
            raise ConfigError(f"--teacher {spec}: vocabulary {vocabulary!r} is not one of "
                              f"{', '.join(VOCABULARIES)}")
        self.vocabulary = vocabulary
        self.classes = ClassMap(labels, vocabulary, f"--teacher {spec}")
        self.identity = module_identity(spec, model)
        self.input_fingerprint = f"waveform-{self.sample_rate}Hz/grid-{GRID.fingerprint()}"
        self.description = f"module {spec} ({len(labels)} classes -> {vocabulary})"

    @torch.no_grad()
    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        n = waveform.shape[0]
        w = waveform.float()
        if self.sample_rate != GRID.sr:
            w = torch.from_numpy(resample(w.cpu().numpy(), GRID.sr, self.sample_rate))
        if isinstance(self.model, nn.Module):
            w = w.to(self.device)
        out = self.model(w[None])
        if isinstance(out, torch.Tensor) and out.dim() == 3 and out.shape[0] == 1:
            out = out[0]
        n_classes = len(self.classes.labels)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] == 0 \
                or out.shape[1] != n_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ChordkdError(f"--teacher {self.spec}: returned {shape} for {n} samples; "
                               f"expected [frames, {n_classes}] (one column per class)")
        mapped = self.classes(out.float())
        grid = to_grid(mapped, self.hop_seconds, GRID.n_frames(n), self.offset_seconds)
        return self.check_logits(grid.to(waveform.device), n)


def _smallest_vocabulary(labels: list[str]) -> str:
    try:
        distinct = len(set(get_vocabulary("majmin").encode_many(labels).tolist())) == len(labels)
    except ChordkdError:
        distinct = False
    return "majmin" if distinct else "large"
