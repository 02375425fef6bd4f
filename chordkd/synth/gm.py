"""General MIDI instruments: which programs each role of an arrangement draws from.

Programs are 0-based GM numbers (0 = Acoustic Grand Piano); a program's family is
``program // 8`` in the GM table (Piano, Chromatic Percussion, Organ, ...). Drums are the GM
percussion bank (128).

The sets are disjoint where the presets need it: :data:`UNSEEN_PROGRAMS` (chromatic
percussion, accordions and harmonica, "ethnic" instruments) are used only by the
``realistic`` preset's score-rendered test part, so that part measures how a model copes with
instruments it has never heard.
"""

from __future__ import annotations

import numpy as np

FAMILIES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive",
    "Sound Effects",
)
DRUM_BANK = 128

# Roles of a harmony-model song.
SONG_ROLES: dict[str, tuple[int, ...]] = {
    "bass": (32, 33, 34, 35, 36, 38, 39, 43),  # acoustic .. synth basses, contrabass
    "comping": (0, 1, 2, 4, 5, 6, 16, 17, 18, 24, 25, 26, 27),  # pianos, organs, guitars
    "pad": (19, 48, 49, 50, 52, 53, 88, 89, 90, 91, 94, 95),  # church organ, strings, choir, pads
    "melody": (40, 56, 60, 65, 66, 68, 71, 73, 74, 80, 81, 64),  # violin, brass, reeds, pipes, leads
}
# Kits of the percussion bank (TimGM6mb holds these).
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)

# Parts of a rendered score: any voice, and the lowest voice (needs a low register).
SCORE_VOICES = (0, 6, 16, 19, 24, 40, 41, 42, 46, 48, 52, 53, 56, 57, 60, 61, 64, 65, 66, 68,
                69, 70, 71, 72, 73, 74, 79)
SCORE_LOW_VOICES = (19, 32, 42, 43, 57, 58, 70, 0)

# Only for the score-rendered test part: programs no other part uses.
UNSEEN_PROGRAMS = tuple(range(8, 16)) + (21, 22, 23) + tuple(range(104, 112))
UNSEEN_LOW_PROGRAMS = (12, 21, 23, 107)


def family(program: int) -> str:
    """The GM family of a 0-based program number, e.g. ``family(33) == "Bass"``."""
    if not 0 <= program < 128:
        raise ValueError(f"GM program must be in 0..127, got {program}")
    return FAMILIES[program // 8]


def program_name(program: int) -> str:
    """The GM instrument name of a 0-based program (``0`` -> ``Acoustic Grand Piano``)."""
    import pretty_midi

    return pretty_midi.program_to_instrument_name(int(program))


def draw(rng: np.random.Generator, programs: tuple[int, ...]) -> int:
    return int(programs[int(rng.integers(len(programs)))])


def describe(roles: dict[str, int], drum_kit: int | None) -> dict[str, str]:
    """Manifest columns for an arrangement: ``instruments`` (``role:program`` pairs, drums as
    ``drums:128/kit``) and ``families`` (``role:family``), ``;``-separated, roles in order.

    >>> describe({"bass": 33, "pad": 89}, 0)["families"]
    'bass:Bass;pad:Synth Pad;drums:Drums'
    """
    programs = [f"{role}:{p}" for role, p in roles.items()]
    families = [f"{role}:{family(p)}" for role, p in roles.items()]
    if drum_kit is not None:
        programs.append(f"drums:{DRUM_BANK}/{drum_kit}")
        families.append("drums:Drums")
    return {"instruments": ";".join(programs), "families": ";".join(families)}


assert not set(UNSEEN_PROGRAMS) & set().union(*SONG_ROLES.values(), SCORE_VOICES,
                                               SCORE_LOW_VOICES)
