"""The probes and their one fixed recipe: a linear layer, or one hidden layer of 256 ReLU
units, on standardised frozen embeddings.

Recipe (every encoder and task alike): inputs standardised with the training split's mean
and std; AdamW (fused), lr 3e-3, weight decay 1e-4, 300 steps on batches of up to 1,024
examples drawn with a fixed seed; cross-entropy for classes, mean squared error of the standardised
log2 BPM for tempo. Song-level tasks read the mean and the standard deviation of the song's
frames (``[2 D]``).

Scores: accuracy (frames or songs) for classes; for tempo, the share of test songs within
4% of the true BPM, and apart, the share within 4% of twice or half of it (octave errors).
``chance`` is what the training split's majority class (or median tempo) scores.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from chordkd.training.student import adamw

PROBES = ("linear", "mlp")
HIDDEN = 256
STEPS = 300
BATCH = 1024
LR = 3e-3
WEIGHT_DECAY = 1e-4
TEMPO_TOLERANCE = 0.04


def song_vector(frames: np.ndarray) -> np.ndarray:
    """A song's ``[T', D]`` frames -> ``[2 D]``: their mean and standard deviation."""
    x = np.asarray(frames, dtype=np.float32)
    return np.concatenate([x.mean(0), x.std(0)])


def train_probe(x: np.ndarray, y: np.ndarray, kind: str, n_classes: int | None,
                seed: int = 0) -> callable:
    """Fit a ``kind`` probe (``linear`` | ``mlp``) on ``x`` ``[N, D]`` and ``y`` (class
    indices ``[N]``, or float targets when ``n_classes`` is None); returns ``predict(x)``
    (classes, or float values)."""
    if kind not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    xt = (xt - mean) / std
    regression = n_classes is None
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32 if regression else np.int64))
    if regression:
        y_mean, y_std = yt.mean(), yt.std(unbiased=False).clamp_min(1e-6)
        yt = (yt - y_mean) / y_std
    out = 1 if regression else n_classes
    d = xt.shape[1]
    net = nn.Linear(d, out) if kind == "linear" else nn.Sequential(
        nn.Linear(d, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out))
    opt = adamw(net.parameters(), LR, WEIGHT_DECAY)  # fused: ~3x a per-tensor loop on a CPU
    loss_fn = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    n = xt.shape[0]
    for _ in range(STEPS):
        idx = torch.randperm(n, generator=gen)[:BATCH]
        pred = net(xt[idx])
        loss = loss_fn(pred[:, 0], yt[idx]) if regression else loss_fn(pred, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()

    @torch.no_grad()
    def predict(x_new: np.ndarray) -> np.ndarray:
        z = (torch.as_tensor(np.asarray(x_new, dtype=np.float32)) - mean) / std
        p = net(z)
        return (p[:, 0] * y_std + y_mean).numpy() if regression else p.argmax(-1).numpy()

    return predict


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true))) if len(true) else math.nan


def tempo_scores(pred_bpm: np.ndarray, true_bpm: np.ndarray) -> dict[str, float]:
    """``accuracy``: share within 4% of the true tempo; ``octave_errors``: share within 4% of
    twice or half of it instead (not counted as right)."""
    pred, true = np.asarray(pred_bpm, float), np.asarray(true_bpm, float)

    def near(ratio: float) -> np.ndarray:
        return np.abs(pred / (ratio * true) - 1) <= TEMPO_TOLERANCE

    return {"accuracy": float(near(1).mean()), "octave_errors": float((near(2) | near(0.5)).mean())}
