"""Adapter: a chordkd checkpoint or an official BTC release file as a :class:`Teacher`.

The network sees the log-CQT of the waveform (its own feature settings) in 108-frame windows,
stitched by nearest window centre (:func:`chordkd.inference.songs_logits`), so its logits are
on chordkd's grid by construction. The attributes ``model``, ``vocabulary``, ``features``,
``source`` and ``path`` are those of :class:`chordkd.models.loading.LoadedModel`, so code that
takes a ``LoadedModel`` (``transcribe``, ``evaluate``) takes this teacher unchanged.
"""

from __future__ import annotations

import torch

from chordkd.features import LogCQT
from chordkd.inference import songs_logits
from chordkd.labelling.teacher_cache import file_sha1
from chordkd.models.loading import LoadedModel
from chordkd.teachers.base import Teacher


class CheckpointTeacher(Teacher):
    """A loaded chordkd or BTC network with its ``LogCQT`` front end (moved together)."""

    takes_log_cqt = True  # transcribe/evaluate share one log-CQT across such models

    def __init__(self, loaded: LoadedModel, spec: str) -> None:
        super().__init__()
        self.model = loaded.model.eval()
        self.cqt = LogCQT(loaded.features)
        self.vocabulary = loaded.vocabulary
        self.features = loaded.features
        self.grid = loaded.features
        self.source = loaded.source
        self.path = loaded.path
        self.spec = spec
        self.identity = file_sha1(loaded.path)
        self.input_fingerprint = loaded.features.fingerprint()
        net = type(getattr(self.model, "net", self.model)).__name__
        self.description = f"{loaded.source} checkpoint {loaded.path.name} ({net})"

    @torch.no_grad()
    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.batch_logits([waveform])[0]

    @torch.no_grad()
    def batch_logits(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """The windows of all songs share forward passes (keeps a GPU busy on short songs)."""
        return songs_logits(self.model, [self.cqt(w.to(self.device)) for w in waveforms])
