"""Teachers: one interface, one adapter each. ``load_teacher(spec)`` accepts

- a chordkd checkpoint or an official BTC release file (a path): :mod:`.checkpoint`;
- ``madmom:cnn``, ``madmom:deepchroma`` (``-marginals`` for CRF posteriors): :mod:`.madmom`;
- ``package.module:factory``: any model mapping audio to per-frame logits with its own frame
  rate and class list: :mod:`.factory`.

Every teacher maps a waveform ``[n_samples]`` at 22,050 Hz to logits ``[T, C]`` on chordkd's
frame grid (hop 2048) in a chordkd vocabulary (:class:`Teacher`), so ``chordkd label
--teacher``, ``chordkd evaluate``, ``chordkd transcribe --checkpoint`` take the same strings.

>>> teacher = load_teacher("madmom:cnn")                      # doctest: +SKIP
>>> teacher.vocabulary, teacher.logits(waveform).shape          # ('majmin', (T, 25))
"""

from __future__ import annotations

import os
from pathlib import Path

from chordkd.errors import CheckpointError, ChordkdError
from chordkd.teachers.base import DECODERS, GRID, MISSING, ClassMap, Teacher, to_grid

SPEC_HELP = ("a chordkd checkpoint, an official BTC file, madmom:cnn, madmom:deepchroma "
             "(-marginals: CRF posteriors) or package.module:factory")

__all__ = ["DECODERS", "GRID", "MISSING", "SPEC_HELP", "ClassMap", "Teacher", "load_teacher",
           "teacher_identity", "to_grid"]


def load_teacher(spec: str | os.PathLike, expected_vocabulary: str | None = None) -> Teacher:
    """The teacher named by ``spec`` (see the module docstring), in eval mode.

    Raises ChordkdError (one line, naming the spec) for a missing file, an unknown madmom
    model, a missing madmom extra, a bad factory spec, or a vocabulary other than
    ``expected_vocabulary``.
    """
    from chordkd.teachers.factory import is_factory_spec

    text = os.fspath(spec)
    if text.startswith("madmom:"):
        from chordkd.teachers.madmom import MadmomTeacher

        name = text[len("madmom:"):]
        kind, _, output = name.partition("-")
        teacher: Teacher = MadmomTeacher(kind, output or "scores")
    elif Path(text).is_file():
        from chordkd.models.loading import load_model
        from chordkd.teachers.checkpoint import CheckpointTeacher

        teacher = CheckpointTeacher(load_model(text), text)
    elif is_factory_spec(text):
        from chordkd.teachers.factory import FactoryTeacher

        teacher = FactoryTeacher(text)
    elif ":" in Path(text).name:  # not a file, and a malformed madmom or factory spec
        raise ChordkdError(f"teacher {text!r}: no such file, and not a spec; expected {SPEC_HELP}")
    else:
        raise CheckpointError(f"{text}: no such checkpoint file (a teacher is {SPEC_HELP})")
    if expected_vocabulary is not None and teacher.vocabulary != expected_vocabulary:
        raise CheckpointError(f"teacher {text} has vocabulary {teacher.vocabulary!r} "
                              f"({teacher.vocab.size} classes); {expected_vocabulary!r} was asked for")
    return teacher.eval()


def teacher_identity(spec: str | os.PathLike) -> str:
    """The identity a teacher cache records for the teacher ``spec`` (what ``chordkd label``
    writes per song): a checkpoint file's sha1, read without loading it; for madmom and factory
    teachers, the loaded teacher's own identity (its spec and the hash of its weights)."""
    path = Path(os.fspath(spec))
    if path.is_file():
        from chordkd.labelling.teacher_cache import file_sha1

        return file_sha1(path)
    return load_teacher(spec).identity
