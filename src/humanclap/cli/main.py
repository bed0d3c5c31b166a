"""``humanclap`` command line: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from humanclap import __version__

# Each module exposes add_parser(subparsers) and run(args) -> exit code.
COMMANDS = ("score", "evaluate", "train", "reproduce", "synth", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="humanclap",
        description="Human-aligned text-audio relevance scoring (Human-CLAP): score clips against "
                    "texts, evaluate metrics against listeners, fine-tune on your own ratings.",
    )
    parser.add_argument("--version", action="version", version=f"humanclap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"humanclap.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `humanclap score m.csv | head`: not an error of ours
        sys.stderr.close()
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
