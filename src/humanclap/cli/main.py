"""``humanclap`` command line: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from humanclap import __version__
from humanclap.errors import EXIT_INTERNAL, EXIT_USAGE, REPORT_BUGS, HumanclapError
from humanclap.scoring.runtime import keep_freed_memory, quiet_transformers

log = logging.getLogger("humanclap.cli")

# Each module exposes add_parser(subparsers) and run(args) -> 0 or 1; it raises HumanclapError
# for what the user can fix and run_command below turns that into the exit code.
COMMANDS = (
    "score",
    "evaluate",
    "train",
    "reproduce",
    "synth",
    "demo",
    "convert",
    "merge",
    "compare",
    "rerank",
    "stack",
)
# The reader of stdout went away (`humanclap score m.csv | head -1`): 128 + SIGPIPE, the
# status a shell shows for any tool that SIGPIPE stopped (`yes | head -1`). Not 0 (the
# output is incomplete), not 1 (no row failed) nor 3 (no bug): `set -o pipefail` scripts
# can tell it apart. The command stops silently, as those tools do.
EXIT_BROKEN_PIPE = 141


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


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command: the one place where errors become exit codes and messages.

    A command returns 0 or 1 (the outcome of its job) and raises a ``HumanclapError`` for
    anything the user can fix; that prints one line, ``humanclap COMMAND: error: MESSAGE``,
    and exits with the error's code. Any other exception is a bug in humanclap: it exits 3
    with the traceback and where to report it, never 2, so a bug is not mistaken for a typo.
    """
    command = getattr(args, "command", None)  # None when a caller built its own parser
    prefix = f"humanclap {command}" if command else "humanclap"
    try:
        return int(args.func(args))
    except HumanclapError as exc:
        log.debug("%s failed", prefix, exc_info=True)  # -v shows where it was raised
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `humanclap score m.csv | head`: not an error of ours
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- everything else is a bug, reported as one
        traceback.print_exc()
        print(f"{prefix}: internal error: {type(exc).__name__}: {exc}; {REPORT_BUGS}", file=sys.stderr)
        return EXIT_INTERNAL


def _discard_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so that Python's flush of the rows still
    buffered, at exit, neither fails nor prints "Exception ignored ... BrokenPipeError"
    (the recipe of the Python docs, signal module: "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (captured in a test)
        pass


def main(argv: list[str] | None = None) -> int:
    """``humanclap ARGS``: parse, run the command and return its exit code (see ``run_command``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    keep_freed_memory()  # faster CPU forwards, same numbers (see scoring/runtime.py)
    quiet_transformers()  # before any command imports transformers
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
