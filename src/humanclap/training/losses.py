"""Human-CLAP training losses: regression on the CLAPScore and the weighted symmetric
cross-entropy (wSCE), as small pure functions plus a module that combines them by name.

Notation: a batch of N rated pairs; ``e_a[i]``, ``e_t[i]`` are the L2-normalised audio
and text embeddings of pair *i*; ``a[i]`` in [0, 1] is its mean human score.

* CLAPScore ``s_i = max(cos(e_a[i], e_t[i]), 0)`` (the paper's definition).
* ``mae = 1/N sum_i |s_i - a_i|`` and ``mse = 1/N sum_i (s_i - a_i)^2``.
  The clip at 0 means a pair whose cosine is negative gets no gradient from these terms
  (d max(c, 0)/dc = 0 for c < 0): it predicts 0 however negative its cosine is. That is
  the paper's loss and our default; ``clip=False`` regresses the raw cosine instead so
  that such pairs are pulled up too (the CLAPScore used at test time still clips).
* ``wsce = -1/(2Z) sum_i a_i [log softmax_j(e_t[i].e_a[j] / tau)_i
                               + log softmax_j(e_a[i].e_t[j] / tau)_i]``
  with ``Z = N`` (default, ``normalize="n"``) or ``Z = sum_i a_i`` (``"weights"``).
  This is CLIP/CLAP's symmetric InfoNCE in which each pair's term is weighted by how well
  listeners judged it to match. Rows of a rated dataset are not independent captions:
  RELATE pairs each text with ~3 audios and some audios with 2 texts, so the in-batch
  "negative" *j* of pair *i* may share its text or its audio. Those are not negatives
  (they are rated pairs or the very same pair) and are masked out of the softmax when
  ``text_ids`` / ``audio_ids`` are given.

All functions take float tensors and return scalar tensors that keep the graph.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.scoring.clapscore import clapscore

LOSS_TERMS = ("wsce", "mae", "mse")
# Named combinations of the paper and the official checkpoints; any "+"-joined subset of
# LOSS_TERMS is accepted, these are the ones with released models.
OFFICIAL_LOSSES = ("wsce+mae", "wsce", "mae", "mse", "mse+mae", "wsce+mse", "wsce+mse+mae")
MAX_LOGIT_SCALE = 100.0  # CLIP/LAION clamp 1/tau at 100 to keep the softmax from saturating


def paired_cosine(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Cosine of each pair ``(N,)`` from L2-normalised ``(N, D)`` embeddings."""
    _check_pairs(audio_emb, text_emb)
    return (audio_emb * text_emb).sum(dim=-1)


