"""Which model specs are PE-Audio, and whether this environment can load one (stdlib only).

A spec is PE-Audio when it is a local folder whose ``config.json`` says ``"model_type":
"pe_audio"`` (what ``PeAudioModel.save_pretrained`` and ``humanclap train`` write) or
``"pe_audio_video"`` (a PE-AV download, whose audio half ``PeAudioModel.from_pretrained``
reads), or a hub id under ``facebook/pe-av-*`` / ``facebook/pe-a-frame-*``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

MODEL_TYPES = ("pe_audio", "pe_audio_video")
HUB_PREFIXES = ("facebook/pe-av-", "facebook/pe-a-frame-")
# transformers.models.pe_audio first shipped in transformers 5.0; humanclap is tested with 5.25.
MIN_TRANSFORMERS = "5.0"
TESTED_TRANSFORMERS = "5.25.0"


def folder_model_type(folder: str | Path) -> str | None:
    """The ``model_type`` of a folder's ``config.json``, or None when it has none or is unreadable."""
    try:
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def is_pe_audio_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names a PE-Audio model (see the module docstring)."""
    s = str(spec)
    if Path(s).is_dir():
        return folder_model_type(s) in MODEL_TYPES
    return s.startswith(HUB_PREFIXES)


def pe_audio_available() -> bool:
    """Whether the installed transformers has ``transformers.models.pe_audio``."""
    try:
        return importlib.util.find_spec("transformers.models.pe_audio") is not None
    except (ImportError, ValueError):
        return False


def transformers_version() -> str:
    try:
        from importlib.metadata import version

        return version("transformers")
    except Exception:  # not installed, or broken metadata
        return "unknown"


def needs_newer_transformers(spec: str) -> str:
    """The message of the load error on a stack without PE-Audio (transformers 4.x)."""
    return (f"{spec}: PE-Audio models need transformers >= {MIN_TRANSFORMERS} "
            f"(transformers.models.pe_audio; humanclap is tested with {TESTED_TRANSFORMERS}), but this "
            f"environment has transformers {transformers_version()}. Upgrade it: "
            f"pip install -U 'transformers>={MIN_TRANSFORMERS}'")
