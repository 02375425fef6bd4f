"""Score-derived chord labels and their agreement with the audio (analysis only).

A rendered score excerpt carries no ground truth. For analysis, :func:`label_beats` names
each beat's chord from all sounding notes (the template of chordkd's vocabulary that best
holds them, with the lowest note as bass); :func:`label_agreement` reports how often a
part's labels hold most of the audio's chroma energy. These labels go to ``labels_aside/``,
are never read by training and never appear as ground truth in a results table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chordkd.synth.harmony import QUALITY_INTERVALS, harte_label

if TYPE_CHECKING:
    from chordkd.synth.scores import Work

_TEMPLATES = [(root, q, frozenset((root + i) % 12 for i in ivs))
              for q, ivs in QUALITY_INTERVALS.items() for root in range(12)]


def chord_of(weights: np.ndarray, bass: int) -> str:
    """The Harte label whose template best holds pitch-class ``weights`` ``[12]`` (sounding
    time per class): credit for weight inside, debit for weight outside and for absent
    template tones; ties go to fewer tones and to a root in the bass."""
    total = weights.sum()
    if total <= 0:
        return "N"
    present = weights > 0.05 * weights.max()
    best, best_score = None, -np.inf
    for root, quality, pcs in _TEMPLATES:
        mask = np.zeros(12, bool)
        mask[list(pcs)] = True
        score = (weights[mask].sum() - weights[~mask].sum()) / total
        score -= 0.3 * (mask & ~present).sum() + 0.01 * len(pcs) - 0.05 * (root == bass)
        if score > best_score:
            best, best_score = (root, quality, pcs), score
    root, quality, pcs = best
    try:
        return harte_label(root, quality, bass if bass in pcs else root)
    except ValueError:  # a bass the vocabulary has no inversion for: root position
        return harte_label(root, quality)


def label_beats(w: Work, start: float, span: float, intro: float, spq: float,
                duration: float) -> tuple[np.ndarray, list[str]]:
    """Per quarter-note beat of ``[start, start + span)``: the chord of all sounding notes
    (:func:`chord_of`, the lowest sounding note as bass); equal neighbours merged, ``N``
    before, after and where nothing sounds. Intervals in seconds cover ``[0, duration]``."""
    ends = w.onset + w.duration
    bounds, labels = [0.0], ["N"]
    for b in range(int(math.ceil(span))):
        lo, hi = start + b, min(start + b + 1, start + span)
        overlap = np.minimum(ends, hi) - np.maximum(w.onset, lo)
        on = overlap > 0
        weights = np.bincount(w.pitch[on] % 12, weights=overlap[on], minlength=12)
        bass = int(w.pitch[on].min() % 12) if on.any() else 0
        label = chord_of(weights, bass)
        t = intro + (lo - start) * spq
        if label != labels[-1]:
            bounds.append(t)
            labels.append(label)
    t_end = intro + span * spq
    if labels[-1] != "N":
        bounds.append(t_end)
        labels.append("N")
    bounds.append(duration)
    intervals = np.array(list(zip(bounds[:-1], bounds[1:])), dtype=np.float64)
    return intervals, labels


def tuned_chroma(magnitude: np.ndarray, tuning_cents: float) -> np.ndarray:
    """Fold CQT magnitudes ``[frames, 144]`` (24 bins per octave from C1) to a chroma
    ``[frames, 12]``: each bin to the pitch class nearest to it once the song's tuning offset
    (cents) is removed, as a chroma with tuning estimation would."""
    semitones = np.arange(magnitude.shape[1]) / 2 - tuning_cents / 100
    pcs = np.floor(semitones + 0.5).astype(int) % 12
    chroma = np.zeros((magnitude.shape[0], 12))
    np.add.at(chroma.T, pcs, magnitude.T)
    return chroma


def label_agreement(folder: str | os.PathLike, ids: set[str] | None = None) -> dict:
    """How well a part's labels (``manifest_aside.csv``, else ``manifest.csv``) agree with
    its audio: the share of labelled (non-``N``) segments whose chord's pitch classes hold
    more than half of the chroma energy (the project's CQT front end, tuned by each song's
    known offset). ``ids``: only these songs. Writes ``score_labels.json`` in ``folder``."""
    import mir_eval
    import soundfile as sf
    import torch

    from chordkd.annotations import read_lab
    from chordkd.atomic import write_json
    from chordkd.data.manifest import read_manifest
    from chordkd.features import LogCQT

    folder = Path(folder)
    manifest = folder / "manifest_aside.csv"
    songs = read_manifest(manifest if manifest.is_file() else folder / "manifest.csv")
    songs = [s for s in songs if (ids is None or s.id in ids) and s.labels is not None]
    made_from = hashlib.sha1(" ".join(s.extra.get("audio_sha1", "") + s.extra.get(
        "labels_sha1", "") for s in songs).encode()).hexdigest()
    previous = folder / "score_labels.json"
    if previous.is_file():
        try:
            old = json.loads(previous.read_text())
            if old.get("made_from") == made_from:
                return old
        except (OSError, ValueError):
            pass
    cqt = LogCQT()
    fractions = []
    for song in songs:
        audio, _ = sf.read(str(song.audio), dtype="float32")
        with torch.no_grad():
            mag = torch.exp(cqt(torch.from_numpy(audio))).numpy()
        chroma = tuned_chroma(mag, float(song.extra["tuning_cents"]))
        centres = np.arange(len(chroma)) * cqt.settings.frame_seconds
        intervals, labels = read_lab(song.labels)
        for (start, end), label in zip(intervals, labels):
            inside = (centres >= start) & (centres < end)
            if label == "N" or not inside.any():
                continue
            root, bitmap, _ = mir_eval.chord.encode(label)
            in_chord = np.roll(bitmap, root).astype(bool)
            energy = chroma[inside].sum(axis=0)
            fractions.append(float(energy[in_chord].sum() / max(energy.sum(), 1e-12)))
    f = np.array(fractions)
    report = {
        "segments": int(len(f)),
        "agreement": round(float((f > 0.5).mean()), 4) if len(f) else None,
        "mean_chord_share_of_chroma": round(float(f.mean()), 4) if len(f) else None,
        "measure": "share of non-N segments whose chord pitch classes hold > 50% of the "
                   "tuned CQT chroma energy",
        "note": "score-derived labels (per beat, all sounding notes): analysis only, "
                "never ground truth and never read by training",
        "songs": len(songs), "made_from": made_from,
    }
    write_json(folder / "score_labels.json", report)
    return report
