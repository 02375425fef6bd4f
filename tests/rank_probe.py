"""Run ``chordkd`` as ``python -m chordkd`` does, and record what each DDP rank did.

``python tests/rank_probe.py fit CONFIG key=value ...`` with ``CHORDKD_RANK_PROBE=DIR`` in the
environment. Lightning's DDP launcher starts every other rank with this same command line, so
each rank writes ``DIR/rank<global rank>.json``: the world size and rank it saw, its
training steps, and the ``val/*`` metrics it logged after each validation. Test
instrumentation only: it wraps two hooks and changes nothing they do.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    out = Path(os.environ["CHORDKD_RANK_PROBE"])
    from chordkd.training.student import StudentModule
    from chordkd.training.validation import MirEvalValidation

    record: dict = {"pid": os.getpid(), "steps": 0, "val": []}

    def write(trainer) -> None:
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    training_step = StudentModule.training_step

    def probed_step(self, batch, batch_idx):
        record.update(world_size=self.trainer.world_size, global_rank=self.trainer.global_rank)
        record["steps"] += 1
        return training_step(self, batch, batch_idx)

    def on_validation_end(self, trainer, pl_module) -> None:
        record["val"].append({k: float(v) for k, v in trainer.callback_metrics.items()
                              if k.startswith("val/")})
        write(trainer)

    StudentModule.training_step = probed_step
    MirEvalValidation.on_validation_end = on_validation_end

    from chordkd.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
