"""The networks: BTC and 2E1D students at three sizes, and ``ChordModel`` (normalisation + net).

Networks are plain ``nn.Module``s that know nothing of Lightning. Each maps *normalised*
log-CQT frames ``[batch, frames, 144]`` to chord logits ``[batch, frames, n_classes]`` and
offers ``forward_features(x) -> (hidden [B, T, H], logits)`` for feature-space distillation.
``ChordModel`` adds BTC's scalar feature normalisation as buffers, so every checkpoint
carries it and callers always feed raw ``log(|CQT| + 1e-6)`` frames.

Sizes (parameters at 170 classes, from ``parameter_counts()``):

=====  ===============================================  ================================
size   BTC                                              2E1D (temporal + decoder layers)
=====  ===============================================  ================================
small  4 layers, hidden 64, 2 heads: 0.38M              d_model 96, 2 + 2 layers: 0.44M
base   the published BTC: 8 layers, hidden 128,         d_model 192, 4 + 3 layers: 2.72M
       4 heads: 2.94M (3,036,842 with the unused LSTM)
large  12 layers, hidden 192, 6 heads: 9.82M            d_model 320, 5 + 5 layers: 10.7M
=====  ===============================================  ================================

``large`` is for knowledge expansion (a student bigger than its teacher, about 3.5x base).
Every attention layer keeps BTC's 32 dimensions per head.

>>> net = build_student("2e1d", "small", n_classes=25)
>>> rebuilt = build_student(**net.config)
>>> model = ChordModel(net, mean=-5.0, std=2.0)   # model(raw [B, T, 144]) -> [B, T, 25]
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from chordkd.errors import ConfigError
from chordkd.models.btc import BTC
from chordkd.models.official import (
    load_official_btc,
    official_parameter_count,
    save_official_btc,
)
from chordkd.models.two_e_one_d import TwoEncoderOneDecoder

__all__ = [
    "BTC",
    "SIZES",
    "STUDENT_NAMES",
    "ChordModel",
    "TwoEncoderOneDecoder",
    "build_student",
    "count_parameters",
    "load_official_btc",
    "parameter_counts",
    "save_official_btc",
]

_NETWORKS: dict[str, type[nn.Module]] = {"btc": BTC, "2e1d": TwoEncoderOneDecoder}
STUDENT_NAMES: tuple[str, ...] = tuple(_NETWORKS)
SIZES: tuple[str, ...] = ("small", "base", "large")

# Constructor arguments per size; anything not given is the class default (= base).
_SIZE_ARGS: dict[str, dict[str, dict[str, Any]]] = {
    "btc": {
        "small": {
            "hidden_size": 64,
            "num_layers": 4,
            "num_heads": 2,
            "total_key_depth": 64,
            "total_value_depth": 64,
            "filter_size": 64,
        },
        "base": {},
        "large": {
            "hidden_size": 192,
            "num_layers": 12,
            "num_heads": 6,
            "total_key_depth": 192,
            "total_value_depth": 192,
            "filter_size": 192,
        },
    },
    "2e1d": {
        "small": {
            "d_model": 96,
            "num_heads": 3,
            "ffn_size": 192,
            "temporal_layers": 2,
            "decoder_layers": 2,
            "freq_size": 32,
            "freq_heads": 1,
            "freq_ffn_size": 64,
            "freq_layers": 1,
        },
        "base": {},
        "large": {
            "d_model": 320,
            "num_heads": 10,
            "ffn_size": 640,
            "temporal_layers": 5,
            "decoder_layers": 5,
            "freq_size": 96,
            "freq_heads": 3,
            "freq_ffn_size": 192,
        },
    },
}


def build_student(
    name: str, size: str = "base", n_classes: int = 170, **overrides: Any
) -> nn.Module:
    """A freshly initialised student network.

    ``name``: ``"btc"`` or ``"2e1d"``; ``size``: ``"small"``, ``"base"`` or ``"large"``;
    ``overrides``: constructor arguments of that network (e.g. ``num_layers=6``,
    ``layer_dropout=0.1``) applied on top of the size. ``build_student(**net.config)``
    rebuilds a network from its ``config``. Unknown names, sizes or arguments raise
    ``ConfigError`` naming the field and the allowed values.
    """
    if name not in _NETWORKS:
        raise ConfigError(f"name: unknown student {name!r}; allowed: {', '.join(STUDENT_NAMES)}")
    if size not in SIZES:
        raise ConfigError(f"size: unknown size {size!r}; allowed: {', '.join(SIZES)}")
    network = _NETWORKS[name]
    allowed = [p for p in inspect.signature(network).parameters if p != "n_classes"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown option for {name}; allowed: {', '.join(allowed)}"
        )
    return network(n_classes=n_classes, **{**_SIZE_ARGS[name][size], **overrides})


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``net``."""
    return sum(p.numel() for p in net.parameters())


def parameter_counts(n_classes: int = 170) -> list[dict[str, Any]]:
    """One row per student and size: ``name``, ``size``, ``n_classes``, ``parameters``.

    BTC rows also give ``official_parameters``: the count of the official code, which
    includes its output layer's unused LSTM.
    """
    rows = []
    for name in STUDENT_NAMES:
        for size in SIZES:
            net = build_student(name, size, n_classes)
            row: dict[str, Any] = {
                "name": name,
                "size": size,
                "n_classes": n_classes,
                "parameters": count_parameters(net),
            }
            if isinstance(net, BTC):
                row["official_parameters"] = official_parameter_count(net)
            rows.append(row)
    return rows


class ChordModel(nn.Module):
    """A network with BTC's scalar feature normalisation: raw log-CQT in, logits out.

    ``forward(raw [B, T, 144]) -> logits [B, T, C]`` computes ``net((raw - mean) / std)``.
    ``mean`` and ``std`` are 0-d float32 buffers, so they are saved in every state_dict
    (as ``mean`` and ``std``, beside ``net.*``) and follow the module across devices.
    """

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        mean, std = float(mean), float(std)
        if not math.isfinite(mean):
            raise ConfigError(f"mean: must be a finite number, got {mean}")
        if not (math.isfinite(std) and std > 0):
            raise ConfigError(f"std: must be a positive finite number, got {std}")
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    @property
    def n_classes(self) -> int:
        return self.net.n_classes

    @property
    def config(self) -> dict[str, Any]:
        """Plain-dict description; ``ChordModel.from_config(model.config)`` rebuilds it."""
        return {"net": self.net.config, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ChordModel:
        """A freshly initialised ``ChordModel`` from ``config`` (weights not included)."""
        missing = [key for key in ("net", "mean", "std") if key not in config]
        if missing:
            raise ConfigError(f"{missing[0]}: missing from the ChordModel config")
        return cls(build_student(**config["net"]), config["mean"], config["std"])

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """``(raw - mean) / std``, ``[B, T, 144]`` (in ``raw``'s dtype)."""
        return (raw - self.mean.to(raw.dtype)) / self.std.to(raw.dtype)

    def forward_features(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-CQT ``[B, T, 144]`` -> (last hidden layer ``[B, T, H]``, logits ``[B, T, C]``)."""
        return self.net.forward_features(self.normalise(raw))

    def hidden(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw log-CQT ``[B, T, 144]`` -> the network's last hidden layer ``[B, T, H]``."""
        return self.forward_features(raw)[0]

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw log-CQT ``[B, T, 144]`` -> logits ``[B, T, C]``."""
        return self.net(self.normalise(raw))
