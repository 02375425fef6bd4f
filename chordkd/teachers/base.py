"""The teacher interface: audio -> per-frame logits on chordkd's frame grid, in a chordkd vocabulary.

A :class:`Teacher` takes one song's mono waveform at 22,050 Hz (``[n_samples]`` float32, the
samples every chordkd reader decodes) and returns logits ``[T, C]`` with ``T =
FeatureSettings().n_frames(n_samples)`` (frame ``i`` centred at ``i * 2048 / 22050`` s) and
``C`` the size of its chordkd vocabulary (``"majmin"`` 25 or ``"large"`` 170). So the teacher
cache, stage 1, stage 2, evaluation and transcription work the same for every teacher; only
the adapter knows its model's sample rate, frame rate and class order.

Two helpers do the adapting for models with their own conventions:

- :func:`to_grid` moves ``[T', C]`` frames at another frame period onto chordkd's grid by
  taking, for each chordkd frame, the source frame whose centre is nearest in time. A chord
  change between two source frames thus lands on the chordkd frame boundary nearest to the
  midpoint between them, so segment boundaries move by at most half a chordkd frame. (Linear
  interpolation of log-probabilities would blur each change over a frame and invent mixed
  frames, and at 10 -> 10.8 frames per second it buys nothing.)
- :class:`ClassMap` maps a model's own classes, given as Harte labels, into a chordkd
  vocabulary: ``log_softmax`` of the model's scores, then per chordkd class the ``logsumexp``
  of the model classes that encode to it (a permutation when the vocabularies agree, as for
  madmom's 25 classes and ``majmin``). A chordkd class no model class reaches gets log-prob
  :data:`MISSING` (finite, so float16 caches and the decoders accept it).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chordkd.chords import Vocabulary, get_vocabulary
from chordkd.errors import ChordkdError
from chordkd.features import FeatureSettings

GRID = FeatureSettings()  # chordkd's frame grid: hop 2048 at 22,050 Hz
# Log-probability of a chordkd class the teacher cannot predict: e^-10000 is 0 in every float
# format, and -10000 still fits float16 (the cache's format).
MISSING = -1.0e4
DECODERS = ("argmax", "viterbi", "crf")


class Teacher(nn.Module, abc.ABC):
    """Any model that labels audio for chordkd. Subclasses set the attributes and implement
    :meth:`logits`; ``crf`` decoding is offered by teachers that carry their own CRF.

    Attributes:
        vocabulary: the chordkd vocabulary of the logits (``"majmin"`` or ``"large"``).
        spec: the string the teacher was loaded from (``madmom:cnn``, a path, ...).
        identity: what a teacher cache records as its teacher (a rerun with the same
            identity skips songs already labelled).
        input_fingerprint: what a cache records as the feature settings (input pipeline and
            frame grid).
        description: one line for reports.
    """

    vocabulary: str
    spec: str
    identity: str
    input_fingerprint: str
    description: str
    grid: FeatureSettings = GRID
    takes_log_cqt = False  # True: ``.model`` maps chordkd's log-CQT to logits (checkpoints)

    @property
    def sr(self) -> int:
        """Sample rate of the waveforms :meth:`logits` takes (Hz): 22,050."""
        return self.grid.sr

    @property
    def vocab(self) -> Vocabulary:
        return get_vocabulary(self.vocabulary)

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    @abc.abstractmethod
    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        """One song: ``[n_samples]`` float32 at 22,050 Hz -> logits float32 ``[T, C]`` on
        chordkd's grid (``T = self.grid.n_frames(n_samples)``)."""

    def batch_logits(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Several songs (a teacher that can batch across songs overrides this)."""
        return [self.logits(w) for w in waveforms]

    def crf_classes(self, waveform: torch.Tensor) -> np.ndarray:
        """int64 ``[T]`` chordkd classes decoded by the teacher's own CRF (``--decode crf``)."""
        raise ChordkdError(f"teacher {self.spec}: has no CRF of its own; --decode crf needs "
                           "a teacher that carries one (madmom:cnn, madmom:deepchroma)")

    def check_logits(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Raise ChordkdError naming the teacher unless ``logits`` is ``[T, C]`` as promised."""
        want = (self.grid.n_frames(n_samples), self.vocab.size)
        if tuple(logits.shape) != want:
            raise ChordkdError(f"teacher {self.spec}: gave logits of shape {tuple(logits.shape)} "
                               f"for {n_samples} samples; expected {list(want)}")
        return logits


def source_frames(n_frames: int, frame_seconds: float, offset_seconds: float,
                  n_source: int, grid: FeatureSettings = GRID) -> np.ndarray:
    """int64 ``[n_frames]``: for each chordkd frame, the source frame nearest in time.

    Source frame ``j`` is centred at ``offset_seconds + j * frame_seconds``; chordkd frame
    ``i`` at ``i * hop / sr``. Indices are clipped to ``[0, n_source - 1]``.
    """
    if n_source < 1:
        raise ValueError("the source has no frames")
    times = np.arange(n_frames, dtype=np.float64) * grid.frame_seconds
    # floor(x + 0.5): a chordkd frame exactly halfway between two source frames takes the later
    nearest = np.floor((times - offset_seconds) / frame_seconds + 0.5).astype(np.int64)
    return np.clip(nearest, 0, n_source - 1)


def to_grid(values: torch.Tensor, frame_seconds: float, n_frames: int,
            offset_seconds: float = 0.0, grid: FeatureSettings = GRID) -> torch.Tensor:
    """Source frames ``[T', C]`` at ``frame_seconds`` per frame -> ``[n_frames, C]`` on
    chordkd's grid, nearest source frame in time (see the module docstring)."""
    index = source_frames(n_frames, frame_seconds, offset_seconds, values.shape[0], grid)
    return values[torch.from_numpy(index).to(values.device)]


class ClassMap:
    """A model's classes (Harte labels, one per output column) -> a chordkd vocabulary.

    >>> m = ClassMap(["C:maj", "A:min", "N"], "majmin")
    >>> m.targets.tolist()   # chordkd majmin classes of the three model classes
    [0, 19, 24]
    """

    def __init__(self, labels: Sequence[str], vocabulary: str, who: str = "teacher") -> None:
        from chordkd.errors import ChordLabelError

        self.vocab = get_vocabulary(vocabulary)
        self.labels = list(labels)
        try:
            self.targets = self.vocab.encode_many(self.labels)  # int64 [C_model]
        except ChordLabelError as e:
            raise ChordkdError(f"{who}: its class list has {e}") from None
        self.missing = sorted(set(range(self.vocab.size)) - set(self.targets.tolist()))

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """``[T, C_model]`` scores -> ``[T, vocab.size]`` log-probabilities (float32)."""
        log_p = torch.log_softmax(scores.float(), dim=-1)
        # [C_model, V]: 0 where model class m encodes to chordkd class v, -inf elsewhere
        assign = torch.full((len(self.targets), self.vocab.size), float("-inf"),
                            device=scores.device)
        assign[torch.arange(len(self.targets)), torch.from_numpy(self.targets)] = 0.0
        out = torch.logsumexp(log_p[:, :, None] + assign[None], dim=1)
        return out.clamp_min(MISSING)