def predicted_score(cosine: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """CLAPScore ``max(cos, 0)`` (``clip=True``) or the raw cosine."""
    return clapscore(cosine) if clip else cosine


def mae(audio_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor,
        clip: bool = True) -> torch.Tensor:
    """Mean absolute error between the CLAPScore and the human score (0-1).

    >>> e = torch.eye(2)
    >>> float(mae(e, e, torch.tensor([1.0, 0.5])))
    0.25
    """
    pred = predicted_score(paired_cosine(audio_emb, text_emb), clip)
    _check_target(target, pred)
    return (pred - target.to(pred.dtype)).abs().mean()


def mse(audio_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor,
        clip: bool = True) -> torch.Tensor:
    """Mean squared error between the CLAPScore and the human score (0-1)."""
    pred = predicted_score(paired_cosine(audio_emb, text_emb), clip)
    _check_target(target, pred)
    return (pred - target.to(pred.dtype)).pow(2).mean()


def same_item_mask(text_ids: torch.Tensor | None, audio_ids: torch.Tensor | None,
                   n: int, device=None) -> torch.Tensor:
    """``(N, N)`` bool, True where column *j* is not a negative of row *i*: *j* != *i* and
    pair *j* shares the text or the audio of pair *i*."""
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    for ids in (text_ids, audio_ids):
        if ids is not None:
            ids = torch.as_tensor(ids, device=device)
            if ids.shape != (n,):
                raise ValueError(f"ids must have shape ({n},), got {tuple(ids.shape)}")
            mask |= ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask


def wsce(audio_emb: torch.Tensor, text_emb: torch.Tensor, weights: torch.Tensor,
         logit_scale: torch.Tensor | float, text_ids: torch.Tensor | None = None,
         audio_ids: torch.Tensor | None = None, normalize: str = "n") -> torch.Tensor:
    """Weighted symmetric cross-entropy (see the module docstring).

    ``logit_scale`` is 1/tau (a float, or a scalar tensor such as ``exp(logit_scale_a)``
    to learn it), clamped at 100 as in CLIP/LAION. ``normalize``: ``"n"`` divides by 2N,
    ``"weights"`` by 2 * sum(a) (then the loss is a weighted mean; 0 if every a is 0).
    """
    _check_pairs(audio_emb, text_emb)
    n = audio_emb.shape[0]
    _check_target(weights, audio_emb[:, 0])
    if normalize not in ("n", "weights"):
        raise ValueError(f"normalize must be 'n' or 'weights', got {normalize!r}")
    scale = torch.as_tensor(logit_scale, dtype=audio_emb.dtype, device=audio_emb.device)
    scale = scale.clamp(max=MAX_LOGIT_SCALE)
    logits_t2a = scale * text_emb @ audio_emb.t()  # row i: text i against every audio j
    logits_a2t = logits_t2a.t()  # row i: audio i against every text j (same cosines)
    mask = same_item_mask(text_ids, audio_ids, n, device=audio_emb.device)
    if mask.any():
        logits_t2a = logits_t2a.masked_fill(mask, float("-inf"))
        logits_a2t = logits_a2t.masked_fill(mask, float("-inf"))
    diag = torch.arange(n, device=audio_emb.device)
    log_p_t2a = F.log_softmax(logits_t2a, dim=1)[diag, diag]
    log_p_a2t = F.log_softmax(logits_a2t, dim=1)[diag, diag]
    w = weights.to(audio_emb.dtype)
    total = -(w * (log_p_t2a + log_p_a2t)).sum()
    z = float(n) if normalize == "n" else w.sum().clamp(min=torch.finfo(w.dtype).tiny)
    return total / (2 * z)


def parse_loss_spec(spec: str, weights: str | Sequence[float] | None = None) -> dict[str, float]:
    """``"wsce+mae"``, ``"1,1"`` -> ``{"wsce": 1.0, "mae": 1.0}`` (weights default to 1)."""
    names = [s.strip().lower() for s in str(spec).split("+") if s.strip()]
    unknown = [s for s in names if s not in LOSS_TERMS]
    if not names or unknown:
        raise ValueError(f"loss {spec!r} not understood: use '+'-joined terms from "
                         f"{list(LOSS_TERMS)}, e.g. one of {list(OFFICIAL_LOSSES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"loss {spec!r} names a term twice; give each term once")
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        values = [1.0] * len(names)
    else:
        parts = weights.split(",") if isinstance(weights, str) else list(weights)
        try:
            values = [float(w) for w in parts]
        except ValueError:
            raise ValueError(f"loss weights {weights!r} must be numbers like '1,1'") from None
    if len(values) != len(names):
        raise ValueError(f"loss {spec!r} has {len(names)} term(s) but {len(values)} weight(s) "
                         f"({weights!r}); give one weight per term, in the same order")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"loss weights must be finite and >= 0, got {values}")
    return dict(zip(names, values))


class HumanClapLoss(nn.Module):
    """A weighted sum of named terms; ``forward`` returns ``{"loss": total, term: value}``
    (term values unweighted, for logging)."""

    def __init__(self, spec: str = "wsce+mae", weights: str | Sequence[float] | None = None,
                 clip: bool = True, normalize: str = "n"):
        super().__init__()
        self.weights = parse_loss_spec(spec, weights)
        self.clip = clip
        self.normalize = normalize

    @property
    def uses_wsce(self) -> bool:
        return "wsce" in self.weights

    def forward(self, audio_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor,
                logit_scale: torch.Tensor | float | None = None,
                text_ids: torch.Tensor | None = None,
                audio_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for name in self.weights:
            if name == "mae":
                terms[name] = mae(audio_emb, text_emb, target, clip=self.clip)
            elif name == "mse":
                terms[name] = mse(audio_emb, text_emb, target, clip=self.clip)
            else:
                if logit_scale is None:
                    raise ValueError("wsce needs logit_scale (1/temperature)")
                terms[name] = wsce(audio_emb, text_emb, target, logit_scale, text_ids=text_ids,
                                   audio_ids=audio_ids, normalize=self.normalize)
        total = sum(self.weights[k] * v for k, v in terms.items())
        return {"loss": total, **terms}


def _check_pairs(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError("audio and text embeddings must both be (N, D) with the same shape, "
                         f"got {tuple(audio_emb.shape)} and {tuple(text_emb.shape)}")


def _check_target(target: torch.Tensor, like: torch.Tensor) -> None:
    if target.shape != like.shape:
        raise ValueError(f"human scores must have shape {tuple(like.shape)} (one per pair), "
                         f"got {tuple(target.shape)}")
