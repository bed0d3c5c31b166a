"""The transformers ``ClapModel`` family: every LAION CLAP and Human-CLAP checkpoint.

* :mod:`.scorer`: :class:`CLAPScorer` (loading, fixed-shape forwards, scores);
* :mod:`.fbank`: LAION's log-mel of all frames at once (the bits of ``ClapFeatureExtractor``);
* :mod:`.laion_convert`, :mod:`.laion_archs`, :mod:`.laion_checkpoint`: an original LAION
  ``.pt`` -> a transformers folder (``humanclap convert``);
* :mod:`.workers`: what decoder worker processes need to make this family's features.

Its entry in :mod:`humanclap.scoring.families` says how a spec is recognised, loaded and
pre-checked. Import-light: torch and transformers load when the scorer is first used.
"""

from __future__ import annotations

__all__ = ["CLAPScorer"]


def __getattr__(name: str):
    if name == "CLAPScorer":
        # lazy: keeps torch out of `import humanclap.scoring.clap`
        from humanclap.scoring.clap.scorer import CLAPScorer

        return CLAPScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
