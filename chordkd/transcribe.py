"""Audio -> chord labels: the whole pipeline in view, and ``chordkd transcribe``.

    audio (22050 Hz mono)  --LogCQT-->  [T, 144]  --model-->  [T, C] logits
        --decoding (argmax, or Viterbi with self-transition p)-->  [T] classes
        --frames_to_intervals-->  (intervals [n, 2] seconds, Harte labels)

Each arrow is a function you can call alone (``LogCQT``, ``chordkd.inference.song_logits``,
``chordkd.decoding.decode``, ``chordkd.annotations.frames_to_intervals``); :func:`transcribe`
composes them, and the CLI is a thin skin over it:

    chordkd transcribe song.mp3 more/ --checkpoint btc_model_large_voca.pt --out labs/ \\
        [--jams] [--smoothing 0.9] [--decode crf] [--vocabulary large|majmin] [--strict]

``--checkpoint`` (alias ``--teacher``) takes any teacher spec (``chordkd.teachers``):
``madmom:cnn`` transcribes with madmom's CNN, and ``--decode crf`` with madmom's own CRF.

writes ``labs/<audio stem>.lab`` (and ``.jams``) per audio file; folders are searched for
audio files recursively. Files that cannot be read are skipped with a warning and counted
(``--strict`` stops at the first).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from chordkd.annotations import frames_to_intervals, write_jams, write_lab
from chordkd.audio import is_audio_file, load_audio
from chordkd.chords import Vocabulary, get_vocabulary
from chordkd.decoding import decode_with_smoothing
from chordkd.errors import AudioError, CheckpointError, ChordkdError
from chordkd.features import FeatureSettings, LogCQT
from chordkd.inference import song_logits
from chordkd.teachers.base import DECODERS

log = logging.getLogger(__name__)

AudioInput = str | os.PathLike | np.ndarray
BTC_FEATURES = FeatureSettings()  # BTC's CQT settings, the default everywhere


@dataclass(frozen=True)
class Transcription:
    """One song decoded by one model.

    ``classes``: int64 ``[T]`` frame classes in ``vocabulary`` (frame ``i`` centred at
    ``i * hop / sr`` s); ``intervals``: float64 ``[n, 2]`` seconds covering
    ``[0, duration]``; ``labels``: ``n`` Harte labels.
    """

    classes: np.ndarray
    intervals: np.ndarray
    labels: list[str]
    vocabulary: Vocabulary
    duration: float


@functools.lru_cache(maxsize=4)
def front_end(settings: FeatureSettings = BTC_FEATURES, device: str = "cpu") -> LogCQT:
    """A ``LogCQT`` for ``settings`` on ``device``, built once (its kernels are ~38 MB)."""
    return LogCQT(settings).to(device).eval()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def unpack_model(
    model: Any, vocabulary: str | Vocabulary | None = None, features: Any = None
) -> tuple[nn.Module, Vocabulary, LogCQT | None]:
    """Accept a ``ChordModel``, a ``LoadedModel`` (``.model``, ``.vocabulary``, ``.features``)
    or a :class:`chordkd.teachers.Teacher` (a waveform teacher comes back as itself, with no
    front end).

    The vocabulary and feature settings of a ``LoadedModel`` are used unless given. A
    vocabulary that disagrees with the model's output size raises ``CheckpointError``.
    """
    if is_waveform_teacher(model):  # madmom, factory: no log-CQT, their own pipeline
        vocab = get_vocabulary(model.vocabulary)
        if vocabulary is not None and getattr(vocabulary, "name", vocabulary) != vocab.name:
            raise CheckpointError(f"teacher {model.spec} has vocabulary {vocab.name!r}, "
                                  f"not {getattr(vocabulary, 'name', vocabulary)!r}")
        return model, vocab, None
    if isinstance(model, nn.Module) and not hasattr(model, "vocabulary"):
        net, vocab_name, settings = model, vocabulary, None
    elif isinstance(getattr(model, "model", None), nn.Module):
        net = model.model
        vocab_name = vocabulary if vocabulary is not None else model.vocabulary
        settings = getattr(model, "features", None)
    else:
        raise ChordkdError(
            f"expected a ChordModel or a LoadedModel, got {type(model).__name__}"
        )
    vocab = vocab_name if isinstance(vocab_name, Vocabulary) else get_vocabulary(vocab_name or "large")
    n_classes = getattr(net, "n_classes", None)
    if n_classes is not None and n_classes != vocab.size:
        raise CheckpointError(
            f"the model has {n_classes} classes; vocabulary {vocab.name!r} has {vocab.size}"
        )
    if features is None and isinstance(settings, FeatureSettings):
        features = settings
    if isinstance(features, FeatureSettings):
        features = front_end(features, str(model_device(net)))
    return net, vocab, features


def audio_samples(audio: AudioInput, sr: int) -> np.ndarray:
    """float32 ``[n]`` at ``sr`` Hz from a path (decoded, resampled) or an array (checked)."""
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, sr=sr)
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise AudioError(f"audio array must be mono with shape [n_samples], got {samples.shape}")
    if samples.dtype.kind != "f":
        raise AudioError(f"audio array must hold floats in [-1, 1], got dtype {samples.dtype}")
    if samples.size == 0 or not np.isfinite(samples).all():
        raise AudioError("audio array is empty or contains NaN or infinite samples")
    return samples.astype(np.float32, copy=False)


@torch.no_grad()
def log_cqt(samples: np.ndarray, features: LogCQT, device: torch.device | str) -> torch.Tensor:
    """Log-CQT ``[T, n_bins]`` float32 of one song's samples ``[n]``, on ``device``."""
    features = features.to(device)
    return features(torch.from_numpy(np.ascontiguousarray(samples)).to(device))


