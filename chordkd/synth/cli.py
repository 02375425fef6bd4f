"""``chordkd synth``: generate a labelled synthetic corpus (a thin skin over corpus.py).

    chordkd synth --out data/mine --songs 20 --seconds 30 --seed 1 --workers 2
    chordkd synth --preset demo --out data/demo
    chordkd synth --preset shifted --out data/shifted
    chordkd synth --out data/sf --songs 20 --renderer soundfont [--soundfont FILE.sf2]
    chordkd synth --out data/scores --songs 20 --seconds 60 --source music21
    chordkd synth --preset realistic --out data/realistic [--pool-hours 4]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from chordkd.errors import ChordkdError
from chordkd.synth.presets import PRESETS, SOURCES, STYLES, part_plan
from chordkd.synth.song import MIN_SECONDS, RENDERERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--songs", type=int, help="number of songs (not with --preset)")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"song length in seconds (default 40, at least {MIN_SECONDS:g})")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default min(2, cpu count))")
    parser.add_argument("--style", default="demo", help=f"one of {', '.join(STYLES)} (default demo)")
    parser.add_argument("--preset", default=None,
                        help=f"make a preset's parts instead: {', '.join(PRESETS)}")
    parser.add_argument("--renderer", default=None,
                        help=f"one of {', '.join(RENDERERS)} (default builtin; soundfont for "
                             "--source music21 and --preset realistic)")
    parser.add_argument("--soundfont", default=None,
                        help=".sf2 file for --renderer soundfont (default: TimGM6mb.sf2 from "
                             "pretty_midi)")
    parser.add_argument("--source", default="harmony",
                        help=f"one of {', '.join(SOURCES)}: the harmony model (labelled) or "
                             "excerpts of music21's scores (unlabelled)")
    parser.add_argument("--pool-hours", type=float, default=None,
                        help="hours of unlabelled pool for --preset realistic (default 2)")
    parser.add_argument("--parts", nargs="+", default=None, metavar="PART",
                        help="make only these parts of --preset (e.g. --parts pool --pool-hours 4)")
    parser.add_argument("--score-cache", default=None,
                        help="folder for parsed scores (default OUT/score_cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> None:
    """Every argument error as one line, before any work."""
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise ChordkdError(f"unknown preset {args.preset!r} (known: {', '.join(PRESETS)})")
        if args.songs is not None or args.seconds is not None:
            raise ChordkdError("--preset sets the sizes itself: drop --songs/--seconds "
                               "(edit chordkd/synth/presets.py to change them)")
    else:
        if args.songs is None:
            raise ChordkdError("--songs N is required (or use --preset demo)")
        if args.songs < 1:
            raise ChordkdError(f"--songs must be at least 1, got {args.songs}")
        if args.seconds is not None and not args.seconds >= MIN_SECONDS:
            raise ChordkdError(f"--seconds must be at least {MIN_SECONDS:g}, got {args.seconds:g}")
        if args.style not in STYLES:
            raise ChordkdError(f"unknown style {args.style!r} (known: {', '.join(STYLES)})")
    if args.seed < 0:
        raise ChordkdError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise ChordkdError(f"--workers must be at least 1, got {args.workers}")
    if args.source not in SOURCES:
        raise ChordkdError(f"unknown source {args.source!r} (known: {', '.join(SOURCES)})")
    fixed = PRESETS[args.preset].renderer if args.preset is not None else None
    if args.source == "music21":
        fixed = "soundfont"
        if args.preset is not None:
            raise ChordkdError("--source is for a plain corpus; a preset names its own sources")
    if args.renderer is None:
        args.renderer = fixed or "builtin"
    if args.renderer not in RENDERERS:
        raise ChordkdError(f"unknown renderer {args.renderer!r} (known: {', '.join(RENDERERS)})")
    if fixed is not None and args.renderer != fixed:
        raise ChordkdError(f"--renderer {args.renderer} cannot render this corpus: "
                           f"it renders with --renderer {fixed} only")
    if args.renderer == "soundfont":
        from chordkd.synth.soundfont import check_soundfont, require_tinysoundfont

        require_tinysoundfont()
        check_soundfont(args.soundfont)
    elif args.soundfont is not None:
        raise ChordkdError("--soundfont is only used with --renderer soundfont")
    if args.parts is not None:
        if args.preset is None:
            raise ChordkdError("--parts picks parts of a --preset")
        unknown = sorted(set(args.parts) - set(part_plan(PRESETS[args.preset])))
        if unknown:
            raise ChordkdError(f"--parts: preset {args.preset} has no part {', '.join(unknown)} "
                               f"(its parts: {', '.join(part_plan(PRESETS[args.preset]))})")
    if args.pool_hours is not None:
        if args.preset is None or not any(p.pool for ps in part_plan(PRESETS[args.preset]).values()
                                          for p in ps):
            raise ChordkdError("--pool-hours sizes the pool of --preset realistic only")
        if not args.pool_hours > 0:
            raise ChordkdError(f"--pool-hours must be positive, got {args.pool_hours:g}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ChordkdError(f"{out}: cannot create the output folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ChordkdError(f"{out}: output folder is not writable")


def run(args: argparse.Namespace) -> int:
    from chordkd.synth.corpus import make_corpus, make_preset

    _check(args)
    progress = not args.no_progress
    if args.preset is not None:
        parts = make_preset(args.preset, args.out, seed=args.seed, workers=args.workers,
                            renderer=args.renderer, soundfont=args.soundfont, progress=progress,
                            pool_hours=args.pool_hours, parts=args.parts)
        total = sum(len(rows) for rows in parts.values())
        hours = sum(float(r["duration"]) for rows in parts.values() for r in rows) / 3600
        print(f"{args.out}: preset {args.preset}, {total} songs ({hours:.2f} h) in parts "
              f"{', '.join(parts)}")
    else:
        rows = make_corpus(args.out, args.songs, seconds=args.seconds or 40.0, seed=args.seed,
                           style=args.style, renderer=args.renderer, soundfont=args.soundfont,
                           workers=args.workers, progress=progress, source=args.source,
                           score_cache=args.score_cache)
        hours = sum(float(r["duration"]) for r in rows) / 3600
        print(f"{args.out}: {len(rows)} songs, {hours:.2f} h of audio, manifest.csv")
    return 0
