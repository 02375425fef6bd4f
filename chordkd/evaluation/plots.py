"""Report figures as PNG files: per-quality recall, quality confusion, chord timeline.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly, never through
``pyplot``, so nothing here touches global backend state or leaks open figures in a long
training process, and no display is needed. Each function writes one PNG atomically and
returns its path.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import mir_eval.util
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure

from chordkd.atomic import write_bytes
from chordkd.chords import Vocabulary
from chordkd.evaluation.metrics import CONFUSION_COLUMNS, PAPER_GROUPS, QualityCounts

DPI = 120


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
    return Path(path)


def plot_quality_recall(
    counts: Mapping[str, QualityCounts], path: str | os.PathLike, title: str = "",
    match: str = "class",
) -> Path:
    """Grouped bars: recall (%) per paper quality group, one bar per model, ACQA last.

    ``counts``: model name -> pooled :class:`QualityCounts`. Groups absent from every
    model's reference are left out; a group absent for one model only has no bar there.
    ``match``: ``"class"`` (exact class) or ``"quality"`` (quality only, root ignored).
    """
    names = list(counts)
    present = [g for i, g in enumerate(PAPER_GROUPS) if any(c.frames[i] > 0 for c in counts.values())]
    columns = present + ["ACQA"]
    fig = Figure(figsize=(max(6.0, 0.75 * len(columns) * max(1, len(names)) ** 0.5 + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    x = np.arange(len(columns))
    for k, name in enumerate(names):
        recall = counts[name].recall(match)
        values = [recall[g] for g in present] + [counts[name].acqa(match) if present else math.nan]
        heights = [100 * v if not math.isnan(v) else 0.0 for v in values]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, heights, width, label=name)
        for bar, v in zip(bars, values):
            if math.isnan(v):
                bar.set_alpha(0.0)
    ax.set_xticks(x, columns, rotation=45, ha="right")
    ax.set_ylabel("frame recall (%)")
    ax.set_ylim(0, 100)
    ax.axvline(len(present) - 0.5, color="0.6", linewidth=0.8, linestyle=":")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or ("Recall per chord quality (exact class)" if match == "class" else
                           "Recall per chord quality (quality only, root ignored)"))
    if len(names) > 1:
        ax.legend(fontsize=8, ncols=min(4, len(names)))
    return _save(fig, path)


def plot_quality_confusion(
    counts: Mapping[str, QualityCounts], path: str | os.PathLike
) -> Path:
    """One heat map per model: reference group (rows) x estimated group (columns), each row
    normalised to sum to 100 %; rows without reference frames are left blank."""
    names = list(counts)
    n = len(names)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.4 * cols, 5.6 * rows), layout="constrained")
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        confusion = counts[name].confusion.astype(np.float64)
        totals = confusion.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(totals > 0, 100 * confusion / totals, np.nan)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, aspect="auto")
        for i, j in zip(*np.nonzero(share >= 1)):
            ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if share[i, j] > 60 else "black")
        ax.set_xticks(range(len(CONFUSION_COLUMNS)), CONFUSION_COLUMNS, rotation=60, ha="right",
                      fontsize=7)
        ax.set_yticks(range(len(PAPER_GROUPS)), PAPER_GROUPS, fontsize=7)
        ax.set_xlabel("estimated quality")
        ax.set_ylabel("reference quality")
        ax.set_title(name, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="% of reference frames")
    fig.suptitle("Quality confusion (rows normalised)")
    return _save(fig, path)


def _chord_colour(label: str, vocab: Vocabulary) -> tuple:
    """Hue by root, lightness by quality; N light grey, X dark grey."""
    index = vocab.encode(label)
    root = vocab.root_of(index)
    if root is None:
        return (0.85, 0.85, 0.85) if index == vocab.n_index else (0.35, 0.35, 0.35)
    quality = index % len(vocab.qualities)
    value = 0.95 - 0.45 * quality / max(1, len(vocab.qualities) - 1)
    return tuple(hsv_to_rgb((root / 12, 0.55, value)))


def _clip(intervals: np.ndarray, labels: Sequence[str], start: float, end: float):
    keep = (intervals[:, 1] > start) & (intervals[:, 0] < end)
    clipped = np.clip(intervals[keep], start, end)
    return clipped, [lab for lab, k in zip(labels, keep) if k]


def plot_timeline(
    reference: tuple[np.ndarray, Sequence[str]],
    estimates: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    vocab: Vocabulary,
    path: str | os.PathLike,
    title: str = "",
    window: tuple[float, float] | None = (0.0, 60.0),
) -> Path:
    """Reference and estimated chords as coloured bars along time (seconds).

    ``reference`` and each estimate are (intervals ``[n, 2]`` seconds, labels). Colour hue is
    the root, lightness the quality. Under each estimate a thin strip is red where its class
    differs from the reference's in ``vocab`` (the exact-class notion of per-quality recall),
    green where it agrees, grey where the reference is X. ``window`` limits the plot to
    ``[start, end)`` seconds (default the first minute, where labels stay readable); None
    shows the whole song.
    """
    ref_intervals, ref_labels = np.asarray(reference[0], np.float64), list(reference[1])
    end_time = float(ref_intervals.max())
    start, end = (0.0, end_time) if window is None else (window[0], min(window[1], end_time))
    rows = [("reference", ref_intervals, ref_labels)] + [
        (name, np.asarray(i, np.float64).reshape(-1, 2), list(lab)) for name, (i, lab) in estimates.items()
    ]
    fig = Figure(figsize=(max(8.0, (end - start) / 4), 0.9 + 0.8 * len(rows)))
    ax = fig.add_subplot()
    min_text = (end - start) / 60  # seconds a bar needs to carry its label
    for r, (_, intervals, labels) in enumerate(rows):
        y = len(rows) - 1 - r
        seg, seg_labels = _clip(intervals, labels, start, end)
        ax.broken_barh(
            [(a, b - a) for a, b in seg], (y - 0.3, 0.55),
            facecolors=[_chord_colour(lab, vocab) for lab in seg_labels],
            edgecolors="white", linewidth=0.5,
        )  # fmt: skip
        for (a, b), lab in zip(seg, seg_labels):
            if b - a >= min_text and lab != "N":
                ax.text((a + b) / 2, y - 0.02, lab.replace(":", ":\n", 1) if b - a < 3 * min_text
                        else lab, ha="center", va="center", fontsize=6, clip_on=True)
        if r > 0:
            _agreement_strip(ax, (ref_intervals, ref_labels), (intervals, labels), vocab, y - 0.42,
                             start, end)
    ax.set_yticks(range(len(rows)), [name for name, _, _ in rows][::-1])
    ax.set_xlim(start, end)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("time (s)")
    ax.set_title(title or "Chord timeline")
    return _save(fig, path)


def _agreement_strip(ax, reference, estimate, vocab, y, start, end) -> None:
    ref_i, ref_l = reference
    est_i, est_l = estimate
    if len(est_i) == 0:
        est_i, est_l = np.array([[ref_i.min(), ref_i.max()]]), ["N"]
    est_i, est_l = mir_eval.util.adjust_intervals(est_i, list(est_l), ref_i.min(), ref_i.max(),
                                                  "N", "N")
    pieces, ref_p, est_p = mir_eval.util.merge_labeled_intervals(ref_i, list(ref_l), est_i, est_l)
    ref_c, est_c = vocab.encode_many(ref_p), vocab.encode_many(est_p)
    colours = [
        (0.6, 0.6, 0.6) if r == vocab.x_index else ((0.2, 0.65, 0.3) if r == e else (0.85, 0.2, 0.2))
        for r, e in zip(ref_c, est_c)
    ]
    keep = (pieces[:, 1] > start) & (pieces[:, 0] < end)
    spans = [(a, b - a) for a, b in np.clip(pieces[keep], start, end)]
    ax.broken_barh(spans, (y, 0.08), facecolors=[c for c, k in zip(colours, keep) if k])


def plot_scaling_curve(
    points: Sequence[Mapping], key: str, series: str, path: str | os.PathLike
) -> Path:
    """Two panels, stage 2 minus the teacher and minus the baseline (percentage points)
    against the tag ``key``: one line per (student, ``series`` value), the paired per-song
    mean difference with its bootstrap interval as error bars (the difference of the pooled
    means where no per-song comparison exists). ``points``: ``curve.curve_rows``. A numeric
    ``key`` whose values are all positive is drawn on a log2 axis (pool 1x, 4x, 16x)."""
    try:
        xs = {p["x"]: float(p["x"]) for p in points}
    except ValueError:
        xs = {x: float(i) for i, x in enumerate(dict.fromkeys(p["x"] for p in points))}
        numeric = False
    else:
        numeric = True
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    for k, role in enumerate(("teacher", "baseline")):
        ax = fig.add_subplot(1, 2, k + 1)
        lines = dict.fromkeys((p["student"], p["series"]) for p in points)
        for student, value in lines:
            mine = [p for p in points if (p["student"], p["series"]) == (student, value)]
            x = [xs[p["x"]] for p in mine]
            per_song = [not math.isnan(p[f"minus_{role}_per_song"]) for p in mine]
            y = [p[f"minus_{role}_per_song"] if ok else p[f"minus_{role}"]
                 for p, ok in zip(mine, per_song)]
            low = [y_ - p[f"minus_{role}_low"] if ok else 0.0 for p, y_, ok in zip(mine, y, per_song)]
            high = [p[f"minus_{role}_high"] - y_ if ok else 0.0 for p, y_, ok in zip(mine, y, per_song)]
            label = " ".join(s for s in (student, f"{series}={value}" if value else "") if s)
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        if numeric and all(v > 0 for v in xs.values()):
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs.values())), [x for x, _ in sorted(xs.items(), key=lambda i: i[1])])
        ax.minorticks_off()
        ax.set_xlabel(key)
        ax.set_ylabel(f"stage 2 - {role} (points, mean of 7 metrics)")
        ax.grid(alpha=0.3)
        ax.set_title(f"stage 2 minus {role}")
        if lines:
            ax.legend(fontsize=8)
    return _save(fig, path)
