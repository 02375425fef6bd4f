"""Lightning checkpoints written atomically, read without unpickling foreign code."""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from chordkd.atomic import torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file, fsync and rename: a killed job leaves no half-checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        torch_save(checkpoint, path)
