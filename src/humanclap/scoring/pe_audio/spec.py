"""Which model specs are PE-Audio, and whether this environment can load one (stdlib only).

A spec is PE-Audio when it is a local folder whose ``config.json`` says ``"model_type":
"pe_audio"`` (what ``PeAudioModel.save_pretrained`` and ``humanclap train`` write) or
``"pe_audio_video"`` (a PE-AV download, whose audio half ``PeAudioModel.from_pretrained``
reads), or a hub id under ``facebook/pe-av-*`` / ``facebook/pe-a-frame-*``.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path

from humanclap.scoring.families import family_named, family_of_spec

# how a spec is recognised lives in the family table (humanclap.scoring.families)
MODEL_TYPES = family_named("pe_audio").model_types
HUB_PREFIXES = family_named("pe_audio").hub_prefixes
# transformers.models.pe_audio first shipped in transformers 5.0; humanclap is tested with 5.25.
MIN_TRANSFORMERS = "5.0"
TESTED_TRANSFORMERS = "5.25.0"


def is_pe_audio_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names a PE-Audio model (the family table's answer; see the module docstring)."""

    return family_of_spec(spec).name == "pe_audio"


def pe_audio_available() -> bool:
    """Whether the installed transformers has ``transformers.models.pe_audio``."""
    try:
        return importlib.util.find_spec("transformers.models.pe_audio") is not None
    except (ImportError, ValueError):
        return False


def transformers_version() -> str:
    try:
        return version("transformers")
    except Exception:  # not installed, or broken metadata
        return "unknown"


def needs_newer_transformers(spec: str) -> str:
    """The message of the load error on a stack without PE-Audio (transformers 4.x)."""
    return (
        f"{spec}: PE-Audio models need transformers >= {MIN_TRANSFORMERS} "
        f"(transformers.models.pe_audio; humanclap is tested with {TESTED_TRANSFORMERS}), but this "
        f"environment has transformers {transformers_version()}. Upgrade it: "
        f"pip install -U 'transformers>={MIN_TRANSFORMERS}'"
    )
