"""Frame-wise losses. Shapes: logits ``[batch, frames, classes]``, targets ``[batch, frames]``.

Frames whose target is ``IGNORE`` (padding past a song's end, unreadable labels) count nowhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def frame_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over valid frames."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), mean over valid frames; ``gamma = 0`` is cross-entropy."""
    logp = F.log_softmax(logits.flatten(0, 1).float(), dim=-1)
    t = targets.flatten()
    valid = t != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    logp_t = logp[valid].gather(1, t[valid, None]).squeeze(1)
    weight = (1 - logp_t.exp()).clamp_min(0) ** gamma if gamma else 1.0
    return -(weight * logp_t).mean()


def supervised_loss(logits: torch.Tensor, targets: torch.Tensor, name: str, gamma: float) -> torch.Tensor:
    if name == "ce":
        return frame_cross_entropy(logits, targets)
    if name == "focal":
        return focal_loss(logits, targets, gamma)
    raise ValueError(f"unknown loss {name!r} (ce or focal)")


def kl_per_frame(
    teacher_log_probs: torch.Tensor, student_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) per frame at temperature T, ``[batch, frames]`` (nats, no T^2).

    ``teacher_log_probs`` must already be the teacher's log-distribution at temperature T.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = teacher_log_probs.float()
    return (t.exp() * (t - s)).sum(-1)


def frame_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    valid = targets != IGNORE
    if not valid.any():
        return torch.zeros((), device=logits.device)
    return (logits.argmax(-1)[valid] == targets[valid]).float().mean()
