"""Teacher pseudo-labelling: the teacher cache format (``teacher_cache``) and ``chordkd label``
(``label``). Importing this package does not import Lightning."""

from chordkd.labelling.teacher_cache import (
    AudioFingerprint,
    CacheEntry,
    CacheWriter,
    TeacherCache,
    TeacherOutputs,
    cache_differences,
    consolidate,
    rebuild_log_probs,
    transpose_indices,
)

__all__ = [
    "AudioFingerprint", "CacheEntry", "CacheWriter", "TeacherCache", "TeacherOutputs",
    "cache_differences", "consolidate", "rebuild_log_probs", "transpose_indices",
]
