"""Flags that several commands share, defined once: same names, defaults and help everywhere.

Where a command's help says something more specific (``score``'s ``--batch-size`` adds that
scores do not depend on it), it passes ``help=``; the name, type and default stay the ones here.
Nothing here imports torch at module level: the CLI must answer ``--help`` at once.
"""

from __future__ import annotations

import argparse

# The last lines of every command's "exit codes:" epilog: 3 and 130 mean the same for all.
EXIT_CODES_TAIL = (
    "3 internal error (a bug in humanclap: the traceback is printed, please\n"
    "report it); 130 interrupted (Ctrl-C); 141 the reader of stdout went away\n"
    "(`| head`): output stops there, silently"
)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")


def add_dtype(p: argparse.ArgumentParser, help: str = "compute precision (default fp32)") -> None:
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help=help)


def add_batch_size(p: argparse.ArgumentParser, help: str = "clips per forward pass (default 8)") -> None:
    p.add_argument("--batch-size", type=int, default=8, help=help)


def add_n_boot(p: argparse.ArgumentParser, help: str = "bootstrap resamples for CIs (default 1000)") -> None:
    p.add_argument("--n-boot", type=int, default=1000, help=help)


def add_plots(p: argparse.ArgumentParser, help: str = "write the PNG plots (default on)") -> None:
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help=help)


def add_progress(
    p: argparse.ArgumentParser, help: str = "progress bars (default: on when stderr is a terminal)"
) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=help)


def check_compute(device: str, dtype: str = "fp32") -> None:
    """Refuse a ``--device``/``--dtype`` this machine cannot run before any data or model
    loads (the scorer's own checks, called early; they raise ``UsageError``)."""
    # lazy: keeps torch out of `humanclap --help`
    from humanclap.scoring.device import check_dtype, resolve_device

    check_dtype(dtype, resolve_device(device))
