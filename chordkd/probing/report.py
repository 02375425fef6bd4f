"""``chordkd probe``'s outputs: probe.json (everything, with each task's split), probe.csv
(one row per encoder, task and probe), probe.md (encoder x task tables) and probe.png (the
same as a heatmap, one panel per probe). Every file is written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from chordkd.atomic import write_bytes, write_json, write_text
from chordkd.probing.probes import PROBES

CSV_COLUMNS = ("encoder", "task", "probe", "metric", "score", "chance", "octave_errors",
               "train_songs", "test_songs", "train_examples", "test_examples")


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(result["rows"])
    write_text(out / "probe.csv", buf.getvalue())
    write_text(out / "probe.md", markdown(result))
    if result["rows"]:
        heatmap(result, out / "probe.png")


def _grid(result: dict, probe: str) -> tuple[list[str], list[str], np.ndarray]:
    encoders = [e["name"] for e in result["encoders"]]
    tasks = list(result["tasks"])
    m = np.full((len(encoders), len(tasks)), np.nan)
    for r in result["rows"]:
        if r["probe"] == probe and r["encoder"] in encoders and r["task"] in tasks:
            m[encoders.index(r["encoder"]), tasks.index(r["task"])] = r["score"]
    return encoders, tasks, m


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown(result: dict) -> str:
    lines = [f"# Probes on {result['data']}", "",
             "Scores in % on each task's held-out songs (frame accuracy for chords, song "
             "accuracy for key, instrument and composer, tempo within 4%).", ""]
    chance = {r["task"]: r["chance"] for r in result["rows"]}
    octave = {(r["encoder"], r["probe"]): r.get("octave_errors") for r in result["rows"]
              if r["task"] == "tempo"}
    for probe in PROBES:
        encoders, tasks, m = _grid(result, probe)
        if not tasks:
            break
        lines += [f"## {probe} probe", "", "| encoder | " + " | ".join(tasks) + " |",
                  "|---" * (len(tasks) + 1) + "|"]
        for i, e in enumerate(encoders):
            cells = [_pct(v) for v in m[i]]
            if "tempo" in tasks and octave.get((e, probe)) is not None:
                j = tasks.index("tempo")
                cells[j] += f" (octave {_pct(octave[(e, probe)])})"
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("| *chance (majority)* | " + " | ".join(_pct(chance.get(t)) for t in tasks) + " |")
        lines.append("")
    splits = result["tasks"]
    if splits:
        lines += ["Songs (train / held out): " + ", ".join(
            f"{t} {len(s['train_songs'])}/{len(s['test_songs'])}" for t, s in splits.items()), ""]
    for reason in result["skipped"].values():
        lines.append(f"- skipped {reason}")
    return "\n".join(lines) + "\n"


def heatmap(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grids = [_grid(result, p) for p in PROBES]
    encoders, tasks, _ = grids[0]
    fig = Figure(figsize=(1.2 * len(tasks) * len(PROBES) + 3, 0.5 * len(encoders) + 1.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PROBES), squeeze=False)[0]
    for ax, probe, (_, _, m) in zip(axes, PROBES, grids):
        im = ax.imshow(100 * m, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(encoders)), encoders if ax is axes[0] else [""] * len(encoders))
        ax.set_title(f"{probe} probe (%)")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, _pct(v), ha="center", va="center", fontsize=8,
                    color="white" if not np.isnan(v) and v < 0.6 else "black")
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
