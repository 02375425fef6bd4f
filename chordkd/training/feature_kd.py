"""Feature-space distillation from cached teacher embeddings ("embedding as teacher", EAsT).

After Ding and Lerch, "Audio Embeddings as Teachers for Music Classification" (ISMIR 2023):
besides (or instead of) the teacher's logits, the student is pulled towards the teacher's
*embedding* of the same audio. Turned on, the student's loss becomes

    loss = loss_so_far + weight * L_feature

where ``L_feature`` compares the student's features with the cached embedding (written by
``chordkd label --embeddings``, :mod:`chordkd.labelling.embeddings`) over each training window:

1. **Layer.** ``last`` (default): the student's last hidden layer, the input of its classifier
   (``ChordModel.forward_features``; BTC: the output of the self-attention stack, 2E1D: the
   normalised decoder output). It is the most abstract representation that is still free of the
   class layout, and it comes from the training step's own forward pass at no extra cost.
   ``logits`` uses the classifier output instead.
2. **Time pooling** to the embedding's frame rate: student frame ``f`` (centred at
   ``f * hop / sr``, 0.0929 s apart) falls in embedding frame ``j`` whose span
   ``[offset + (j - 1/2) h, offset + (j + 1/2) h)`` holds its centre; the pooled student
   feature of ``j`` is the mean over its student frames in the window
   (:func:`pool_to_embedding_frames`). Equal rates (the BTC teacher's own hidden layer) make
   this the identity. An embedding frame cut by the window's edge is left out (only part of its
   student frames are in the window), as are frames past the song's end or the embedding's.
3. **Projection.** A learned linear map (``nn.Linear(H_student, D_teacher)``), created in
   :meth:`FeatureKD.setup` and attached to the LightningModule as ``feature_kd_projection``
   before ``configure_optimizers``, so it is trained with the student and saved in its
   checkpoints (``load_model`` keeps only ``model.*``, so exported students do not carry it).
   Mean pooling and an affine map commute, so pooling comes first (fewer frames).
4. **Loss** over the valid pooled frames of each window (:func:`distance_matrix_loss`,
   :func:`cosine_loss`): ``distance_matrix`` matches the window's normalised pairwise-distance
   structure (which frames sound alike to the teacher); ``cosine`` matches frame by frame.

**Pitch shift.** The embeddings are of the unshifted audio, while a training window may be
pitch-shifted (``data.pitch_shift``), all its frames by the same interval. ``distance_matrix``
compares frames only within a window, and transposing a whole passage keeps which of its frames
are alike (a C-G-C passage shifted to D-A-D has the same structure), so it allows pitch shift.
``cosine`` matches each student frame to the teacher's frame of the unshifted audio and would
teach the student to ignore the shift, so it requires ``data.pitch_shift=0`` (ConfigError).

**With SelectiveKD.** Callbacks combine in order and ``fit`` adds FeatureKD after SelectiveKD,
so ``loss = alpha * T^2 * KD + (1 - alpha) * supervised + weight * L_feature``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chordkd.errors import CacheError, ChordkdError, ConfigError
from chordkd.training.student import LossTerm

log = logging.getLogger(__name__)

LOSSES = ("distance_matrix", "cosine")
LAYERS = ("last", "logits")
PROJECTION = "feature_kd_projection"  # attribute of the LightningModule; key prefix in checkpoints
_EPS = 1e-8


def embedding_frames(
    frames: torch.Tensor, frame_seconds: float, hop_seconds: float, offset_seconds: float = 0.0
) -> torch.Tensor:
    """Embedding frame (long, same shape) holding each student frame's centre.

    Student frame ``f`` is centred at ``f * frame_seconds``; embedding frame ``j`` spans
    ``[offset + (j - 1/2) * hop, offset + (j + 1/2) * hop)``, so
    ``j = floor((f * frame_seconds - offset) / hop + 1/2)``. A centre exactly on a boundary
    goes to the later frame; the 1e-9 tolerance (in frames) keeps equal rates the identity
    despite float rounding. Negative ``j`` (before the embedding's first frame) is possible.
    """
    x = (frames.double() * frame_seconds - offset_seconds) / hop_seconds + 0.5
    return torch.floor(x + 1e-9).long()


class Pooled(NamedTuple):
    """Student features pooled to embedding frames, per window.

    ``features`` ``[B, J, H]``: mean over the window's student frames in each embedding frame;
    ``index`` long ``[B, J]``: the embedding frame of each slot (consecutive per window);
    ``mask`` bool ``[B, J]``: slots whose embedding frame lies wholly in the window and song.
    """

    features: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor


def pool_to_embedding_frames(
    features: torch.Tensor,
    start: torch.Tensor,
    n_frames: torch.Tensor,
    frame_seconds: float,
    hop_seconds: float,
    offset_seconds: float = 0.0,
) -> Pooled:
    """Mean-pool student frames ``[B, W, H]`` to the embedding's frames (see :class:`Pooled`).

    ``start`` long ``[B]``: each window's first song frame; ``n_frames`` long ``[B]``: each
    song's frame count (window frames at or past it are padding). An embedding frame is kept
    when every student frame whose centre it holds is in the window or past the song's end.
    """
    b, w, h = features.shape
    device = features.device
    start, n_frames = start.to(device).long(), n_frames.to(device).long()
    frames = start[:, None] + torch.arange(w, device=device)  # [B, W] song frames
    j = embedding_frames(frames, frame_seconds, hop_seconds, offset_seconds)
    j0 = j[:, :1]
    rel = j - j0  # [B, W] slot of each student frame, 0 .. J - 1
    width = int(rel.max()) + 1
    valid = frames < n_frames[:, None]
    weights = valid.to(features.dtype)
    sums = torch.zeros(b, width, h, device=device, dtype=features.dtype)
    sums.scatter_add_(1, rel[..., None].expand(-1, -1, h), features * weights[..., None])
    counts = torch.zeros(b, width, device=device, dtype=features.dtype).scatter_add_(1, rel, weights)
    pooled = sums / counts.clamp_min(1)[..., None]
    mask = counts > 0
    rows = torch.arange(b, device=device)
    # the first slot is cut by the window's start if the frame before the window shares it
    before = embedding_frames(start - 1, frame_seconds, hop_seconds, offset_seconds)
    mask[:, 0] &= ~((start > 0) & (before == j0[:, 0]))
    # the last valid slot is cut by the window's end if the next song frame shares it
    last = (torch.minimum(start + w, n_frames) - 1).clamp_min(start)  # last valid song frame
    nxt = last + 1
    j_last = embedding_frames(last, frame_seconds, hop_seconds, offset_seconds)
    j_next = embedding_frames(nxt, frame_seconds, hop_seconds, offset_seconds)
    cut = (nxt < n_frames) & (j_next == j_last)
    last_slot = (j_last - j0[:, 0]).clamp(0, width - 1)
    mask[rows, last_slot] &= ~cut
    index = j0 + torch.arange(width, device=device)
    return Pooled(pooled, index, mask & (index >= 0))


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[B, N, N]`` between the frames of ``x`` ``[B, N, D]``."""
    sq = (x * x).sum(-1)
    scale = sq[:, :, None] + sq[:, None, :]
    d2 = scale - 2 * x @ x.transpose(1, 2)  # O(B N^2) memory, not O(B N^2 D)
    # The expansion loses ~1e-7 of |x_n|^2 + |x_m|^2 to rounding: below that the frames are
    # equal (distance 0, zero gradient, where sqrt'(0) would be infinite).
    apart = d2 > 1e-6 * scale + 1e-12
    return torch.where(apart, d2, torch.ones_like(d2)).sqrt() * apart


def distance_matrix_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mismatch of the normalised pairwise-distance structure of each window's frames.

    ``student`` ``[B, N, D_s]``, ``teacher`` ``[B, N, D_t]`` (any widths), ``mask`` bool
    ``[B, N]``. For window ``b`` and its valid frames ``n != m``::

        D^s_nm = ||s_n - s_m||_2,    mu^s = mean_{n != m} D^s_nm    (D^t, mu^t likewise)
        L_b    = mean_{n != m} (D^s_nm / mu^s - D^t_nm / mu^t)^2

    and the loss is the mean of ``L_b`` over the windows with at least two valid frames and
    ``mu^t > 0`` (a window whose teacher frames are all equal has no structure to match). It is
    0 exactly when the two distance matrices are proportional, so it ignores the scale, offset
    and orientation of either feature space, and is scalar ``[]``.
    """
    s, t = student.float(), teacher.float()
    n = s.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=s.device)
    pairs = mask[:, :, None] & mask[:, None, :] & ~eye  # [B, N, N]
    n_pairs = pairs.sum((1, 2)).to(s.dtype)
    ds, dt = _pairwise_distances(s) * pairs, _pairwise_distances(t) * pairs
    mu_s = ds.sum((1, 2)) / n_pairs.clamp_min(1)
    mu_t = dt.sum((1, 2)) / n_pairs.clamp_min(1)
    keep = (n_pairs > 0) & (mu_t > _EPS)
    if not bool(keep.any()):
        return s.sum() * 0.0  # nothing comparable: zero, still attached to the graph
    diff = ds / mu_s.clamp_min(_EPS)[:, None, None] - dt / mu_t.clamp_min(_EPS)[:, None, None]
    per_window = (diff.square() * pairs).sum((1, 2)) / n_pairs.clamp_min(1)
    return per_window[keep].mean()


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean over valid frames of (1 - cos(s_n, t_n))``: ``student`` and ``teacher``
    ``[B, N, D]`` (same width: the student side is projected), ``mask`` bool ``[B, N]``; in
    ``[0, 2]``, scalar ``[]``."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=_EPS)
    m = mask.to(cos.dtype)
    return ((1.0 - cos) * m).sum() / m.sum().clamp_min(1)


_LOSS_FNS = {"distance_matrix": distance_matrix_loss, "cosine": cosine_loss}


class FeatureKD(L.Callback, LossTerm):
    """Adds ``weight * L_feature`` between the student's (projected, pooled) features and
    cached teacher embeddings (see the module docstring).

    Args:
        cache: folder written by ``chordkd label --embeddings`` for the training songs.
        loss: ``distance_matrix`` or ``cosine``.
        weight: multiplier of the feature term (>= 0).
        layer: ``last`` (the last hidden layer) or ``logits``.
    """

    def __init__(self, cache: str | Path, loss: str = "distance_matrix", weight: float = 1.0,
                 layer: str = "last") -> None:
        if loss not in LOSSES:
            raise ConfigError(f"config key 'feature_kd.loss': {loss!r} is not one of {', '.join(LOSSES)}")
        if layer not in LAYERS:
            raise ConfigError(f"config key 'feature_kd.layer': {layer!r} is not one of {', '.join(LAYERS)}")
        if not weight >= 0:
            raise ConfigError(f"config key 'feature_kd.weight': must be >= 0, got {weight}")
        self.cache_path, self.loss, self.weight, self.layer = Path(cache), loss, float(weight), layer
        self.embeddings = None
        self._song_ids: list[str] | None = None
        self._song_frames: torch.Tensor | None = None
        self._frame_seconds: float | None = None

    # -- setup ----------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from chordkd.labelling.embeddings import EmbeddingCache

        if self.embeddings is None:
            self.embeddings = EmbeddingCache(self.cache_path)
        if not hasattr(pl_module, PROJECTION):
            # Before configure_optimizers and before a checkpoint is restored, on every stage,
            # so the projection is trained, saved and reloaded like the student's own weights.
            width = self._student_width(pl_module)
            pl_module.add_module(PROJECTION, nn.Linear(width, self.embeddings.dim).to(pl_module.device))
        if stage == "fit":
            self._join(trainer.datamodule)

    def _student_width(self, pl_module: L.LightningModule) -> int:
        model = pl_module.model
        n_bins = model.net.config.get("feature_size", 144)
        was_training = model.training
        model.eval()  # a shape probe: no dropout, so no random numbers drawn
        try:
            with torch.no_grad():
                hidden, logits = model.forward_features(
                    torch.zeros(1, 2, n_bins, device=model.mean.device))
        finally:
            model.train(was_training)
        return (hidden if self.layer == "last" else logits).shape[-1]

    def _join(self, dm) -> None:
        train = getattr(dm, "train_set", None)
        if train is None or not hasattr(train, "songs"):
            raise ChordkdError("FeatureKD needs a chordkd data module with training windows")
        emb, songs = self.embeddings, train.songs
        missing = [s.id for s in songs if s.id not in emb]
        if missing:
            raise CacheError(
                f"{self.cache_path}: no embeddings for {len(missing)} of {len(songs)} training "
                f"songs ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run "
                f"`chordkd label --embeddings --teacher CKPT --audio {dm.train_source} "
                f"--out {self.cache_path}`"
            )
        if self.loss == "cosine" and dm.pitch_shift:
            raise ConfigError(
                "config key 'data.pitch_shift': feature_kd.loss=cosine matches each frame to the "
                "embedding of the unshifted audio; set data.pitch_shift=0 or use "
                "feature_kd.loss=distance_matrix (pitch-shift safe)"
            )
        dt = dm.settings.frame_seconds
        same_frames = emb.hop_seconds == dt and emb.offset_seconds == 0.0
        for s in songs:
            have = emb.frames(s.id)
            need = int(embedding_frames(torch.tensor(s.n_frames - 1), dt, emb.hop_seconds,
                                        emb.offset_seconds)) + 1
            # equal rates: the teacher's own frames, exactly; other rates: a model may drop or
            # pad one frame at the song's end
            wrong = have != need if same_frames else abs(have - need) > 1
            if wrong:
                raise CacheError(
                    f"{self.cache_path}: song {s.id!r} has {have} embedding frames of "
                    f"{emb.hop_seconds:.4f} s but its audio ({s.n_frames} frames) needs {need} "
                    "(embeddings of other audio or settings?)"
                )
        self._song_ids = [s.id for s in songs]
        self._song_frames = torch.tensor([s.n_frames for s in songs])
        self._frame_seconds = dt

    # -- the loss term --------------------------------------------------------------------
    def teacher_windows(self, song: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached embedding frames ``index`` ``[B, J]`` (consecutive per row) of songs ``song``
        ``[B]``: (float32 ``[B, J, D]`` on the CPU, bool ``[B, J]`` frames that exist)."""
        idx = index.cpu().numpy()
        b, j = idx.shape
        out = np.zeros((b, j, self.embeddings.dim), dtype=np.float32)
        have = np.zeros((b, j), dtype=bool)
        for row, si in enumerate(song.tolist()):
            emb = self.embeddings.read(self._song_ids[si])  # memory-mapped [T', D]
            first = int(idx[row, 0])
            lo, hi = max(first, 0), min(int(idx[row, -1]) + 1, emb.shape[0])
            if hi > lo:
                out[row, lo - first : hi - first] = emb[lo:hi]
                have[row, lo - first : hi - first] = True
        return torch.from_numpy(out), torch.from_numpy(have)

    def combine(self, module, batch, logits, loss, logs, hidden=None):
        if self._song_ids is None:
            raise RuntimeError("FeatureKD.setup has not run for fitting (add it to the Trainer's callbacks)")
        feats = hidden if self.layer == "last" else logits
        if feats is None:
            raise RuntimeError("FeatureKD needs the student's hidden layer (LossTerm.combine's hidden)")
        if "song" not in batch or "start" not in batch:
            raise RuntimeError("FeatureKD needs training windows with 'song' and 'start'")
        if self.weight == 0.0:
            return loss
        emb = self.embeddings
        song = batch["song"]
        pooled = pool_to_embedding_frames(
            feats.float(), batch["start"], self._song_frames.to(song.device)[song],
            self._frame_seconds, emb.hop_seconds, emb.offset_seconds,
        )
        target, have = self.teacher_windows(song, pooled.index)
        device = feats.device
        mask = pooled.mask & have.to(device)
        student = getattr(module, PROJECTION)(pooled.features)
        term = _LOSS_FNS[self.loss](student, target.to(device), mask)
        logs["train/feature_kd_loss"] = term.detach()
        return loss + self.weight * term