def transcribe_features(
    feats: torch.Tensor,
    model: nn.Module,
    vocab: Vocabulary,
    duration: float,
    settings: FeatureSettings = BTC_FEATURES,
    smoothing: float | None = None,
    decoding: str | None = None,
) -> Transcription:
    """Model + decoding + intervals for one song's raw log-CQT ``[T, 144]``.

    ``duration``: the song's length in seconds (the last interval ends there). ``decoding``:
    see :func:`resolve_decoding` (a CQT network has no CRF of its own).
    """
    if resolve_decoding(decoding, smoothing) == "crf":
        raise ChordkdError(f"{type(getattr(model, 'net', model)).__name__}: has no CRF of its "
                           "own; --decode crf needs madmom:cnn or madmom:deepchroma")
    was_training = model.training
    model.eval()
    try:
        logits = song_logits(model, feats.to(model_device(model)))  # [T, C]
    finally:
        model.train(was_training)
    if logits.shape[-1] != vocab.size:
        raise CheckpointError(
            f"the model produced {logits.shape[-1]} classes; vocabulary {vocab.name!r} "
            f"has {vocab.size}"
        )
    classes = decode_with_smoothing(logits, smoothing)
    intervals, labels = frames_to_intervals(classes, vocab, settings.hop, settings.sr, duration)
    return Transcription(classes, intervals, labels, vocab, duration)


def transcribe_waveform(
    samples: np.ndarray,
    teacher: Any,
    smoothing: float | None = None,
    decoding: str | None = None,
) -> Transcription:
    """A waveform teacher (``madmom:cnn``, a factory model) on one song's samples ``[n]`` at
    22,050 Hz: its logits on chordkd's grid decoded by argmax or Viterbi, or its own CRF
    (``decoding="crf"``), then intervals."""
    vocab = get_vocabulary(teacher.vocabulary)
    grid = teacher.grid
    waveform = torch.from_numpy(np.ascontiguousarray(samples))
    if resolve_decoding(decoding, smoothing) == "crf":
        classes = np.asarray(teacher.crf_classes(waveform), dtype=np.int64)
    else:
        classes = decode_with_smoothing(teacher.logits(waveform), smoothing)
    duration = len(samples) / grid.sr
    intervals, labels = frames_to_intervals(classes, vocab, grid.hop, grid.sr, duration)
    return Transcription(classes, intervals, labels, vocab, duration)


def is_waveform_teacher(model: Any) -> bool:
    """A :class:`chordkd.teachers.Teacher` that reads the waveform itself (not log-CQT)."""
    from chordkd.teachers.base import Teacher

    return isinstance(model, Teacher) and not getattr(model, "takes_log_cqt", False)


def resolve_decoding(decoding: str | None, smoothing: float | None) -> str:
    """``"argmax"``, ``"viterbi"`` or ``"crf"`` from ``--decode`` and ``--smoothing``:
    no ``decoding`` means Viterbi when ``smoothing`` is given, else argmax. Raises
    ChordkdError for ``viterbi`` without ``smoothing`` or ``smoothing`` with another decoder."""
    if decoding is None:
        return "argmax" if smoothing is None else "viterbi"
    if decoding not in DECODERS:
        raise ChordkdError(f"--decode {decoding!r}: choose one of {', '.join(DECODERS)}")
    if decoding == "viterbi" and smoothing is None:
        raise ChordkdError("--decode viterbi needs --smoothing P (its self-transition probability)")
    if decoding != "viterbi" and smoothing is not None:
        raise ChordkdError(f"--smoothing is the Viterbi decoder's; it does not apply to "
                           f"--decode {decoding}")
    return decoding


def transcribe_song(
    audio: AudioInput,
    model: Any,
    vocabulary: str | Vocabulary | None = None,
    smoothing: float | None = None,
    features: LogCQT | FeatureSettings | None = None,
    decoding: str | None = None,
) -> Transcription:
    """Like :func:`transcribe`, returning the frame classes too (a :class:`Transcription`)."""
    net, vocab, front = unpack_model(model, vocabulary, features)
    if is_waveform_teacher(net):
        return transcribe_waveform(audio_samples(audio, net.sr), net, smoothing, decoding)
    front = front if front is not None else front_end(BTC_FEATURES, str(model_device(net)))
    settings = front.settings
    samples = audio_samples(audio, settings.sr)
    feats = log_cqt(samples, front, model_device(net))
    return transcribe_features(feats, net, vocab, len(samples) / settings.sr, settings, smoothing,
                               decoding)


