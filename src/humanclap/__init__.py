"""humanclap: human-aligned text-audio relevance scoring (Human-CLAP).

The public API is imported lazily so that ``humanclap --help`` and usage errors answer
at once instead of after loading torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CLAPScorer": "humanclap.model",
    "DEFAULT_MODEL": "humanclap.model",
    "ModelLoadError": "humanclap.model",
    "clapscore": "humanclap.model",
    "AudioError": "humanclap.audio",
    "load_audio": "humanclap.audio",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .audio import AudioError, load_audio
    from .model import DEFAULT_MODEL, CLAPScorer, ModelLoadError, clapscore


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'humanclap' has no attribute {name!r}")
