"""Scoring: audio preprocessing, the Scorer protocol and its model families, the engine.

``load_scorer(spec, device, dtype)`` is the one way from a model spec to a scorer.
"""

from humanclap.scoring.loader import load_scorer

__all__ = ["load_scorer"]
