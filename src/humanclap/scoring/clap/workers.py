"""What a decoder worker process needs to make this family's features from a path."""

from __future__ import annotations

import functools
from typing import Any, Callable

from humanclap.scoring.audio import load_clip_features


def featurizer(scorer: Any) -> Callable[[str], tuple[Any, bool]]:
    """A picklable ``path -> (log-mel features, is_longer)`` for a :class:`CLAPScorer`."""

    return functools.partial(load_clip_features, extractor=scorer.feature_extractor, fused=bool(scorer.fused))
