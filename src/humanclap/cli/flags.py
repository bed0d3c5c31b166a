"""Flags that several commands share, defined once: same names, defaults and help everywhere.

Where a command's help says something more specific (``score``'s ``--batch-size`` adds that
scores do not depend on it), it passes ``help=``; the name, type and default stay the ones here.
Nothing here imports torch at module level: the CLI must answer ``--help`` at once.
"""

from __future__ import annotations

import argparse

from humanclap.errors import UsageError

# The last lines of every command's "exit codes:" epilog: 3 and 130 mean the same for all.
EXIT_CODES_TAIL = ("3 internal error (a bug in humanclap: the traceback is printed, please\n"
                   "report it); 130 interrupted (Ctrl-C); 141 the reader of stdout went away\n"
                   "(`| head`): output stops there, silently")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")


def add_dtype(p: argparse.ArgumentParser, help: str = "compute precision (default fp32)") -> None:
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help=help)


def add_batch_size(p: argparse.ArgumentParser, help: str = "clips per forward pass (default 8)") -> None:
    p.add_argument("--batch-size", type=int, default=8, help=help)


def add_n_boot(p: argparse.ArgumentParser,
               help: str = "bootstrap resamples for CIs (default 1000)") -> None:
    p.add_argument("--n-boot", type=int, default=1000, help=help)


def add_plots(p: argparse.ArgumentParser, help: str = "write the PNG plots (default on)") -> None:
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help=help)


def add_progress(p: argparse.ArgumentParser,
                 help: str = "progress bars (default: on when stderr is a terminal)") -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=help)


def check_batch_size(batch_size: int) -> None:
    """1 to ``MAX_BATCH_SIZE`` rows per step (the scoring job's rule, checked before a model loads)."""
    from humanclap.scoring.job import check_batch_size as job_rule

    job_rule(batch_size)


def check_audio_root(audio_root: str | None) -> None:
    """An ``--audio-root`` that is not a folder would fail every relative row as "file not
    found", blaming each clip for one wrong flag: refuse it once, before any work."""
    if audio_root is None:
        return
    from pathlib import Path

    root = Path(audio_root).expanduser()
    if not root.is_dir():
        what = "a file" if root.exists() else "missing"
        raise UsageError(f"--audio-root {audio_root} is {what}, not a folder; pass the folder that "
                         "the manifest's relative audio paths start from")


def check_n_boot(n_boot: int) -> None:
    from humanclap.defaults import MAX_N_BOOT

    if n_boot < 0:
        raise UsageError("--n-boot must be 0 or more (0 = no bootstrap CIs)")
    if n_boot > MAX_N_BOOT:  # before the output folder is made (the library repeats this)
        raise UsageError(f"--n-boot {n_boot} is too large: at most {MAX_N_BOOT} resamples (the "
                         "CIs do not get better beyond that)")


def check_compute(device: str, dtype: str = "fp32") -> None:
    """Refuse a ``--device``/``--dtype`` this machine cannot run before any data or model
    loads (the scorer's own checks, called early; they raise ``UsageError``)."""
    from humanclap.scoring.device import check_dtype, resolve_device

    check_dtype(dtype, resolve_device(device))
