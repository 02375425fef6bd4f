"""``chordkd evaluate``: transcribe a labelled corpus with one or more models and report.

    chordkd evaluate teacher.pt stage2.ckpt --data data/test --out runs/eval \\
        [--names teacher stage2] [--roles teacher stage2] [--student btc] \\
        [--seed 1] [--meta pool=4 size=base] \\
        [--smoothing 0.9 [--decode argmax viterbi] | --decode crf [argmax ...]] \\
        [--song ID] [--strict] [--wandb]

A model is any teacher spec (``chordkd.teachers``): a checkpoint, ``madmom:cnn``, ``madmom:deepchroma``
or ``package.module:factory``; ``--decode crf`` decodes with madmom's own CRF. ``--seed`` (the
training seed of the checkpoints) and ``--meta key=value ...`` (free-form tags such as
``pool=4 size=base variant=nokd``) are stored with each model, for ``chordkd results`` to
group seeds and draw curves.

For each song: the audio is read and its log-CQT computed once, each model transcribes it
(``chordkd.transcribe``), and the estimate is scored against the reference annotation with
mir_eval (``metrics.score_song``: the seven WCSR metrics and overseg/underseg/seg) and, frame
by frame in the model's vocabulary, per quality (``quality.count_qualities``: exact class and
quality only). When exactly one model has the role ``teacher``, every model's agreement with
its estimates is measured too (``agreement``: majmin and mirex). Files written under
``--out`` (all atomically):

- ``overall.json``: per model, its ``meta`` (name, role, student, seed, tags, checkpoint,
  vocabulary, decoding), the pooled seven WCSR metrics (fractions in [0, 1]), their mean,
  the segmentation scores, per-quality recall and ACQA both ways (``quality_recall``/``acqa``:
  exact class; ``quality_recall_quality``/``acqa_quality``: quality only), the quality counts
  and confusion matrix, the agreement with the teacher; the skipped songs and why. This is
  the file ``chordkd results`` reads (``"format": "chordkd-evaluation/1"``).
- ``songs.json``: the same per song (seconds correct and comparable, accuracies, segmentation,
  recall); ``chordkd results`` reads it for paired per-song comparisons.
- ``overall.csv``, ``quality_recall.csv``, ``songs.csv``: the tables, fractions in [0, 1].
- ``report.md``: the tables in percent, the skipped songs, the figures.
- ``quality_recall.png`` (exact class), ``quality_recall_quality.png`` (quality only),
  ``quality_confusion.png``, ``timeline.png`` (``--song``, default the
  first song evaluated; its first minute).
- ``estimates/<model>/<song>.lab``: every decoded estimate, so any number can be re-checked
  with ``mir_eval`` directly (and agreement measured across runs).

Annotation past the end of the audio is ignored (``annotations.clip_to_audio``). A song whose
audio or annotation cannot be read is skipped with a warning and listed with the
reason (``--strict`` stops instead). Corpus figures pool seconds (WCSR) and frames (recall)
over the songs evaluated.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chordkd.annotations import clip_to_audio, intervals_to_frames, read_annotation, write_lab
from chordkd.audio import load_audio
from chordkd.chords import Vocabulary
from chordkd.data.manifest import Song, read_manifest
from chordkd.errors import ChordkdError
from chordkd.evaluation.agreement import agreement
from chordkd.evaluation.metrics import score_song
from chordkd.evaluation.quality import count_qualities
from chordkd.evaluation.report_files import log_to_wandb, write_report
from chordkd.evaluation.summary import FORMAT, ROLES, EvaluationResult, ModelResult
from chordkd.evaluation.tables import csv_text, json_safe, markdown_table
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

# kept importable from here (noisy_student, tests, older callers)
__all__ = ["FORMAT", "ROLES", "EvaluationResult", "ModelResult", "csv_text", "evaluate_models",
           "json_safe", "markdown_table", "write_report"]

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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
        meta: name -> extra metadata stored with that model (e.g. role, student, seed, tags).
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
    methods = decoding_methods({name: per_model.get(name) for name in models}, smoothing)
    # the Viterbi probability goes to the Viterbi-decoded models only
    smooth = {name: smoothing if method == "viterbi" else None for name, method in methods.items()}

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
                estimate = transcribe_waveform(samples[settings.sr], net, smooth[name],
                                               methods[name])
            else:  # (a CQT model's method is argmax or viterbi, checked above)
                device = model_device(net)
                key = (settings, str(device))
                if key not in features:
                    features[key] = log_cqt(samples[settings.sr], front_end(settings, str(device)),
                                            device)
                estimate = transcribe_features(features[key], net, vocab, duration, settings,
                                               smooth[name])
            results[name].scores[song.id] = score_song(*reference, estimate.intervals, estimate.labels)
            ref_frames = intervals_to_frames(*reference, vocab, len(estimate.classes),
                                             settings.hop, settings.sr)
            results[name].qualities[song.id] = count_qualities(ref_frames, estimate.classes, vocab)
            write_lab(out / "estimates" / name / f"{song.id}.lab", estimate.intervals, estimate.labels)
            results[name].estimates[song.id] = (estimate.intervals, list(estimate.labels))
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

    _measure_agreement(results)
    result = EvaluationResult(results, skipped, timeline["song"] if timeline else None)
    write_report(result, out, timeline)
    if wandb:
        log_to_wandb(result)
    return result


def decoding_methods(decoding: Mapping[str, str | None], smoothing: float | None) -> dict[str, str]:
    """Model name -> ``argmax``, ``viterbi`` or ``crf``. A model with no decoding of its own
    takes Viterbi when ``smoothing`` is given, else argmax; ``smoothing`` may come with models
    that name another decoder (``--decode argmax viterbi --smoothing 0.9``: the same
    checkpoint with and without Viterbi, in one pass), but not with those alone."""
    methods = {name: resolve_decoding(d, smoothing if d in (None, "viterbi") else None)
               for name, d in decoding.items()}
    if smoothing is not None and "viterbi" not in methods.values():
        resolve_decoding(next(iter(decoding.values())), smoothing)  # raises, naming the decoder
    return methods


def _measure_agreement(results: Mapping[str, ModelResult]) -> None:
    """Every model's agreement with the one model whose role is ``teacher``, if exactly one."""
    teachers = [m for m in results.values() if m.meta.get("role") == "teacher"]
    if len(teachers) != 1:
        if teachers:
            log.warning("no agreement measured: %d models have the role teacher (%s)",
                        len(teachers), ", ".join(m.name for m in teachers))
        return
    teacher = teachers[0]
    for m in results.values():
        if m is teacher:
            continue  # 100% by definition: left out of its own row
        m.agreement = agreement(teacher.estimates, m.estimates)
        m.agreement_with = teacher.name


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
    parser.add_argument("--seed", nargs="+", type=int, default=None, metavar="N",
                        help="training seed of the checkpoints, for all or one per checkpoint; "
                             "`chordkd results` shows mean ± std over seeds")
    parser.add_argument("--meta", nargs="+", type=meta_item, default=[], metavar="KEY=VALUE",
                        help="free-form tags stored with every model, e.g. pool=4 size=base "
                             "variant=nokd (`chordkd results` keeps rows with different tags "
                             "apart and draws --curve KEY from them)")
    parser.add_argument("--smoothing", type=smoothing_probability, default=None, metavar="P",
                        help="Viterbi self-transition probability (default: argmax)")
    parser.add_argument("--decode", nargs="+", choices=DECODERS, default=None,
                        help="argmax, viterbi (with --smoothing) or crf (the model's own CRF: "
                             "madmom), for all models or one per model (`--decode argmax "
                             "viterbi --smoothing 0.9` gives a row and its +viterbi row); "
                             "default: viterbi if --smoothing is given, else argmax")
    parser.add_argument("--song", default=None, metavar="ID",
                        help="song for the timeline figure (default: the first)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad song")
    parser.add_argument("--wandb", action="store_true",
                        help="log tables and figures to W&B (offline unless WANDB_MODE is set)")


