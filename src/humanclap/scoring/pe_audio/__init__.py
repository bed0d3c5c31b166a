"""Meta's PE-Audio (``transformers.PeAudioModel``, model type ``pe_audio``) as a humanclap family.

* :mod:`.spec`: which model specs are PE-Audio (stdlib only, so ``load_scorer`` can ask cheaply);
* :mod:`.loading`: the transformers version check, folder checks, model + tokenizer + extractor;
* :mod:`.preprocessing`: the deterministic length rule and the per-clip model input;
* :mod:`.numerics`: the embeddings and the model's own sigmoid match logit, as transformers computes them;
* :mod:`.scorer`: :class:`PeAudioScorer`, the :class:`~humanclap.scoring.protocol.Scorer`.

Import-light: torch and transformers load when a scorer class is first used.
"""

from __future__ import annotations

from humanclap.scoring.pe_audio.spec import (
    HUB_PREFIXES,
    MIN_TRANSFORMERS,
    MODEL_TYPES,
    is_pe_audio_spec,
    pe_audio_available,
)

__all__ = ["HUB_PREFIXES", "MIN_TRANSFORMERS", "MODEL_TYPES", "PeAudioScorer", "is_pe_audio_spec", "pe_audio_available"]


def __getattr__(name: str):
    if name == "PeAudioScorer":
        # lazy: keeps torch out of `import humanclap.scoring.pe_audio`
        from humanclap.scoring.pe_audio.scorer import PeAudioScorer

        return PeAudioScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
