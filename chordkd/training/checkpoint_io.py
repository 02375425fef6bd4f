"""Lightning checkpoints written atomically, read without unpickling foreign code."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from chordkd.atomic import torch_save
from chordkd.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file, fsync and rename: a killed job leaves no half-checkpoint.

    Loading (resume) turns an unreadable file (missing, truncated, not a torch file) into a
    ``CheckpointError`` naming it, which the CLI prints as one line.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        torch_save(checkpoint, path)

    def load_checkpoint(self, path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such checkpoint file") from None
        except Exception as error:  # torch.load reports corrupt data with assorted types
            first = (str(error).strip().splitlines() or [""])[0]
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint, or truncated "
                f"({type(error).__name__}: {first})"
            ) from error
