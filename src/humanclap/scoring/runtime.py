"""Process-wide settings that make CPU forward passes faster without changing a number.

A forward pass of a full-size CLAP tower allocates and frees tens of MB of activations per
layer. glibc's defaults hand blocks above 128 kB back to the kernel with ``munmap`` (or
trim the heap), so the next pass page-faults the same memory in again, zeroed: a fifth of
a CPU forward's time on the development machine. :func:`keep_freed_memory` raises those
thresholds so the process reuses what it freed (what jemalloc or tcmalloc, the allocators
PyTorch's CPU tuning guide recommends, do by default). The arithmetic, and so every bit
of every embedding, is unchanged (``tests/test_determinism.py``); the peak resident memory
stays the peak the run reached.

:func:`quiet_transformers` silences transformers' and the Hub client's progress bars and info
logs, for the CLI (its own output stays readable); it imports neither.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MB for reuse (once per process); False
    where there is no glibc (macOS, musl, Windows) or it refuses."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    return _applied


def quiet_transformers() -> None:
    """Silence transformers' own progress bars and info logs (CLI output stays readable).

    Through the variables that transformers and huggingface_hub read when they are first
    imported (so that a command that never loads a model does not import them for this),
    and directly where they are imported already."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        try:
            # lazy: transformers is configured only when something else imported it
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except Exception:  # older/newer transformers without these helpers
            pass