_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def meta_item(text: str) -> tuple[str, str]:
    """argparse type for ``--meta``: ``key=value`` (key: a letter or _, then letters, digits,
    ``_.-``; value: any non-empty text)."""
    key, sep, value = text.partition("=")
    if not sep or not _META_KEY.match(key) or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. pool=4")
    return key, value


def meta_tags(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``--meta`` items as a dict; a key given twice is an error naming it."""
    tags: dict[str, str] = {}
    for key, value in items:
        if key in tags:
            raise ChordkdError(f"--meta: {key!r} given twice ({tags[key]!r} and {value!r})")
        if key == "seed":
            raise ChordkdError("--meta: give the seed as --seed N, not as a tag")
        tags[key] = value
    return tags


def run(args: argparse.Namespace) -> int:
    from chordkd.teachers import load_teacher

    names = args.names or [Path(c).stem.replace(":", "-") for c in args.checkpoints]
    seeds = args.seed if args.seed and len(args.seed) > 1 else None
    for flag, values in (("--names", names), ("--roles", args.roles), ("--seed", seeds),
                         ("--decode", args.decode if args.decode and len(args.decode) > 1 else None)):
        if values is not None and len(values) != len(args.checkpoints):
            raise ChordkdError(f"{flag}: {len(values)} given for {len(args.checkpoints)} checkpoints")
    if len(set(names)) != len(names):
        raise ChordkdError(f"--names: model names must be distinct, got {names}")
    decode = dict(zip(names, args.decode if args.decode and len(args.decode) > 1
                      else [args.decode[0] if args.decode else None] * len(names)))
    decoding_methods(decode, args.smoothing)  # a bad combination fails before any work
    tags = meta_tags(args.meta)
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
        if args.seed:
            meta[name]["seed"] = args.seed[k] if seeds else args.seed[0]
        if tags:
            meta[name]["tags"] = dict(tags)
    result = evaluate_models(models, songs, args.out, smoothing=args.smoothing,
                             timeline_song=args.song, strict=args.strict, meta=meta,
                             wandb=args.wandb, decoding=decode)
    print(result.files["report.md"].read_text(encoding="utf-8").split("\n## Recall")[0])
    if result.skipped:
        log.warning("skipped %d of %d songs (listed in %s)", len(result.skipped), len(songs),
                    result.files["report.md"])
    return 0
