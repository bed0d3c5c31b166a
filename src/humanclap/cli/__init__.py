"""The ``humanclap`` command line: one thin module per command, errors mapped to exit codes once."""

from humanclap.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
