"""The errors chordkd raises for bad input. Each message names the file and line or field.

The CLI prints any ``ChordkdError`` as a one-line message and exits with status 2.
"""

from __future__ import annotations


class ChordkdError(ValueError):
    """Bad input from the user: a file, a label, a config key, an argument."""


class ChordLabelError(ChordkdError):
    """A chord label that cannot be parsed or encoded."""


class AnnotationError(ChordkdError):
    """A .lab or JAMS file that is malformed (message names file and line)."""


class AudioError(ChordkdError):
    """Audio that cannot be read, is empty, too short, or at the wrong rate."""


class ConfigError(ChordkdError):
    """An experiment config with an unknown key or a wrong type (message names the key path)."""


class CheckpointError(ChordkdError):
    """A checkpoint that is truncated, of another vocabulary, or of an unknown layout."""


class CacheError(ChordkdError):
    """A teacher cache that is missing, inconsistent or was written with other settings."""
