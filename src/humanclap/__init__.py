"""humanclap: human-aligned text-audio relevance scoring (Human-CLAP).

The public API is imported lazily, so that ``humanclap --help``, usage errors and
``from humanclap import DEFAULT_MODEL`` answer at once instead of after loading torch and
transformers. Every name below is a function or class (never a submodule), whatever has
been imported before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "DEFAULT_MODEL": ("humanclap.defaults", "DEFAULT_MODEL"),
    "HumanclapError": ("humanclap.errors", "HumanclapError"),
    "UsageError": ("humanclap.errors", "UsageError"),
    "AudioError": ("humanclap.errors", "AudioError"),
    "DatasetError": ("humanclap.errors", "DatasetError"),
    "ModelLoadError": ("humanclap.errors", "ModelLoadError"),
    "ConfigError": ("humanclap.errors", "ConfigError"),
    "TrainingError": ("humanclap.errors", "TrainingError"),
    "CLAPScorer": ("humanclap.scoring.clap.scorer", "CLAPScorer"),
    "MSClapScorer": ("humanclap.scoring.msclap", "MSClapScorer"),
    "load_scorer": ("humanclap.scoring.loader", "load_scorer"),
    "clapscore": ("humanclap.scoring.clapscore", "clapscore"),
    "load_audio": ("humanclap.scoring.audio", "load_audio"),
    "clap_score": ("humanclap.scoring.inmemory", "clap_score"),
    "protocol": ("humanclap.scoring.inmemory", "protocol"),
    "HumanCLAPScore": ("humanclap.evaluation.torchmetric", "HumanCLAPScore"),
    "RatedPairs": ("humanclap.data", "RatedPairs"),
    "load_rated": ("humanclap.data", "load_rated"),
    "evaluate_models": ("humanclap.evaluation.evaluate", "evaluate_models"),
    "EvaluationResult": ("humanclap.evaluation.evaluate", "EvaluationResult"),
    "write_report": ("humanclap.evaluation.report", "write_report"),
    "TrainConfig": ("humanclap.training.config", "TrainConfig"),
    "TrainResult": ("humanclap.training.result", "TrainResult"),
    "fine_tune": ("humanclap.training.trainer", "fine_tune"),
    # the name used before 0.2, kept: every compatibility alias is listed in
    # humanclap/scoring/aliases.py (NAMES: old names, ALIASES: old module paths)
    "train": ("humanclap.training.trainer", "fine_tune"),
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from humanclap.data import RatedPairs, load_rated
    from humanclap.defaults import DEFAULT_MODEL
    from humanclap.errors import (
        AudioError,
        ConfigError,
        DatasetError,
        HumanclapError,
        ModelLoadError,
        TrainingError,
        UsageError,
    )
    from humanclap.evaluation.evaluate import EvaluationResult, evaluate_models
    from humanclap.evaluation.report import write_report
    from humanclap.evaluation.torchmetric import HumanCLAPScore
    from humanclap.scoring.audio import load_audio
    from humanclap.scoring.clap.scorer import CLAPScorer
    from humanclap.scoring.clapscore import clapscore
    from humanclap.scoring.inmemory import clap_score, protocol
    from humanclap.scoring.loader import load_scorer
    from humanclap.scoring.msclap import MSClapScorer
    from humanclap.training.config import TrainConfig
    from humanclap.training.result import TrainResult
    from humanclap.training.trainer import fine_tune
    from humanclap.training.trainer import fine_tune as train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # cached: later lookups do not come back here
        return value
    raise AttributeError(f"module 'humanclap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
