"""BTC, the Bi-directional Transformer for Chord recognition (Park et al., ISMIR 2019).

A re-implementation of the official network (jayg996/BTC-ISMIR19: ``btc_model.py``,
``utils/transformer_modules.py``) whose module tree has the official *parameter names*, so
the release checkpoints load into it unchanged (``chordkd.models.official``). Details kept
from the official code because the released weights depend on them:

- ``LayerNorm`` divides by the *unbiased* standard deviation plus ``eps`` (not by
  ``sqrt(var + eps)`` as ``torch.nn.LayerNorm`` does), with parameters ``gamma``/``beta``;
- each layer runs two pre-norm self-attention blocks on the same input, one that attends to
  frames ``j <= i`` (``attn_block``) and one to ``j >= i`` (``backward_attn_block``), and
  mixes their outputs with a linear layer ``[2H -> H]``;
- a block's residual sums are themselves dropped out (``dropout(x + y)``), and its
  position-wise feed-forward is two width-3 convolutions along time, *each* followed by ReLU
  and dropout (the official loop applies them after the last convolution too);
- the input projection has no bias; the sinusoidal timing signal is tensor2tensor's
  (sines then cosines, not interleaved) and is added, not concatenated;
- the final hidden state is layer-normalised, then ``output_layer.output_projection`` gives
  the logits. The official ``output_layer`` also holds a bidirectional LSTM that is never
  called; it has no place here, and ``official.py`` ignores exactly its weights by name.

Unlike the official code, the timing signal and the attention masks are computed for any
number of frames, so the network runs on 108-frame training windows and on longer inputs
alike; the timing signal is precomputed for ``max_frames`` frames, which is also the longest
input a ``torch.export`` with a dynamic frame count accepts. Attention uses ``scaled_dot_product_attention`` with boolean masks, which gives the official
matmul-softmax-matmul's numbers (to ~1e-6) and can use fused kernels where the device has
them; ``bench/models_speed.py`` times both on CPU.

Hyperparameter names follow the official ``run_config.yaml`` (``hidden_size``,
``total_key_depth``, ...), except ``n_classes`` (``num_chords``) and ``max_frames``
(``timestep``). ``BTC()`` with no arguments is the published size (3,036,842 parameters at
170 classes counting the unused LSTM; 2,937,514 in this module).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chordkd.errors import ConfigError

N_BINS = 144  # BTC's CQT: 6 octaves at 24 bins per octave


def timing_signal(n_frames: int, channels: int) -> torch.Tensor:
    """The sinusoidal position signal of BTC (tensor2tensor's), ``[n_frames, channels]`` float32.

    Column ``c < channels // 2`` is ``sin(t * w_c)`` and column ``channels // 2 + c`` is
    ``cos(t * w_c)``, with ``w_c`` geometric from 1 to 1e-4 rad per frame; an odd channel
    count gets a zero last column. Computed in float64 like the official NumPy code.
    """
    half = channels // 2
    log_step = math.log(1.0e4) / max(half - 1, 1)
    inv_timescales = torch.exp(torch.arange(half, dtype=torch.float64) * -log_step)
    scaled = torch.arange(n_frames, dtype=torch.float64)[:, None] * inv_timescales[None, :]
    signal = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)
    signal = F.pad(signal, (0, channels % 2))
    return signal.float()


def direction_masks(
    n_frames: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean attention masks ``[n_frames, n_frames]`` (True = may attend).

    The forward mask lets frame ``i`` see frames ``j <= i``; the backward mask ``j >= i``.
    """
    allowed = torch.ones(n_frames, n_frames, dtype=torch.bool, device=device)
    return allowed.tril(), allowed.triu()


class LayerNorm(nn.Module):
    """BTC's layer norm over the last axis: ``gamma * (x - mean) / (std + eps) + beta``.

    ``std`` is the unbiased (n - 1) standard deviation, as in the official code.
    """

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class MultiHeadAttention(nn.Module):
    """Masked multi-head self-attention without biases: ``[B, T, H] -> [B, T, H]``."""

    def __init__(
        self, hidden_size: int, key_depth: int, value_depth: int, num_heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.query_linear = nn.Linear(hidden_size, key_depth, bias=False)
        self.key_linear = nn.Linear(hidden_size, key_depth, bias=False)
        self.value_linear = nn.Linear(hidden_size, value_depth, bias=False)
        self.output_linear = nn.Linear(value_depth, hidden_size, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query_linear(x))
        k = self._heads(self.key_linear(x))
        v = self._heads(self.value_linear(x))
        # default scale 1/sqrt(key depth per head) = the official query_scale
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, _, t, _ = context.shape
        return self.output_linear(context.transpose(1, 2).reshape(b, t, -1))


class TimeConv(nn.Module):
    """A width-``kernel`` convolution along time with zero padding, on ``[B, C, T]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        # the official Conv pads (k // 2, (k - 1) // 2): symmetric for odd k
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PositionwiseConvolution(nn.Module):
    """Conv-ReLU-dropout twice along time: ``[B, T, H] -> [B, T, H]`` (official ``'cc'``)."""

    def __init__(self, hidden_size: int, filter_size: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [TimeConv(hidden_size, filter_size), TimeConv(filter_size, hidden_size)]
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # convolve [B, H, T] once instead of permuting per layer
        for layer in self.layers:
            x = self.dropout(F.relu(layer(x)))
        return x.transpose(1, 2)


class SelfAttentionBlock(nn.Module):
    """Pre-norm masked self-attention then position-wise convolution, ``[B, T, H]``."""

    def __init__(
        self,
        hidden_size: int,
        key_depth: int,
        value_depth: int,
        filter_size: int,
        num_heads: int,
        layer_dropout: float,
        attention_dropout: float,
        relu_dropout: float,
    ) -> None:
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(
            hidden_size, key_depth, value_depth, num_heads, attention_dropout
        )
        self.positionwise_convolution = PositionwiseConvolution(
            hidden_size, filter_size, relu_dropout
        )
        self.dropout = nn.Dropout(layer_dropout)
        self.layer_norm_mha = LayerNorm(hidden_size)
        self.layer_norm_ffn = LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x + self.multi_head_attention(self.layer_norm_mha(x), mask))
        return self.dropout(x + self.positionwise_convolution(self.layer_norm_ffn(x)))


class BidirectionalLayer(nn.Module):
    """One BTC layer: forward- and backward-masked blocks, concatenated, ``[2H -> H]``."""

    def __init__(self, hidden_size: int, *block_args: Any) -> None:
        super().__init__()
        self.attn_block = SelfAttentionBlock(hidden_size, *block_args)
        self.backward_attn_block = SelfAttentionBlock(hidden_size, *block_args)
        self.linear = nn.Linear(2 * hidden_size, hidden_size)

    def forward(
        self, x: torch.Tensor, forward_mask: torch.Tensor, backward_mask: torch.Tensor
    ) -> torch.Tensor:
        both = torch.cat(
            [self.attn_block(x, forward_mask), self.backward_attn_block(x, backward_mask)], dim=-1
        )
        return self.linear(both)


class BidirectionalEncoder(nn.Module):
    """Input projection + timing signal + BTC layers + layer norm: ``[B, T, F] -> [B, T, H]``."""

    def __init__(
        self,
        feature_size: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        key_depth: int,
        value_depth: int,
        filter_size: int,
        max_frames: int,
        input_dropout: float,
        layer_dropout: float,
        attention_dropout: float,
        relu_dropout: float,
    ) -> None:
        super().__init__()
        block_args = (
            key_depth,
            value_depth,
            filter_size,
            num_heads,
            layer_dropout,
            attention_dropout,
            relu_dropout,
        )
        self.embedding_proj = nn.Linear(feature_size, hidden_size, bias=False)
        self.self_attn_layers = nn.ModuleList(
            [BidirectionalLayer(hidden_size, *block_args) for _ in range(num_layers)]
        )
        self.layer_norm = LayerNorm(hidden_size)
        self.input_dropout = nn.Dropout(input_dropout)
        # Precomputed for training windows (longer inputs compute their own); not
        # persistent, so not in the state_dict, as in the official checkpoints.
        self.register_buffer(
            "timing_signal", timing_signal(max_frames, hidden_size), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frames = x.shape[1]
        if n_frames <= self.timing_signal.shape[0]:
            signal = self.timing_signal[:n_frames]
        else:
            signal = timing_signal(n_frames, self.timing_signal.shape[1]).to(x.device)
        forward_mask, backward_mask = direction_masks(n_frames, x.device)
        x = self.embedding_proj(self.input_dropout(x)) + signal.to(x.dtype)
        for layer in self.self_attn_layers:
            x = layer(x, forward_mask, backward_mask)
        return self.layer_norm(x)


class OutputLayer(nn.Module):
    """``output_projection``: ``[B, T, H] -> [B, T, C]`` logits."""

    def __init__(self, hidden_size: int, n_classes: int) -> None:
        super().__init__()
        self.output_projection = nn.Linear(hidden_size, n_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output_projection(hidden)


class BTC(nn.Module):
    """BTC: normalised log-CQT ``[B, T, feature_size]`` -> chord logits ``[B, T, n_classes]``.

    ``T`` is free: 108-frame windows in training (``max_frames`` precomputes their timing
    signal and masks), any length at inference. ``config`` holds every constructor argument
    plus ``name``, so ``build_student(**net.config)`` rebuilds the same network.
    """

    name = "btc"
    classifier = "output_layer"  # the submodule a self-supervised checkpoint leaves untrained

    def __init__(
        self,
        n_classes: int = 170,
        feature_size: int = N_BINS,
        hidden_size: int = 128,
        num_layers: int = 8,
        num_heads: int = 4,
        total_key_depth: int = 128,
        total_value_depth: int = 128,
        filter_size: int = 128,
        input_dropout: float = 0.2,
        layer_dropout: float = 0.2,
        attention_dropout: float = 0.2,
        relu_dropout: float = 0.2,
        max_frames: int = 108,
    ) -> None:
        super().__init__()
        self._config = {
            "n_classes": n_classes,
            "feature_size": feature_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "total_key_depth": total_key_depth,
            "total_value_depth": total_value_depth,
            "filter_size": filter_size,
            "input_dropout": input_dropout,
            "layer_dropout": layer_dropout,
            "attention_dropout": attention_dropout,
            "relu_dropout": relu_dropout,
            "max_frames": max_frames,
        }
        _validate(self._config)
        self.self_attn_layers = BidirectionalEncoder(
            feature_size,
            hidden_size,
            num_layers,
            num_heads,
            total_key_depth,
            total_value_depth,
            filter_size,
            max_frames,
            input_dropout,
            layer_dropout,
            attention_dropout,
            relu_dropout,
        )
        self.output_layer = OutputLayer(hidden_size, n_classes)

    @property
    def n_classes(self) -> int:
        return self._config["n_classes"]

    @property
    def hidden_size(self) -> int:
        """Width of ``forward_features``' hidden state."""
        return self._config["hidden_size"]

    @property
    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self._config}

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, T, F] normalised -> (last hidden layer [B, T, H], logits [B, T, C])."""
        hidden = self.self_attn_layers(x)
        return hidden, self.output_layer(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, F] normalised log-CQT -> logits [B, T, C]."""
        return self.output_layer(self.self_attn_layers(x))


def _validate(config: dict[str, Any]) -> None:
    for field in (
        "n_classes",
        "feature_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "total_key_depth",
        "total_value_depth",
        "filter_size",
        "max_frames",
    ):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"btc.{field}: must be a positive integer, got {value!r}")
    for field in ("total_key_depth", "total_value_depth"):
        if config[field] % config["num_heads"]:
            raise ConfigError(
                f"btc.{field}: {config[field]} is not divisible by num_heads={config['num_heads']}"
            )
    for field in ("input_dropout", "layer_dropout", "attention_dropout", "relu_dropout"):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"btc.{field}: must be a probability in [0, 1), got {value!r}")
