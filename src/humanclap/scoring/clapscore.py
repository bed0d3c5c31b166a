"""CLAPScore, defined once: ``max(cos(e_audio, e_text), 0)``.

A negative cosine means "less related than unrelated noise" for a CLAP model; the metric
counts it as no relevance at all (0), as in Takano et al. (Human-CLAP, arXiv:2506.23553).
Every place that turns a cosine into a score (``CLAPScorer.score``, the ``score`` job's
rows, evaluation, training's regression loss) calls :func:`clapscore`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def clapscore(cosine: Any) -> Any:
    """CLAPScore of cosine(s): negative similarities count as no relevance (0).

    * a torch tensor -> ``cosine.clamp(min=0)``, same dtype and device, keeping the
      autograd graph (training's loss backpropagates through it; the gradient is 0 where
      the cosine is negative);
    * anything else (a float, a list, a numpy array) -> float32 numpy (a 0-d input gives
      a ``numpy.float32`` scalar).

    torch is not imported here: a tensor is recognised by its methods, so the CLI and
    numpy-only callers never pay for importing it.

    >>> clapscore([-0.25, 0.5])
    array([0. , 0.5], dtype=float32)
    >>> float(clapscore(-0.1))
    0.0
    """
    if hasattr(cosine, "clamp") and hasattr(cosine, "detach"):  # a torch tensor
        return cosine.clamp(min=0)
    return np.maximum(np.asarray(cosine, dtype=np.float32), np.float32(0.0))
