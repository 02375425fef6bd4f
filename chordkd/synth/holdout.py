"""Works reserved for independent evaluation: never rendered, never pooled (``shared/HOLDOUT.md``).

Every renderer and corpus builder that reads a score asks :func:`refuse_held_out` first, so
the list lives here and nowhere else. A work is refused by *what it is*, in every format the
music21 corpus holds it in (``.mxl``, ``.krn``, ``.xml``, ``.rntxt``, ...):

- every Monteverdi madrigal (``monteverdi/madrigal.*``);
- the twenty Bach chorales analysed in ``bach/choraleAnalyses/`` (by BWV number), and every
  file of that folder;
- every Roman-numeral analysis file (``*.rntxt``).
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

from chordkd.errors import ChordkdError

# BWV numbers of the chorales analysed in music21's bach/choraleAnalyses/.
HELD_OUT_CHORALES = frozenset({
    "269", "347", "153.1", "86.6", "267", "281", "17.7", "40.8", "248.12-2", "38.6",
    "41.6", "65.2", "33.6", "184.5", "277", "311", "145.5", "318", "351", "302",
})
_BWV = re.compile(r"^bwv[ _-]?(?P<number>[0-9][0-9a-z.\-]*)$")
# Formats music21's corpus holds scores in (a work is refused in each of them).
_SCORE_EXTENSIONS = {".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi", ".md",
                     ".rntxt", ".mei", ".capx", ".nwctxt", ".tntxt"}


def held_out_reason(work: str | os.PathLike) -> str | None:
    """Why ``work`` (a corpus path, absolute or relative, or a music21 corpus name like
    ``bach/bwv269``) is held out, or ``None`` if it is free to use."""
    parts = [p.lower() for p in PurePath(str(work)).parts]
    if not parts:
        return None
    name = parts[-1]
    stem, ext = os.path.splitext(name)
    if ext == ".rntxt":
        return "a Roman-numeral analysis file (*.rntxt)"
    if "choraleanalyses" in parts:
        return "a file of bach/choraleAnalyses/"
    if "monteverdi" in parts and name.startswith("madrigal"):
        return "a Monteverdi madrigal"
    # music21 names bwv files without extension too ("bach/bwv269"); accept both forms.
    match = _BWV.match(stem if ext in _SCORE_EXTENSIONS else name)
    if match and match["number"] in HELD_OUT_CHORALES:  # wherever the file lies
        return f"the chorale BWV {match['number']}, analysed in bach/choraleAnalyses/"
    return None


def is_held_out(work: str | os.PathLike) -> bool:
    """True if ``work`` is reserved for independent evaluation (see the module docstring)."""
    return held_out_reason(work) is not None


def refuse_held_out(work: str | os.PathLike) -> None:
    """Raise :class:`ChordkdError` naming ``work`` if it is held out; return otherwise."""
    reason = held_out_reason(work)
    if reason is not None:
        raise ChordkdError(f"{work}: held out for independent evaluation ({reason}); "
                           "see shared/HOLDOUT.md")
