"""``chordkd evaluate``: transcribe a labelled corpus with one or more models and report.

    chordkd evaluate teacher.pt stage2.ckpt --data data/test --out runs/eval \\
        [--names teacher stage2] [--roles teacher stage2] [--student btc] \\
        [--smoothing 0.9 | --decode crf [argmax ...]] [--song ID] [--strict] [--wandb]

A model is any teacher spec (``chordkd.teachers``): a checkpoint, ``madmom:cnn``, ``madmom:deepchroma``
or ``package.module:factory``; ``--decode crf`` decodes with madmom's own CRF.

For each song: the audio is read and its log-CQT computed once, each model transcribes it
(``chordkd.transcribe``), and the estimate is scored against the reference annotation with
mir_eval (``metrics.score_song``) and, frame by frame in the model's vocabulary, per quality
(``metrics.count_qualities``). Files written under ``--out`` (all atomically):

- ``overall.json``: per model, its ``meta`` (name, role, student, checkpoint, vocabulary,
  smoothing), the pooled seven WCSR metrics (fractions in [0, 1]), their mean, per-quality
  recall, ACQA, the quality counts and confusion matrix; the skipped songs and why. This is
  the file ``chordkd results`` reads (``"format": "chordkd-evaluation/1"``).
- ``songs.json``: the same per song (seconds correct and comparable, accuracies, recall).
- ``overall.csv``, ``quality_recall.csv``, ``songs.csv``: the tables, fractions in [0, 1].
- ``report.md``: the tables in percent, the skipped songs, the figures.
- ``quality_recall.png``, ``quality_confusion.png``, ``timeline.png`` (``--song``, default the
  first song evaluated; its first minute).
- ``estimates/<model>/<song>.lab``: every decoded estimate, so any number can be re-checked
  with ``mir_eval`` directly.

Annotation past the end of the audio is ignored (``annotations.clip_to_audio``). A song whose
audio or annotation cannot be read is skipped with a warning and listed with the
reason (``--strict`` stops instead). Corpus figures pool seconds (WCSR) and frames (recall)
over the songs evaluated.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chordkd.annotations import clip_to_audio, intervals_to_frames, read_annotation, write_lab
from chordkd.atomic import write_json, write_text
from chordkd.audio import load_audio
from chordkd.chords import Vocabulary
from chordkd.data.manifest import Song, read_manifest
from chordkd.errors import ChordkdError
from chordkd.evaluation.metrics import (
    METRICS,
    PAPER_GROUPS,
    QualityCounts,
    SongScore,
    aggregate,
    count_qualities,
    metric_mean,
    score_song,
)
from chordkd.evaluation.plots import plot_quality_confusion, plot_quality_recall, plot_timeline
from chordkd.features import FeatureSettings
from chordkd.teachers.base import DECODERS
from chordkd.transcribe import (
    front_end,
    is_waveform_teacher,
    log_cqt,
    model_device,
    resolve_decoding,
    resolve_device,
    smoothing_probability,
    transcribe_features,
    transcribe_waveform,
    unpack_model,
)

log = logging.getLogger(__name__)

FORMAT = "chordkd-evaluation/1"
ROLES = ("teacher", "baseline", "stage1", "stage2")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# --------------------------------------------------------------------------------------------
# results in memory


@dataclass
class ModelResult:
    """Scores of one model: per song (by song id) and pooled."""

    name: str
    meta: dict[str, Any]
    scores: dict[str, SongScore] = field(default_factory=dict)
    qualities: dict[str, QualityCounts] = field(default_factory=dict)

    @property
    def overall(self) -> dict[str, float]:
        """Corpus WCSR per metric (``metrics.aggregate``), NaN if no song was scored."""
        return aggregate(list(self.scores.values()))

    @property
    def quality(self) -> QualityCounts:
        """Frame counts pooled over songs."""
        total = QualityCounts()
        for counts in self.qualities.values():
            total = total + counts
        return total

    def summary(self) -> dict[str, Any]:
        overall = self.overall
        quality = self.quality
        present = quality.frames.sum() > 0
        return {
            "meta": self.meta,
            "n_songs": len(self.scores),
            "duration": math.fsum(s.duration for s in self.scores.values()),
            "metrics": overall,
            "mean": metric_mean(overall),
            "quality_recall": quality.recall(),
            "acqa": quality.acqa() if present else math.nan,
            "quality_counts": quality.to_dict(),
        }


@dataclass
class EvaluationResult:
    """What ``evaluate_models`` computed and wrote."""

    models: dict[str, ModelResult]
    skipped: list[dict[str, str]]
    timeline_song: str | None
    files: dict[str, Path] = field(default_factory=dict)

    def overall_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "metrics": list(METRICS),
            "quality_groups": list(PAPER_GROUPS),
            "models": {name: m.summary() for name, m in self.models.items()},
            "skipped": self.skipped,
            "timeline_song": self.timeline_song,
        }

    def songs_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, m in self.models.items():
            out[name] = {
                song: {
                    **score.to_dict(),
                    "quality_recall": m.qualities[song].recall(),
                    "acqa": _acqa_or_nan(m.qualities[song]),
                }
                for song, score in m.scores.items()
            }
        return {"format": FORMAT, "models": out}


def _acqa_or_nan(counts: QualityCounts) -> float:
    return counts.acqa() if counts.frames.sum() > 0 else math.nan


# --------------------------------------------------------------------------------------------
# the evaluation


def evaluate_models(
    models: Mapping[str, Any],
    songs: Sequence[Song],
    out: str | os.PathLike,
    smoothing: float | None = None,
    timeline_song: str | None = None,
    strict: bool = False,
    meta: Mapping[str, Mapping[str, Any]] | None = None,
    wandb: bool = False,
    decoding: str | Mapping[str, str | None] | None = None,
) -> EvaluationResult:
    """Transcribe and score every song with every model; write the report under ``out``.

    Args:
        models: name -> a teacher from ``chordkd.teachers.load_teacher`` (any spec: a
            checkpoint, ``madmom:cnn``, a factory model), a ``LoadedModel`` (from
            ``load_model``) or a ``ChordModel`` (then the large vocabulary and BTC's feature
            settings are assumed). Names become folder and
            column names: letters, digits, ``._+-``.
        songs: labelled songs (``read_manifest(source, require_labels=True)``).
        out: report folder.
        smoothing: None for argmax decoding, else the Viterbi self-transition probability.
        timeline_song: song id for the timeline figure; default the first song evaluated.
        strict: raise on the first unreadable song instead of skipping it.
        meta: name -> extra metadata stored with that model (e.g. role, student).
        wandb: also log tables and figures to W&B (the active run, or a new offline one).
        decoding: ``"crf"`` decodes every model with its own CRF (madmom's teachers);
            default argmax, or Viterbi when ``smoothing`` is given. A mapping name ->
            decoding sets it per model (the same teacher may appear twice, e.g. madmom's CNN
            with argmax and with its CRF; madmom computes its features once per song).

    Returns:
        An :class:`EvaluationResult`; ``result.files`` maps each report file's kind to its path.
    """
    if not models:
        raise ChordkdError("no models to evaluate")
    if not songs:
        raise ChordkdError("no songs to evaluate")
    for name in models:
        if not _SAFE_NAME.match(name):
            raise ChordkdError(f"model name {name!r}: use letters, digits and ._+- only")
    ids = [s.id for s in songs]
    if timeline_song is not None and timeline_song not in ids:
        raise ChordkdError(f"--song {timeline_song!r} is not a song of the corpus")
    out = Path(out)
    per_model = dict(decoding) if isinstance(decoding, Mapping) else dict.fromkeys(models, decoding)
    methods = {name: resolve_decoding(per_model.get(name), smoothing) for name in models}

    unpacked = {}
    results = {}
    for name, model in models.items():
        method = methods[name]
        net, vocab, front = unpack_model(model)
        if is_waveform_teacher(net):
            settings = net.grid
        else:
            settings = front.settings if front is not None else FeatureSettings()
            if method == "crf":
                raise ChordkdError(f"model {name}: has no CRF of its own; --decode crf needs "
                                   "madmom:cnn or madmom:deepchroma")
        unpacked[name] = (net, vocab, settings)
        results[name] = ModelResult(name, _model_meta(name, model, vocab, smoothing, meta, method))

    skipped: list[dict[str, str]] = []
    timeline: dict[str, Any] | None = None
    for song in songs:
        try:
            reference, samples = _read_song(song, {s.sr for _, _, s in unpacked.values()})
        except ChordkdError as exc:
            if strict:
                raise
            log.warning("skipping song %s: %s", song.id, exc)
            skipped.append({"id": song.id, "audio": str(song.audio),
                            "labels": str(song.labels), "reason": str(exc)})
            continue
        features: dict[tuple, Any] = {}  # one log-CQT per (settings, device)
        estimates = {}
        for name, (net, vocab, settings) in unpacked.items():
            duration = len(samples[settings.sr]) / settings.sr
            if is_waveform_teacher(net):
                estimate = transcribe_waveform(samples[settings.sr], net, smoothing,
                                               per_model.get(name))
            else:  # (a CQT model's method is argmax or viterbi, checked above)
                device = model_device(net)
                key = (settings, str(device))
                if key not in features:
                    features[key] = log_cqt(samples[settings.sr], front_end(settings, str(device)),
                                            device)
                estimate = transcribe_features(features[key], net, vocab, duration, settings,
                                               smoothing)
            results[name].scores[song.id] = score_song(*reference, estimate.intervals, estimate.labels)
            ref_frames = intervals_to_frames(*reference, vocab, len(estimate.classes),
                                             settings.hop, settings.sr)
            results[name].qualities[song.id] = count_qualities(ref_frames, estimate.classes, vocab)
            write_lab(out / "estimates" / name / f"{song.id}.lab", estimate.intervals, estimate.labels)
            estimates[name] = (estimate.intervals, estimate.labels, vocab)
        if timeline is None and (timeline_song is None or timeline_song == song.id):
            timeline = {"song": song.id, "reference": reference, "estimates": estimates}
        log.info("evaluated %s (%d/%d)", song.id, ids.index(song.id) + 1, len(ids))

    evaluated = sum(len(r.scores) for r in results.values())
    if evaluated == 0:
        raise ChordkdError(f"none of the {len(songs)} songs could be evaluated "
                           f"(first problem: {skipped[0]['reason']})")
    if timeline_song is not None and timeline is None:
        raise ChordkdError(f"--song {timeline_song!r} was skipped: it could not be read")

    result = EvaluationResult(results, skipped, timeline["song"] if timeline else None)
    write_report(result, out, timeline)
    if wandb:
        log_to_wandb(result)
    return result


def _read_song(song: Song, rates: set[int]) -> tuple[tuple[np.ndarray, list[str]], dict]:
    if song.labels is None:
        raise ChordkdError(f"{song.audio}: song {song.id!r} has no annotation")
    reference = read_annotation(song.labels)
    samples = {sr: load_audio(song.audio, sr=sr) for sr in sorted(rates)}
    duration = min(len(x) / sr for sr, x in samples.items())
    return clip_to_audio(*reference, duration, song.labels), samples


def _model_meta(name: str, model: Any, vocab: Vocabulary, smoothing: float | None,
                meta: Mapping[str, Mapping[str, Any]] | None, method: str) -> dict[str, Any]:
    net = getattr(model, "model", model)
    network = getattr(getattr(net, "net", None), "config", {}).get("name")
    waveform = is_waveform_teacher(model)
    info: dict[str, Any] = {
        "name": name,
        "role": name if name in ROLES else "",
        "student": network or "",
        "checkpoint": str(model.spec if waveform else getattr(model, "path", "")),
        "source": model.description if waveform else getattr(model, "source", ""),
        "vocabulary": vocab.name,
        "decoding": f"viterbi(p={smoothing:g})" if method == "viterbi" else method,
    }
    info.update((meta or {}).get(name, {}))
    return info


# --------------------------------------------------------------------------------------------
# writing


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN floats replaced by None, so the file is standard JSON (null)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A GitHub Markdown table; the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join([":---"] * left + ["---:"] * (len(header) - left)) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return v


def write_report(result: EvaluationResult, out: Path, timeline: dict[str, Any] | None) -> None:
    """Write the JSON, CSV, Markdown and PNG files of ``result`` under ``out``."""
    files = result.files
    summaries = {name: m.summary() for name, m in result.models.items()}

    files["overall.json"] = out / "overall.json"
    write_json(files["overall.json"], json_safe(result.overall_dict()))
    files["songs.json"] = out / "songs.json"
    write_json(files["songs.json"], json_safe(result.songs_dict()))

    overall_header = ["model", *METRICS, "mean", "acqa", "songs", "seconds"]
    overall_rows = [
        [name, *(s["metrics"][m] for m in METRICS), s["mean"], s["acqa"], s["n_songs"],
         round(s["duration"], 3)]
        for name, s in summaries.items()
    ]
    quality_header = ["model", *PAPER_GROUPS, "acqa"]
    quality_rows = [
        [name, *(s["quality_recall"][g] for g in PAPER_GROUPS), s["acqa"]]
        for name, s in summaries.items()
    ]
    song_header = ["model", "song", "seconds", *METRICS, "acqa"]
    song_rows = [
        [name, song, round(score.duration, 3), *(score.accuracy[m] for m in METRICS),
         _acqa_or_nan(m.qualities[song])]
        for name, m in result.models.items()
        for song, score in m.scores.items()
    ]
    for fname, header, rows in (("overall.csv", overall_header, overall_rows),
                                ("quality_recall.csv", quality_header, quality_rows),
                                ("songs.csv", song_header, song_rows)):
        files[fname] = out / fname
        write_text(files[fname], csv_text(header, rows))

    counts = {name: m.quality for name, m in result.models.items()}
    files["quality_recall.png"] = plot_quality_recall(counts, out / "quality_recall.png")
    files["quality_confusion.png"] = plot_quality_confusion(counts, out / "quality_confusion.png")
    if timeline is not None:
        vocab = next(iter(timeline["estimates"].values()))[2]
        files["timeline.png"] = plot_timeline(
            timeline["reference"],
            {name: (i, lab) for name, (i, lab, _) in timeline["estimates"].items()},
            vocab, out / "timeline.png", title=f"{timeline['song']}",
        )  # fmt: skip

    files["report.md"] = out / "report.md"
    write_text(files["report.md"], _markdown(result, summaries, overall_rows, quality_rows,
                                             song_rows))


def _markdown(result, summaries, overall_rows, quality_rows, song_rows) -> str:
    present = [g for i, g in enumerate(PAPER_GROUPS)
               if any(m.quality.frames[i] > 0 for m in result.models.values())]
    parts = ["# Chord recognition evaluation\n\n",
             "WCSR (mir_eval, pooled over songs by duration) and frame recall per reference "
             "quality (exact class) in percent; ACQA is the unweighted mean over the quality "
             "groups present. – means nothing comparable.\n"]
    parts.append("\n## Models\n\n" + markdown_table(
        ["model", "role", "student", "vocabulary", "decoding", "checkpoint"],
        [[n, s["meta"].get("role", ""), s["meta"].get("student", ""), s["meta"]["vocabulary"],
          s["meta"]["decoding"], s["meta"].get("checkpoint", "")] for n, s in summaries.items()],
        left=6))
    parts.append("\n## Overall\n\n" + markdown_table(
        ["model", *METRICS, "mean", "ACQA", "songs", "hours"],
        [[r[0], *(_pct(v) for v in r[1:10]), r[10], f"{r[11] / 3600:.2f}"] for r in overall_rows]))
    parts.append("\n## Recall per quality\n\n" + markdown_table(
        ["model", *present, "ACQA"],
        [[r[0], *(_pct(r[1 + PAPER_GROUPS.index(g)]) for g in present), _pct(r[-1])]
         for r in quality_rows]))
    parts.append("\n![recall per quality](quality_recall.png)\n\n"
                 "![quality confusion](quality_confusion.png)\n")
    if result.timeline_song is not None:
        parts.append(f"\n![timeline of {result.timeline_song}](timeline.png)\n")
    parts.append("\n## Songs\n\n" + markdown_table(
        ["model", "song", "seconds", *METRICS, "ACQA"],
        [[r[0], r[1], f"{r[2]:.1f}", *(_pct(v) for v in r[3:])] for r in song_rows], left=2))
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
        overall = wandb.Table(columns=["model", *METRICS, "mean", "acqa"], data=[
            [n, *(s["metrics"][m] for m in METRICS), s["mean"], s["acqa"]]
            for n, s in summaries.items()])
        quality = wandb.Table(columns=["model", *PAPER_GROUPS, "acqa"], data=[
            [n, *(s["quality_recall"][g] for g in PAPER_GROUPS), s["acqa"]]
            for n, s in summaries.items()])
        payload: dict[str, Any] = {"eval/overall": overall, "eval/quality_recall": quality}
        for key in ("quality_recall.png", "quality_confusion.png", "timeline.png"):
            if key in result.files:
                payload[f"eval/{key[:-4]}"] = wandb.Image(str(result.files[key]))
        run.log(payload)
        for n, s in summaries.items():
            for m in METRICS:
                run.summary[f"eval/{n}/{m}"] = s["metrics"][m]
            run.summary[f"eval/{n}/acqa"] = s["acqa"]
    finally:
        if own:
            run.finish()


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="SPEC",
                        help="the models: chordkd checkpoints, official BTC files, madmom:cnn, "
                             "madmom:deepchroma or package.module:factory (chordkd.teachers)")
    parser.add_argument("--data", required=True, metavar="DIR|MANIFEST",
                        help="labelled corpus: a manifest.csv or a folder of audio + .lab")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument("--names", nargs="+", metavar="NAME",
                        help="one name per checkpoint (default: the checkpoint file stems)")
    parser.add_argument("--roles", nargs="+", metavar="ROLE",
                        help="one row role per checkpoint for `chordkd results` "
                             f"({', '.join(ROLES)} or any other name; default: the name "
                             "if it is one of those)")
    parser.add_argument("--student", default=None,
                        help="student name stored in the report (default: the network's)")
    parser.add_argument("--smoothing", type=smoothing_probability, default=None, metavar="P",
                        help="Viterbi self-transition probability (default: argmax)")
    parser.add_argument("--decode", nargs="+", choices=DECODERS, default=None,
                        help="argmax, viterbi (with --smoothing) or crf (the model's own CRF: "
                             "madmom), for all models or one per model; default: viterbi if "
                             "--smoothing is given, else argmax")
    parser.add_argument("--song", default=None, metavar="ID",
                        help="song for the timeline figure (default: the first)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad song")
    parser.add_argument("--wandb", action="store_true",
                        help="log tables and figures to W&B (offline unless WANDB_MODE is set)")


def run(args: argparse.Namespace) -> int:
    from chordkd.teachers import load_teacher

    names = args.names or [Path(c).stem.replace(":", "-") for c in args.checkpoints]
    for flag, values in (("--names", names), ("--roles", args.roles),
                         ("--decode", args.decode if args.decode and len(args.decode) > 1 else None)):
        if values is not None and len(values) != len(args.checkpoints):
            raise ChordkdError(f"{flag}: {len(values)} given for {len(args.checkpoints)} checkpoints")
    if len(set(names)) != len(names):
        raise ChordkdError(f"--names: model names must be distinct, got {names}")
    decode = dict(zip(names, args.decode if args.decode and len(args.decode) > 1
                      else [args.decode[0] if args.decode else None] * len(names)))
    for method in decode.values():
        resolve_decoding(method, args.smoothing)  # a bad combination fails before any work
    songs = read_manifest(args.data, require_labels=True)
    device = resolve_device(args.device)
    models, meta = {}, {}
    for name, path, k in zip(names, args.checkpoints, range(len(names))):
        loaded = load_teacher(path)
        loaded.to(device).eval()
        models[name] = loaded
        meta[name] = {}
        if args.roles:
            meta[name]["role"] = args.roles[k]
        if args.student:
            meta[name]["student"] = args.student
    result = evaluate_models(models, songs, args.out, smoothing=args.smoothing,
                             timeline_song=args.song, strict=args.strict, meta=meta,
                             wandb=args.wandb, decoding=decode)
    print(result.files["report.md"].read_text(encoding="utf-8").split("\n## Recall")[0])
    if result.skipped:
        log.warning("skipped %d of %d songs (listed in %s)", len(result.skipped), len(songs),
                    result.files["report.md"])
    return 0
