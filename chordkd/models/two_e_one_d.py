"""2E1D: a two-encoder, one-decoder transformer for chord recognition.

Normalised log-CQT ``[B, T, 144]`` -> chord logits ``[B, T, C]``, through three parts:

1. **Frequency encoder** (within each frame). A frame's 144 bins are cut into
   ``feature_size // bins_per_token`` = 12 tokens of 12 adjacent bins (half an octave each at
   24 bins per octave); each token is embedded linearly to ``freq_size``, given a *learned*
   position embedding (a token's register is absolute: 12 fixed slots, not a sequence that
   shifts), passed through ``freq_layers`` self-attention layers across the 12 tokens, and
   projected back to 12 bins, so the encoder returns ``[B, T, 144]``. All frames of the
   batch are one batch of 12-token sequences.
2. **Temporal encoder** (across frames). The frame vector is projected to ``d_model``, BTC's
   sinusoidal timing signal is added (any ``T``), and ``temporal_layers`` self-attention layers
   run with *full* (unmasked) attention. BTC gets its bidirectionality from two causally
   masked blocks per layer; here one unmasked block sees both sides at half the cost, so the
   comparison with BTC is between architectures rather than between masking schemes.
3. **Decoder.** Its input is the sum of both encoders' outputs, each projected to ``d_model``
   (``[B, T, 144] -> d_model`` and ``d_model -> d_model``); ``decoder_layers`` layers of
   self-attention over that sum, cross-attention to the temporal encoder's output, and a
   feed-forward layer; then a layer norm and a linear head to ``n_classes``.

Every attention layer is a standard pre-norm transformer layer (``torch.nn``'s encoder and
decoder layers with ``norm_first=True``, GELU feed-forward); each stack ends with a layer
norm. Defaults (the ``base`` size of ``chordkd.models.build_student``, comparable in
parameters to BTC base): ``d_model`` 192, 6 heads, feed-forward 384, 4 temporal and 3 decoder
layers; frequency encoder width 64, 2 heads, feed-forward 128, 2 layers; dropout 0.2
everywhere (BTC's value: the students train on the same small data sets as BTC did);
``max_frames`` 108 only sizes the precomputed timing signal, longer inputs compute their own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chordkd.errors import ConfigError
from chordkd.models.btc import N_BINS, timing_signal


def _encoder_layer(width: int, heads: int, ffn: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        width, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
    )


class FrequencyEncoder(nn.Module):
    """Self-attention across frequency tokens within each frame: ``[B, T, F] -> [B, T, F]``."""

    def __init__(
        self,
        feature_size: int,
        bins_per_token: int,
        width: int,
        heads: int,
        ffn: int,
        layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.bins_per_token = bins_per_token
        n_tokens = feature_size // bins_per_token
        self.embed = nn.Linear(bins_per_token, width)
        self.position = nn.Parameter(torch.empty(n_tokens, width))
        nn.init.normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [_encoder_layer(width, heads, ffn, dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(width)
        self.unembed = nn.Linear(width, bins_per_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        tokens = x.reshape(b * t, f // self.bins_per_token, self.bins_per_token)
        h = self.dropout(self.embed(tokens) + self.position)
        for layer in self.layers:
            h = layer(h)
        return self.unembed(self.norm(h)).reshape(b, t, f)


class TemporalEncoder(nn.Module):
    """Full self-attention across frames: ``[B, T, F] -> [B, T, d_model]``."""

    def __init__(
        self,
        feature_size: int,
        width: int,
        heads: int,
        ffn: int,
        layers: int,
        dropout: float,
        max_frames: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(feature_size, width)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [_encoder_layer(width, heads, ffn, dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(width)
        self.register_buffer("timing_signal", timing_signal(max_frames, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = x.shape[1]
        if n_frames <= self.timing_signal.shape[0]:
            signal = self.timing_signal[:n_frames]
        else:
            signal = timing_signal(n_frames, self.timing_signal.shape[1]).to(x.device)
        h = self.dropout(self.embed(x) + signal.to(x.dtype))
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class TwoEncoderOneDecoder(nn.Module):
    """2E1D: normalised log-CQT ``[B, T, feature_size]`` -> chord logits ``[B, T, n_classes]``.

    ``config`` holds every constructor argument plus ``name``, so
    ``build_student(**net.config)`` rebuilds the same network.
    """

    name = "2e1d"
    classifier = "head"  # the submodule a self-supervised checkpoint leaves untrained

    def __init__(
        self,
        n_classes: int = 170,
        feature_size: int = N_BINS,
        d_model: int = 192,
        num_heads: int = 6,
        ffn_size: int = 384,
        temporal_layers: int = 4,
        decoder_layers: int = 3,
        bins_per_token: int = 12,
        freq_size: int = 64,
        freq_heads: int = 2,
        freq_ffn_size: int = 128,
        freq_layers: int = 2,
        dropout: float = 0.2,
        max_frames: int = 108,
    ) -> None:
        super().__init__()
        self._config = {
            "n_classes": n_classes,
            "feature_size": feature_size,
            "d_model": d_model,
            "num_heads": num_heads,
            "ffn_size": ffn_size,
            "temporal_layers": temporal_layers,
            "decoder_layers": decoder_layers,
            "bins_per_token": bins_per_token,
            "freq_size": freq_size,
            "freq_heads": freq_heads,
            "freq_ffn_size": freq_ffn_size,
            "freq_layers": freq_layers,
            "dropout": dropout,
            "max_frames": max_frames,
        }
        _validate(self._config)
        self.frequency_encoder = FrequencyEncoder(
            feature_size, bins_per_token, freq_size, freq_heads, freq_ffn_size, freq_layers, dropout
        )
        self.temporal_encoder = TemporalEncoder(
            feature_size, d_model, num_heads, ffn_size, temporal_layers, dropout, max_frames
        )
        self.frequency_proj = nn.Linear(feature_size, d_model)
        self.temporal_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.ModuleList(
            [
                nn.TransformerDecoderLayer(
                    d_model,
                    num_heads,
                    ffn_size,
                    dropout,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(decoder_layers)
            ]
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    @property
    def n_classes(self) -> int:
        return self._config["n_classes"]

    @property
    def hidden_size(self) -> int:
        """Width of ``forward_features``' hidden state."""
        return self._config["d_model"]

    @property
    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self._config}

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T, F] normalised -> (decoder output [B, T, d_model], logits [B, T, C])."""
        memory = self.temporal_encoder(x)
        h = self.dropout(
            self.frequency_proj(self.frequency_encoder(x)) + self.temporal_proj(memory)
        )
        for layer in self.decoder:
            h = layer(h, memory)
        hidden = self.norm(h)
        return hidden, self.head(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, F] normalised log-CQT -> logits [B, T, C]."""
        return self.forward_features(x)[1]


def _validate(config: dict[str, Any]) -> None:
    for field in (
        "n_classes",
        "feature_size",
        "d_model",
        "num_heads",
        "ffn_size",
        "temporal_layers",
        "decoder_layers",
        "bins_per_token",
        "freq_size",
        "freq_heads",
        "freq_ffn_size",
        "freq_layers",
        "max_frames",
    ):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"2e1d.{field}: must be a positive integer, got {value!r}")
    if config["feature_size"] % config["bins_per_token"]:
        raise ConfigError(
            f"2e1d.bins_per_token: {config['bins_per_token']} does not divide "
            f"feature_size={config['feature_size']}"
        )
    for width, heads in (("d_model", "num_heads"), ("freq_size", "freq_heads")):
        if config[width] % config[heads]:
            raise ConfigError(
                f"2e1d.{width}: {config[width]} is not divisible by {heads}={config[heads]}"
            )
    value = config["dropout"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"2e1d.dropout: must be a probability in [0, 1), got {value!r}")
