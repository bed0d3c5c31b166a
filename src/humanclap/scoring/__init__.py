"""Scoring: audio preprocessing, the Scorer protocol and its model families, the engine.

``load_scorer(spec, device, dtype)`` is the one way from a model spec to a scorer; what a
model family is lives in one table, :mod:`humanclap.scoring.families`.
"""

from humanclap.scoring import aliases

aliases.install()  # old import paths of moved modules (humanclap.scoring.scorer, ...)

from humanclap.scoring.loader import load_scorer  # noqa: E402

__all__ = ["load_scorer"]
