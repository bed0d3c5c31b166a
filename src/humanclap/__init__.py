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
    "RatedPairs": "humanclap.data",
    "load_rated": "humanclap.data",
    "evaluate_models": "humanclap.evaluate",
    "EvaluationResult": "humanclap.evaluate",
    "write_report": "humanclap.report",
    "TrainConfig": "humanclap.train_config",
    "train": "humanclap.train",
    "TrainResult": "humanclap.train_result",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .audio import AudioError, load_audio
    from .data import RatedPairs, load_rated
    from .evaluate import EvaluationResult, evaluate_models
    from .model import DEFAULT_MODEL, CLAPScorer, ModelLoadError, clapscore
    from .report import write_report
    from .train import train
    from .train_config import TrainConfig
    from .train_result import TrainResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'humanclap' has no attribute {name!r}")
