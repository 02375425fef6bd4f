"""chordkd: teacher-student training for automatic chord recognition.

Importing the package is light: nothing here imports Lightning or W&B. The public API is
re-exported lazily so ``from chordkd import get_vocabulary, LogCQT`` works without paying
for torch-heavy imports until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    "get_vocabulary": "chordkd.chords",
    "Vocabulary": "chordkd.chords",
    "read_lab": "chordkd.annotations",
    "write_lab": "chordkd.annotations",
    "load_audio": "chordkd.audio",
    "LogCQT": "chordkd.features",
    "FeatureSettings": "chordkd.features",
    "load_official_btc": "chordkd.models",
    "build_student": "chordkd.models",
    "transcribe": "chordkd.transcribe",
    "load_teacher": "chordkd.teachers",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'chordkd' has no attribute {name!r}")
