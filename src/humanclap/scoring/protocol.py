"""What a CLAP family must provide to be scored: the :class:`Scorer` protocol.

The embedding engine (:mod:`humanclap.scoring.engine`), and through it ``humanclap score``,
evaluation and training's preprocessing, use only these members. A new model family is
one module in ``scoring/`` with a class that has them (``CLAPScorer`` for every
transformers CLAP, ``MSClapScorer`` for Microsoft's CLAP); no subclassing is needed.

The stages, in the order the engine calls them:

1. ``load(item)``: decode one audio item to a finite mono float32 waveform at
   ``sampling_rate`` (raises :class:`~humanclap.errors.AudioError` for a bad item);
2. ``features(waveform)``: the model input of that one clip and whether it is longer than
   the model's window; must not depend on any other clip (no batch effects, no
   unseeded randomness);
3. ``embed_features(items, pad_to)``: L2-normalised embeddings of a batch of ``features``
   results; the engine passes at most ``AUDIO_CHUNK`` items with ``pad_to=AUDIO_CHUNK``,
   and every forward pass must have that one shape (a short batch filled with copies),
   so a clip's embedding is bit-identical wherever it sits in any run;
4. ``embed_text(texts)``: L2-normalised text embeddings; a text's embedding must not
   depend on the other texts of the call (fixed padding and batch shape).

Optional: ``numerics`` (a dict of what the bits depend on beyond the model and its
preprocessing: device, library versions, forward shapes), part of every cache key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from humanclap.scoring.audio import AudioInput, Preprocessing

# Clips per audio forward pass, for every model family: a fixed shape makes a clip's bits
# independent of the batch size and of its neighbours (measured: a clip embedded alone,
# shape (1, ...), differs in the last float32 bits from the same clip in an (8, ...) batch).
AUDIO_CHUNK = 8


@dataclass(frozen=True)
class ModelInfo:
    """Where a checkpoint came from; recorded in every output."""

    model_id: str
    revision: str  # hub commit hash, or "sha256:<prefix>" of a local folder's weights
    source: str  # "hub" or "local"
    preprocessing: Preprocessing

    def as_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = asdict(self.preprocessing)
        return d


@runtime_checkable
class Scorer(Protocol):
    """A loaded CLAP model as the embedding engine sees it (see the module docstring)."""

    info: ModelInfo  # provenance and preprocessing (part of every cache key and output)
    device: Any  # a torch.device (kept untyped: this module does not import torch)
    dtype: str  # compute dtype name: "fp32", "bf16" or "fp16"
    sampling_rate: int  # Hz of the waveforms ``load`` returns

    @property
    def embedding_dim(self) -> int: ...

    def load(self, item: AudioInput) -> np.ndarray: ...

    def features(self, waveform: np.ndarray) -> tuple[Any, bool]: ...

    # features(load(item)), free to read less of a file than the model uses
    def load_features(self, item: AudioInput) -> tuple[Any, bool]: ...

    def embed_features(self, items: list[tuple[Any, bool]], pad_to: int | None = None) -> np.ndarray: ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...
