"""The files of one ``chordkd evaluate`` report: JSON, CSV, Markdown, PNG and W&B tables.

Everything is written atomically under the report folder; fractions in JSON and CSV,
percent in Markdown (``tables.pct``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chordkd.atomic import write_json, write_text
from chordkd.evaluation.agreement import AGREEMENT
from chordkd.evaluation.metrics import METRICS, SEGMENTATION
from chordkd.evaluation.plots import plot_quality_confusion, plot_quality_recall, plot_timeline
from chordkd.evaluation.quality import PAPER_GROUPS
from chordkd.evaluation.summary import COLUMNS, EvaluationResult, column_values
from chordkd.evaluation.tables import csv_text, json_safe, markdown_table, pct

# quality_recall.csv: one row per model and way of counting
MATCHES = {"class": ("quality_recall", "acqa"), "quality": ("quality_recall_quality", "acqa_quality")}
_SONG_COLUMNS = (*METRICS, "acqa", "acqa_quality", *SEGMENTATION)


def write_report(result: EvaluationResult, out: Path, timeline: dict[str, Any] | None) -> None:
    """Write the JSON, CSV, Markdown and PNG files of ``result`` under ``out``."""
    files = result.files
    summaries = {name: m.summary() for name, m in result.models.items()}
    values = {name: column_values(s, name) for name, s in summaries.items()}

    files["overall.json"] = out / "overall.json"
    write_json(files["overall.json"], json_safe(result.overall_dict()))
    files["songs.json"] = out / "songs.json"
    songs = result.songs_dict()
    write_json(files["songs.json"], json_safe(songs))

    overall_rows = [[name, *(values[name][c] for c in COLUMNS), s["n_songs"],
                     round(s["duration"], 3)] for name, s in summaries.items()]
    quality_rows = [[name, match, *(s[recall][g] for g in PAPER_GROUPS), s[acqa]]
                    for name, s in summaries.items() for match, (recall, acqa) in MATCHES.items()]
    song_rows = [[name, song, round(d["duration"], 3), *(_song_value(d, c) for c in _SONG_COLUMNS)]
                 for name, per_song in songs["models"].items() for song, d in per_song.items()]
    for fname, header, rows in (
        ("overall.csv", ["model", *COLUMNS, "songs", "seconds"], overall_rows),
        ("quality_recall.csv", ["model", "match", *PAPER_GROUPS, "acqa"], quality_rows),
        ("songs.csv", ["model", "song", "seconds", *_SONG_COLUMNS], song_rows),
    ):
        files[fname] = out / fname
        write_text(files[fname], csv_text(header, rows))

    counts = {name: m.quality for name, m in result.models.items()}
    files["quality_recall.png"] = plot_quality_recall(counts, out / "quality_recall.png")
    files["quality_recall_quality.png"] = plot_quality_recall(
        counts, out / "quality_recall_quality.png", match="quality")
    files["quality_confusion.png"] = plot_quality_confusion(counts, out / "quality_confusion.png")
    if timeline is not None:
        vocab = next(iter(timeline["estimates"].values()))[2]
        files["timeline.png"] = plot_timeline(
            timeline["reference"],
            {name: (i, lab) for name, (i, lab, _) in timeline["estimates"].items()},
            vocab, out / "timeline.png", title=f"{timeline['song']}",
        )  # fmt: skip

    files["report.md"] = out / "report.md"
    write_text(files["report.md"], _markdown(result, summaries, values, song_rows))


def _song_value(song: dict[str, Any], column: str) -> float:
    if column in METRICS:
        return song["accuracy"][column]
    if column in SEGMENTATION:
        return song["segmentation"][column]
    return song[column]


def _markdown(result, summaries, values, song_rows) -> str:
    present = [g for i, g in enumerate(PAPER_GROUPS)
               if any(m.quality.frames[i] > 0 for m in result.models.values())]
    parts = ["# Chord recognition evaluation\n\n",
             "WCSR (mir_eval, pooled over songs by duration) in percent. Frame recall per "
             "reference quality counted two ways: **exact class** (root and quality; `ACQA`) "
             "and **quality only**, root ignored, as the paper's code counts (`ACQA (quality)`); "
             "each ACQA is the unweighted mean over the quality groups present, No Chord "
             "included. – means nothing comparable.\n"]
    parts.append("\n## Models\n\n" + markdown_table(
        ["model", "role", "student", "seed", "tags", "vocabulary", "decoding", "checkpoint"],
        [[n, s["meta"].get("role", ""), s["meta"].get("student", ""),
          "" if s["meta"].get("seed") is None else s["meta"]["seed"],
          " ".join(f"{k}={v}" for k, v in s["meta"].get("tags", {}).items()),
          s["meta"]["vocabulary"], s["meta"]["decoding"], s["meta"].get("checkpoint", "")]
         for n, s in summaries.items()],
        left=8))
    parts.append("\n## Overall\n\n" + markdown_table(
        ["model", *METRICS, "mean", "ACQA", "ACQA (quality)", "songs", "hours"],
        [[n, *(pct(values[n][c]) for c in (*METRICS, "mean", "acqa", "acqa_quality")),
          s["n_songs"], f"{s['duration'] / 3600:.2f}"] for n, s in summaries.items()]))
    teachers = {s["agreement"]["teacher"] for s in summaries.values() if s["agreement"]}
    parts.append(
        "\n## Segmentation and agreement\n\nmir_eval's segmentation scores (pooled by duration): "
        "`overseg` near 100 means the estimate rarely splits a reference segment, `underseg` "
        "that it rarely merges two; `seg` is the lower of the two."
        + (f" Agreement: duration-weighted frames on which the model names the teacher's chord "
           f"(`{', '.join(sorted(teachers))}`, its estimate as reference) at majmin and mirex "
           "level." if teachers else "")
        + "\n\n" + markdown_table(
            ["model", *SEGMENTATION, *(AGREEMENT if teachers else ())],
            [[n, *(pct(values[n][c]) for c in (*SEGMENTATION, *(AGREEMENT if teachers else ())))]
             for n in summaries]))
    for title, (recall, acqa) in (("exact class", MATCHES["class"]),
                                  ("quality only, root ignored (the paper's code)",
                                   MATCHES["quality"])):
        parts.append(f"\n## Recall per quality: {title}\n\n" + markdown_table(
            ["model", *present, "ACQA"],
            [[n, *(pct(s[recall][g]) for g in present), pct(s[acqa])]
             for n, s in summaries.items()]))
    parts.append("\n![recall per quality, exact class](quality_recall.png)\n\n"
                 "![recall per quality, quality only](quality_recall_quality.png)\n\n"
                 "![quality confusion](quality_confusion.png)\n")
    if result.timeline_song is not None:
        parts.append(f"\n![timeline of {result.timeline_song}](timeline.png)\n")
    parts.append("\n## Songs\n\n" + markdown_table(
        ["model", "song", "seconds", *METRICS, "ACQA", "ACQA (quality)", *SEGMENTATION],
        [[r[0], r[1], f"{r[2]:.1f}", *(pct(v) for v in r[3:])] for r in song_rows], left=2))
    if result.skipped:
        parts.append(f"\n## Skipped songs ({len(result.skipped)})\n\n" + markdown_table(
            ["song", "reason"], [[s["id"], s["reason"].replace("|", "\\|")] for s in result.skipped],
            left=2))
    return "".join(parts)


def log_to_wandb(result: EvaluationResult) -> None:
    """Log the tables and figures to the active W&B run, or to a new one (offline unless
    ``WANDB_MODE`` says otherwise), which is then finished."""
    import wandb

    run = wandb.run
    own = run is None
    if own:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "chordkd"), job_type="evaluate",
                         mode=os.environ.get("WANDB_MODE", "offline"),
                         dir=str(result.files["report.md"].parent))
    try:
        summaries = {name: m.summary() for name, m in result.models.items()}
        values = {name: column_values(s, name) for name, s in summaries.items()}
        overall = wandb.Table(columns=["model", *COLUMNS], data=[
            [n, *(values[n][c] for c in COLUMNS)] for n in summaries])
        quality = wandb.Table(columns=["model", "match", *PAPER_GROUPS, "acqa"], data=[
            [n, match, *(s[recall][g] for g in PAPER_GROUPS), s[acqa]]
            for n, s in summaries.items() for match, (recall, acqa) in MATCHES.items()])
        payload: dict[str, Any] = {"eval/overall": overall, "eval/quality_recall": quality}
        for key in ("quality_recall.png", "quality_recall_quality.png", "quality_confusion.png",
                    "timeline.png"):
            if key in result.files:
                payload[f"eval/{key[:-4]}"] = wandb.Image(str(result.files[key]))
        run.log(payload)
        for n in summaries:
            for c in COLUMNS:
                run.summary[f"eval/{n}/{c}"] = values[n][c]
    finally:
        if own:
            run.finish()
