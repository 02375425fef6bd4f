"""The ``chordkd`` command line: parses and dispatches, nothing else.

Each subcommand lives in the module that owns its concept and provides two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``chordkd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from chordkd.errors import ChordkdError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("chordkd.synth.cli", "generate a labelled synthetic corpus (audio, .lab, manifest)"),
    "fit": ("chordkd.training.fit", "train a model from an experiment YAML (+ key=value overrides)"),
    "label": ("chordkd.labelling.label", "run a teacher over audio and cache its logits"),
    "stream": ("chordkd.data.streaming", "write a corpus + teacher cache as litdata shards (stage 1)"),
    "evaluate": ("chordkd.evaluation.report", "mir_eval metrics, per-quality recall, tables and plots"),
    "results": ("chordkd.evaluation.results", "assemble the paper-style results table"),
    "transcribe": ("chordkd.transcribe", "write a .lab (or JAMS) per audio file"),
    "sweep": ("chordkd.training.sweep", "run a W&B sweep file locally and offline"),
    "noisy-student": ("chordkd.training.noisy_student", "iterated noisy-student rounds with growing students"),
    "pretrain": ("chordkd.pretraining.pretrain", "self-supervised pre-training of an encoder (contrastive, masked)"),
    "probe": ("chordkd.probing.probe", "frozen encoders -> linear and MLP probes on music tasks"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chordkd", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module: find the first known command word.
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=chosen or "__none__")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except ChordkdError as e:
        print(f"chordkd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"chordkd {args.command}: interrupted", file=sys.stderr)
        return 130
