"""Devices and compute dtypes, shared by every model family: one set of names, one error.

``resolve_device`` turns ``--device`` into a ``torch.device`` (``UsageError`` for a name this
machine lacks), ``check_dtype`` refuses an unknown or unrunnable ``--dtype`` (``UsageError``,
whatever the family), ``autocast`` is the context every family's forward runs in, and
``device_numerics`` names what float rounding depends on (part of every cache key).
"""

from __future__ import annotations

import re

import torch

from humanclap.errors import UsageError

__all__ = ["DEVICE_FORMS", "DTYPES", "autocast", "check_dtype", "device_and_dtype", "device_numerics", "resolve_device"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps"


def device_numerics(device: torch.device) -> str:
    """The device as far as float rounding goes: the GPU's name, or the CPU's vector
    instruction set (part of every scorer's ``numerics``)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        cpu_capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")
        return f"cpu:{cpu_capability()}"
    return device.type


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available here.

    Raises :class:`UsageError` (exit 2) for a malformed name or a device this machine lacks."""
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", name)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"--device {device!r} not understood; valid forms: {DEVICE_FORMS}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {device!r} requested but CUDA is not available; use --device cpu "
                f"(or auto). Valid forms: {DEVICE_FORMS}"
            )
        if index is not None and int(index) >= torch.cuda.device_count():
            raise UsageError(
                f"device {device!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    if kind == "mps" and not has_mps:
        raise UsageError(
            f"device {device!r} requested but MPS is not available; use --device cpu "
            f"(or auto). Valid forms: {DEVICE_FORMS}"
        )
    return torch.device(name)


def check_dtype(dtype: str, device: torch.device) -> None:
    """Raise :class:`UsageError` for an unknown compute dtype or one the device cannot run."""
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is not supported on CPU; use --dtype bf16 or fp32")


def device_and_dtype(device: str | torch.device, dtype: str) -> torch.device:
    """A scorer's device, with ``dtype`` checked: an unknown dtype is reported before the
    device is resolved (a typo needs no CUDA to be reported), one the device cannot run after."""
    if dtype not in DTYPES:
        check_dtype(dtype, torch.device("cpu"))
    resolved = resolve_device(device) if isinstance(device, str) else device
    check_dtype(dtype, resolved)
    return resolved


def autocast(device: torch.device, dtype: str):
    """The context a forward pass runs in: autocast off for fp32, else to ``dtype``."""
    if dtype == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])
