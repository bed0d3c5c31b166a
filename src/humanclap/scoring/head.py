"""A small score head on frozen embeddings, for every model family (``--train-params head``).

The XACLE 2027 baseline's recipe: keep the CLAP towers frozen and learn a small MLP that maps
a pair's embeddings to the human score. Its input is ``[e_a, e_t, e_a * e_t, cos]`` (the two
L2-normalised embeddings, their element-wise product and their cosine: ``3 D + 1`` numbers),
then ``Linear(3D+1, hidden) -> ReLU -> Dropout -> Linear(hidden, 1)``.

Saved beside the model it was trained on (the model folder itself, weights unchanged):

* ``score_head.safetensors``: the MLP's tensors;
* ``score_head.json``: architecture (``input_dim``, ``hidden``, ``activation``), input layout,
  the family, and ``base_revision``: :func:`~humanclap.scoring.checkpoint.local_revision` of the
  folder's own files (weights, config, tokenizer, extractor; never the head's). A head whose
  ``base_revision`` differs from the folder's is a :class:`ModelLoadError`: it was trained on
  other embeddings and its numbers would mean nothing.

:func:`~humanclap.scoring.loader.load_scorer` wraps the family's scorer in a :class:`HeadScorer`
when the folder holds a head. Its embeddings (and so the embedding cache) are the family
scorer's; its *score* is ``clip(head(x), 0, 1)``, computed by :meth:`HeadScorer.pair_score` for
one pair at a time in float64 (so a pair's score never depends on its batch), while ``cosine``
stays the raw cosine. Its revision is the base's plus the head's hash (``--resume``, ``merge``
and every output record cover the head).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from humanclap.errors import ModelLoadError
from humanclap.scoring.checkpoint import HEAD_FILES, check_regular_file, local_revision
from humanclap.scoring.protocol import ModelInfo

HEAD_WEIGHTS, HEAD_CONFIG = HEAD_FILES
INPUT_LAYOUT = ["e_a", "e_t", "e_a*e_t", "cos"]
FORMAT = "humanclap-score-head-1"
SCORE_DEFINITION = "clapscore = clip(score head of [e_a, e_t, e_a*e_t, cos], 0, 1); cosine = raw cosine"


def head_input(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """``[e_a, e_t, e_a * e_t, cos]`` of each pair, ``(N, 3D + 1)``."""
    prod = audio_emb * text_emb
    return torch.cat([audio_emb, text_emb, prod, prod.sum(-1, keepdim=True)], dim=-1)


class ScoreHead(nn.Module):
    """The MLP (see the module docstring); ``forward`` gives the raw (unclipped) score."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.net = nn.Sequential(
            nn.Linear(3 * self.dim + 1, self.hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(self.hidden, 1)
        )

    def forward(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.net(head_input(audio_emb, text_emb)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "input_layout": INPUT_LAYOUT,
            "embedding_dim": self.dim,
            "input_dim": 3 * self.dim + 1,
            "hidden": self.hidden,
            "activation": "relu",
            "output": "raw score; clapscore = clip(output, 0, 1)",
        }


def has_head(folder: str | Path) -> bool:
    """Whether a model folder holds a score head (either of its two files)."""
    p = Path(folder)
    return p.is_dir() and any((p / name).exists() for name in HEAD_FILES)


def save_head(head: ScoreHead, folder: Path, family: str, trained_from: dict[str, Any]) -> None:
    """Write the head beside the model already exported to ``folder`` (see the module
    docstring); ``trained_from``: the base model's id and revision, for provenance."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(folder / HEAD_WEIGHTS))
    meta = {**head.describe(), "family": family, "base_revision": local_revision(folder), "trained_from": trained_from}
    (folder / HEAD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def head_revision(folder: Path) -> str:
    """sha256 prefix of the head's two files."""
    h = hashlib.sha256()
    for name in HEAD_FILES:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()[:16]


def read_head(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(score_head.json, tensors as float64 arrays)`` of a folder; ModelLoadError when a
    file is missing, unreadable or does not describe the documented MLP."""
    folder = Path(folder)
    for name in HEAD_FILES:
        if not (folder / name).is_file():
            raise ModelLoadError(
                f"{folder} holds half a score head ({name} is missing): restore both "
                f"{' and '.join(HEAD_FILES)} from the training run, or remove both to "
                "score with the plain cosine"
            )
        check_regular_file(folder / name)
    try:
        meta = json.loads((folder / HEAD_CONFIG).read_text(encoding="utf-8"))
        from safetensors.numpy import load_file

        tensors = {k: v.astype(np.float64) for k, v in load_file(str(folder / HEAD_WEIGHTS)).items()}
    except Exception as exc:  # JSON, UTF-8 and safetensors errors alike: the file is unusable
        raise ModelLoadError(
            f"{folder}: the score head cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); restore {' and '.join(HEAD_FILES)} from the training run"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("input_layout") != INPUT_LAYOUT:
        raise ModelLoadError(
            f"{folder / HEAD_CONFIG}: not a humanclap score head ({FORMAT}, input "
            f"{INPUT_LAYOUT}); restore it from the training run"
        )
    dim, hidden = meta.get("embedding_dim"), meta.get("hidden")
    shapes = {
        "net.0.weight": (hidden, 3 * dim + 1 if isinstance(dim, int) else None),
        "net.0.bias": (hidden,),
        "net.3.weight": (1, hidden),
        "net.3.bias": (1,),
    }
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != shapes or not all(np.isfinite(v).all() for v in tensors.values()):
        raise ModelLoadError(
            f"{folder / HEAD_WEIGHTS}: tensors {found} (or non-finite values) do not "
            f"match {HEAD_CONFIG} (expected {shapes}); the two files come from different runs"
        )
    return meta, tensors


class HeadScorer:
    """A family scorer whose score is its score head's (see the module docstring).

    Everything but the score is the wrapped scorer's (``embedding_scorer``): loading,
    features, embeddings, ``cosine``, the model and tokenizer (attribute access falls
    through). ``pair_score`` is what the engine, the ``score`` job, evaluation and
    :func:`~humanclap.clap_score` call for each pair's ``clapscore``."""

    score_definition = SCORE_DEFINITION

    def __init__(self, base: Any, folder: str | Path):
        folder = Path(folder)
        meta, tensors = read_head(folder)
        from humanclap.scoring.families import family_of_scorer

        family = family_of_scorer(base)
        found = local_revision(folder)
        if meta.get("base_revision") != found:
            raise ModelLoadError(
                f"{folder / HEAD_CONFIG} was trained on the model revision "
                f"{meta.get('base_revision')}, but the folder's weights are {found}: the "
                "head does not belong to these embeddings. Restore the model files the "
                f"head was trained with, or remove {' and '.join(HEAD_FILES)}"
            )
        if family is not None and meta.get("family") != family.name:
            raise ModelLoadError(
                f"{folder / HEAD_CONFIG} was trained on a {meta.get('family')} model, "
                f"but the folder holds a {family.name} model; remove the head files"
            )
        if meta["embedding_dim"] != base.embedding_dim:
            raise ModelLoadError(
                f"{folder / HEAD_CONFIG}: a head for {meta['embedding_dim']}-d embeddings, "
                f"but the model's are {base.embedding_dim}-d; remove the head files"
            )
        self.embedding_scorer = base
        self.head_config = meta
        self._w1, self._b1 = tensors["net.0.weight"], tensors["net.0.bias"]
        self._w2, self._b2 = tensors["net.3.weight"][0], float(tensors["net.3.bias"][0])
        self.info: ModelInfo = replace(base.info, revision=f"{base.info.revision}+head:{head_revision(folder)}")

    def __getattr__(self, name: str) -> Any:
        if name in ("embedding_scorer", "__setstate__"):  # not yet set / copy and pickle probes
            raise AttributeError(name)
        return getattr(self.embedding_scorer, name)

    # the Scorer protocol, spelled out (isinstance(Scorer) reads the class)
    @property
    def device(self) -> Any:
        return self.embedding_scorer.device

    @property
    def dtype(self) -> str:
        return self.embedding_scorer.dtype

    @property
    def sampling_rate(self) -> int:
        return self.embedding_scorer.sampling_rate

    @property
    def embedding_dim(self) -> int:
        return self.embedding_scorer.embedding_dim

    def load(self, item):
        return self.embedding_scorer.load(item)

    def features(self, waveform):
        return self.embedding_scorer.features(waveform)

    def load_features(self, item):
        return self.embedding_scorer.load_features(item)

    def embed_features(self, items, pad_to=None):
        return self.embedding_scorer.embed_features(items, pad_to=pad_to)

    def embed_text(self, texts):
        return self.embedding_scorer.embed_text(texts)

    # scores ----------------------------------------------------------------------------
    def pair_score(self, audio_emb: np.ndarray, text_emb: np.ndarray) -> float:
        """``clip(head([e_a, e_t, e_a*e_t, cos]), 0, 1)`` of one pair, in float64, alone:
        the same pair gives the same number in any batch and any command."""
        a = np.asarray(audio_emb, dtype=np.float64)
        t = np.asarray(text_emb, dtype=np.float64)
        prod = a * t
        x = np.concatenate([a, t, prod, [float(np.dot(np.asarray(audio_emb), np.asarray(text_emb)))]])
        hidden = np.maximum(self._w1 @ x + self._b1, 0.0)
        return float(np.clip(float(self._w2 @ hidden) + self._b2, 0.0, 1.0))

    def cosine(self, audio: Sequence[Any], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """The raw cosine of each pair (the wrapped scorer's embeddings)."""
        return self._pairs(audio, text, batch_size)[2]

    def score(self, audio: Sequence[Any], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """The head's clipped score of each pair, float32."""
        a, t, _ = self._pairs(audio, text, batch_size)
        return np.array([self.pair_score(x, y) for x, y in zip(a, t)], dtype=np.float32)

    def _pairs(self, audio, text, batch_size):
        from humanclap.scoring.inputs import paired_lists

        audio, text = paired_lists(audio, text)
        unique = list(dict.fromkeys(text))
        t = self.embed_text(unique)
        index = {s: i for i, s in enumerate(unique)}
        a = self.embedding_scorer.embed_audio(audio, batch_size=batch_size)
        t = t[[index[s] for s in text]] if len(text) else t
        return a, t, np.einsum("nd,nd->n", a, t).astype(np.float32)


def with_head(scorer: Any, spec: str | Path) -> Any:
    """``scorer`` wrapped in a :class:`HeadScorer` when ``spec`` is a folder holding a score
    head, else ``scorer`` itself."""
    return HeadScorer(scorer, spec) if has_head(spec) else scorer
