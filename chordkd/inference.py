"""Whole-song inference in fixed windows, stitched: features ``[T, 144]`` -> logits ``[T, C]``.

BTC's positional encoding and attention span cover one 108-frame segment, so a song is
processed in windows of ``window`` frames that overlap by half. Each frame's logits come from
the window in which it sits most centrally (nearest window centre), so every frame except
those in the song's first and last quarter-window sees at least ``window / 4`` frames of
context on both sides. Songs shorter than one window run as a single shorter window.
"""

from __future__ import annotations

import torch
from torch import nn

WINDOW = 108


def window_starts(n_frames: int, window: int = WINDOW, hop: int | None = None) -> list[int]:
    """Start frames of the windows covering ``n_frames`` (the last one ends at the song end)."""
    hop = hop or window // 2
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def stitch(window_logits: torch.Tensor, starts: list[int], n_frames: int) -> torch.Tensor:
    """Assemble ``[n_windows, W, C]`` window outputs into ``[n_frames, C]``.

    Frame ``t`` takes its logits from the window whose centre is nearest to ``t``.
    """
    n_win, w, _ = window_logits.shape
    if len(starts) != n_win:
        raise ValueError(f"{len(starts)} starts for {n_win} windows")
    w = min(w, n_frames)
    st = torch.tensor(starts, device=window_logits.device)
    t = torch.arange(n_frames, device=window_logits.device)
    centres = st.float() + (w - 1) / 2
    best = (t[:, None].float() - centres[None, :]).abs().argmin(dim=1)  # [T]
    return window_logits[best, t - st[best]]


@torch.no_grad()
def song_logits(
    model: nn.Module,
    features: torch.Tensor,
    window: int = WINDOW,
    hop: int | None = None,
    batch_windows: int = 64,
) -> torch.Tensor:
    """Logits ``[T, C]`` of ``model`` for one song's features ``[T, F]``.

    ``model`` maps ``[B, W, F]`` to ``[B, W, C]`` (a ``ChordModel`` takes raw log-CQT).
    """
    n_frames = features.shape[0]
    starts = window_starts(n_frames, window, hop)
    w = min(window, n_frames)
    chunks = torch.stack([features[s : s + w] for s in starts])  # [n_windows, w, F]
    outs = [model(chunks[i : i + batch_windows]) for i in range(0, len(starts), batch_windows)]
    return stitch(torch.cat(outs).float(), starts, n_frames)


def songs_logits(model: torch.nn.Module, features: list[torch.Tensor],
                 batch_windows: int = 64) -> list[torch.Tensor]:
    """:func:`chordkd.inference.song_logits` for several songs at once: ``[T_i, F]`` ->
    ``[T_i, C]`` float32, with the windows of all songs sharing forward passes (songs shorter
    than one window run together by length), which keeps a GPU busy on short songs."""
    starts = [window_starts(f.shape[0]) for f in features]
    widths = [min(WINDOW, f.shape[0]) for f in features]
    out: list[torch.Tensor | None] = [None] * len(features)
    for width in sorted(set(widths)):
        members = [i for i, w in enumerate(widths) if w == width]
        windows = torch.cat([torch.stack([features[i][s : s + width] for s in starts[i]])
                             for i in members])  # [n_windows, width, F]
        logits = torch.cat([model(windows[j : j + batch_windows])
                            for j in range(0, len(windows), batch_windows)]).float()
        pos = 0
        for i in members:
            n = len(starts[i])
            out[i] = stitch(logits[pos : pos + n], starts[i], features[i].shape[0])
            pos += n
    return out