def transcribe(
    audio: AudioInput,
    model: Any,
    vocabulary: str | Vocabulary | None = None,
    smoothing: float | None = None,
    features: LogCQT | FeatureSettings | None = None,
    decoding: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Chord intervals and labels of one song.

    Args:
        audio: a path (any format ``load_audio`` reads) or float32 mono samples ``[n]`` at
            the features' sample rate (22050 Hz by default).
        model: a ``ChordModel`` (raw log-CQT ``[B, T, 144]`` -> logits ``[B, T, C]``), a
            ``LoadedModel`` from ``chordkd.models.loading.load_model`` (which brings its
            vocabulary and feature settings), or any teacher from
            ``chordkd.teachers.load_teacher`` (``"madmom:cnn"``, ...).
        vocabulary: ``"large"`` (170 classes) or ``"majmin"`` (25); default: the
            ``LoadedModel``'s, else ``"large"``. Must match the model's output size.
        smoothing: None for frame-wise argmax, or the Viterbi self-transition probability
            ``p`` in [0, 1) (0.9-0.99 smooths; see ``chordkd.decoding``).
        features: a ``LogCQT`` front end (or its ``FeatureSettings``); default BTC's.
        decoding: ``"crf"`` decodes with the teacher's own CRF (madmom's); default: argmax,
            or Viterbi when ``smoothing`` is given.

    Returns:
        intervals float64 ``[n, 2]`` seconds covering ``[0, duration]``, and ``n`` labels.

    >>> intervals, labels = transcribe("song.wav", load_model("btc.pt"))  # doctest: +SKIP
    """
    result = transcribe_song(audio, model, vocabulary, smoothing, features, decoding)
    return result.intervals, result.labels


# --------------------------------------------------------------------------------------------
# CLI


def smoothing_probability(text: str) -> float:
    """argparse type for ``--smoothing``: a probability in [0, 1)."""
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"self-transition probability must be in [0, 1), got {p}")
    return p


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", metavar="AUDIO",
                        help="audio files, or folders searched recursively for audio files")
    parser.add_argument("--checkpoint", "--teacher", dest="checkpoint", required=True,
                        metavar="SPEC", help="the model: a chordkd checkpoint, an official BTC "
                        "file, madmom:cnn, madmom:deepchroma or package.module:factory")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the .lab files")
    parser.add_argument("--jams", action="store_true", help="also write a .jams per file")
    parser.add_argument("--smoothing", type=smoothing_probability, default=None, metavar="P",
                        help="Viterbi smoothing with self-transition probability P "
                             "(e.g. 0.9); default: frame-wise argmax")
    parser.add_argument("--decode", choices=DECODERS, default=None,
                        help="argmax, viterbi (with --smoothing) or crf (the teacher's own CRF: "
                             "madmom); default: viterbi if --smoothing is given, else argmax")
    parser.add_argument("--vocabulary", choices=("large", "majmin"), default=None,
                        help="check the checkpoint has this vocabulary (default: the checkpoint's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable file instead of skipping it")


def collect_audio(paths: list[str | os.PathLike]) -> list[Path]:
    """Audio files named by ``paths`` (folders searched recursively), in the given order.

    Files are not checked here (a bad one fails when read); two files with the same stem
    would write the same .lab, so that raises ``ChordkdError`` naming both.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and is_audio_file(f))
        else:
            files.append(p)
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem] != f:
            raise ChordkdError(f"{f} and {seen[f.stem]} would both be written as {f.stem}.lab")
        seen[f.stem] = f
    return list(dict.fromkeys(files))


def run(args: argparse.Namespace) -> int:
    from chordkd.teachers import load_teacher

    files = collect_audio(args.audio)
    if not files:
        raise ChordkdError(f"no audio files in {', '.join(map(str, args.audio))}")
    resolve_decoding(args.decode, args.smoothing)  # a bad combination fails before any work
    loaded = load_teacher(args.checkpoint, expected_vocabulary=args.vocabulary)
    loaded.to(resolve_device(args.device)).eval()
    out = Path(args.out)
    written, skipped = 0, []
    for path in files:
        try:
            result = transcribe_song(path, loaded, smoothing=args.smoothing, decoding=args.decode)
        except ChordkdError as exc:
            if args.strict:
                raise
            log.warning("skipping %s: %s", path, exc)
            skipped.append(path)
            continue
        write_lab(out / f"{path.stem}.lab", result.intervals, result.labels)
        if args.jams:
            write_jams(out / f"{path.stem}.jams", result.intervals, result.labels,
                       result.duration, title=path.stem)
        written += 1
    log.info("wrote %d of %d transcriptions to %s%s", written, len(files), out,
             f"; skipped {len(skipped)} unreadable files" if skipped else "")
    return 0 if written else 1
