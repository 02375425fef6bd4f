"""``chordkd synth``: generate a labelled synthetic corpus (a thin skin over corpus.py).

    chordkd synth --out data/mine --songs 20 --seconds 30 --seed 1 --workers 2
    chordkd synth --preset demo --out data/demo
    chordkd synth --preset shifted --out data/shifted
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from chordkd.errors import ChordkdError
from chordkd.synth.presets import PRESETS, STYLES
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
    parser.add_argument("--renderer", default="builtin", help=f"one of {', '.join(RENDERERS)}")
    parser.add_argument("--soundfont", default=None, help=".sf2 file for --renderer fluidsynth")
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
    if args.renderer not in RENDERERS:
        raise ChordkdError(f"unknown renderer {args.renderer!r} (known: {', '.join(RENDERERS)})")
    if args.renderer == "fluidsynth":
        from chordkd.synth.fluid import check_soundfont, require_fluidsynth

        check_soundfont(args.soundfont)
        require_fluidsynth()
    elif args.soundfont is not None:
        raise ChordkdError("--soundfont is only used with --renderer fluidsynth")
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
                            renderer=args.renderer, soundfont=args.soundfont, progress=progress)
        total = sum(len(rows) for rows in parts.values())
        print(f"{args.out}: preset {args.preset}, {total} songs in parts {', '.join(parts)}")
    else:
        rows = make_corpus(args.out, args.songs, seconds=args.seconds or 40.0, seed=args.seed,
                           style=args.style, renderer=args.renderer, soundfont=args.soundfont,
                           workers=args.workers, progress=progress)
        hours = sum(float(r["duration"]) for r in rows) / 3600
        print(f"{args.out}: {len(rows)} songs, {hours:.2f} h of audio, manifest.csv")
    return 0
