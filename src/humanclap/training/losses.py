"""Human-CLAP training losses: regression on the CLAPScore, the weighted symmetric
cross-entropy (wSCE) and ranking terms, as small pure functions plus a module that
combines them by name.

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

Ranking and tolerant regression terms, all on the predicted CLAPScore ``p_i`` (clipped
like mae/mse, ``clip=False`` for the raw cosine) and the target ``t_i``:

* ``pairwise = mean over ordered pairs (i, j) with t_i - t_j > delta of
  max(0, margin - (p_i - p_j))``: pair *i* was rated higher than *j* by more than
  ``delta``, so its score should exceed *j*'s by at least ``margin``. 0 when no pair
  qualifies (equal targets, a batch of one).
* ``listnet = KL(softmax(t / T) || softmax(p / T))`` over the batch (ListNet, Cao et al.
  2007): the softmax cross-entropy of the TMU XACLE entry minus the entropy of the target
  distribution, which does not depend on the model (same gradient), so 0 means the batch's
  predicted and human distributions agree; it is minimised by ``p = t + const``. One T for
  both sides keeps the two on one scale. 0 when every target in the batch is equal (no
  order to learn; the regression terms set the level).
* ``clipped-mse = 1/N sum_i 1[|p_i - t_i| > tau] (p_i - t_i)^2``: as the XACLE/SPO-CLAPScore
  baselines' ClippedMSELoss (errors within +-tau cost nothing, larger ones their full
  squared error; not the shifted ``max(0, |p - t| - tau)^2``).

All functions take float tensors and return scalar tensors that keep the graph. The
regression and ranking terms are also functions of a prediction (``score_mae``,
``score_mse``, ``score_pairwise``, ``score_listnet``, ``score_clipped_mse``):
:class:`HumanClapLoss` applies them to a given ``prediction`` (a
frozen-feature score head's, ``train_params=head``) instead of the clipped cosine.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.scoring.clapscore import clapscore

LOSS_TERMS = ("wsce", "mae", "mse", "pairwise", "listnet", "clipped-mse")
# Named combinations of the paper and the official checkpoints; any "+"-joined subset of
# LOSS_TERMS is accepted, these are the ones with released models.
_TERM_SPLIT = re.compile(r"(?<![0-9.][eE])\+")  # '+' joins terms, except in 1e+3*mae
OFFICIAL_LOSSES = ("wsce+mae", "wsce", "mae", "mse", "mse+mae", "wsce+mse", "wsce+mse+mae")
MAX_LOGIT_SCALE = 100.0  # CLIP/LAION clamp 1/tau at 100 to keep the softmax from saturating
# Defaults of the ranking terms, on our 0-1 score scale. The XACLE 2027 baseline
# (configs/train.json: margin 0.1, tau 0.25, weights [1.0, 0.5]) and the TMU entry
# (configs/stage3_xacle.yaml: temperature 1.0) work on scores mapped to -1..1, twice our
# range: the same settings here are half as large.
PAIRWISE_MARGIN = 0.05  # XACLE 2027 baseline margin 0.1 on -1..1
PAIRWISE_DELTA = 0.0  # the baseline has no delta: every pair whose human scores differ
LISTNET_TEMPERATURE = 0.5  # TMU's T = 1 on -1..1
CLIPPED_MSE_TAU = 0.125  # XACLE 2027 baseline tau 0.25 on -1..1


def paired_cosine(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Cosine of each pair ``(N,)`` from L2-normalised ``(N, D)`` embeddings."""
    _check_pairs(audio_emb, text_emb)
    return (audio_emb * text_emb).sum(dim=-1)


def predicted_score(cosine: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """CLAPScore ``max(cos, 0)`` (``clip=True``) or the raw cosine."""
    return clapscore(cosine) if clip else cosine


def score_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of predictions ``(N,)`` against targets ``(N,)``."""
    _check_target(target, pred)
    return (pred - target.to(pred.dtype)).abs().mean()


def score_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of predictions against targets."""
    _check_target(target, pred)
    return (pred - target.to(pred.dtype)).pow(2).mean()


def score_pairwise(
    pred: torch.Tensor, target: torch.Tensor, margin: float = PAIRWISE_MARGIN, delta: float = PAIRWISE_DELTA
) -> torch.Tensor:
    """:func:`pairwise` on predictions."""
    _check_target(target, pred)
    t = target.to(pred.dtype)
    ordered = (t[:, None] - t[None, :]) > delta  # (i, j): i rated higher than j
    hinge = (margin - (pred[:, None] - pred[None, :])).clamp(min=0)
    # sum / max(count, 1): 0 (not 0/0) without qualifying pairs, and the graph is kept
    return (hinge * ordered).sum() / ordered.sum().clamp(min=1)


def score_listnet(pred: torch.Tensor, target: torch.Tensor, temperature: float = LISTNET_TEMPERATURE) -> torch.Tensor:
    """:func:`listnet` on predictions."""
    _check_target(target, pred)
    t = target.to(pred.dtype)
    p_target = F.softmax(t / temperature, dim=0)
    log_p_pred = F.log_softmax(pred / temperature, dim=0)
    kl = (torch.special.xlogy(p_target, p_target) - p_target * log_p_pred).sum()
    informative = (t != t[:1]).any()
    return torch.where(informative, kl, torch.zeros_like(kl))


def score_clipped_mse(pred: torch.Tensor, target: torch.Tensor, tau: float = CLIPPED_MSE_TAU) -> torch.Tensor:
    """:func:`clipped_mse` on predictions."""
    _check_target(target, pred)
    err = pred - target.to(pred.dtype)
    return (err.pow(2) * (err.abs() > tau)).mean()


def mae(audio_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Mean absolute error between the CLAPScore and the human score (0-1).

    >>> e = torch.eye(2)
    >>> float(mae(e, e, torch.tensor([1.0, 0.5])))
    0.25
    """
    return score_mae(predicted_score(paired_cosine(audio_emb, text_emb), clip), target)


def mse(audio_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Mean squared error between the CLAPScore and the human score (0-1)."""
    return score_mse(predicted_score(paired_cosine(audio_emb, text_emb), clip), target)


def pairwise(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    target: torch.Tensor,
    margin: float = PAIRWISE_MARGIN,
    delta: float = PAIRWISE_DELTA,
    clip: bool = True,
) -> torch.Tensor:
    """Margin ranking hinge over the in-batch pairs whose targets differ by more than
    ``delta`` (see the module docstring); exactly 0 when none do.

    >>> e = torch.eye(2)
    >>> float(pairwise(e, e.flip(0), torch.tensor([1.0, 0.0]), margin=0.5))  # p = (0, 0)
    0.5
    """
    return score_pairwise(predicted_score(paired_cosine(audio_emb, text_emb), clip), target, margin, delta)


def listnet(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    target: torch.Tensor,
    temperature: float = LISTNET_TEMPERATURE,
    clip: bool = True,
) -> torch.Tensor:
    """ListNet top-1 loss ``KL(softmax(t/T) || softmax(p/T))`` over the batch (see the
    module docstring); exactly 0 when every target is equal.

    >>> e = torch.eye(2)
    >>> float(listnet(e, e, torch.tensor([1.0, 1.0])))
    0.0
    """
    return score_listnet(predicted_score(paired_cosine(audio_emb, text_emb), clip), target, temperature)


def clipped_mse(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    target: torch.Tensor,
    tau: float = CLIPPED_MSE_TAU,
    clip: bool = True,
) -> torch.Tensor:
    """Squared error of the pairs whose CLAPScore misses the target by more than ``tau``
    (0 for the others), averaged over all N pairs (see the module docstring)."""
    return score_clipped_mse(predicted_score(paired_cosine(audio_emb, text_emb), clip), target, tau)


def same_item_mask(text_ids: torch.Tensor | None, audio_ids: torch.Tensor | None, n: int, device=None) -> torch.Tensor:
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


def wsce(
    audio_emb: torch.Tensor,
    text_emb: torch.Tensor,
    weights: torch.Tensor,
    logit_scale: torch.Tensor | float,
    text_ids: torch.Tensor | None = None,
    audio_ids: torch.Tensor | None = None,
    normalize: str = "n",
) -> torch.Tensor:
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
    """``"wsce+mae"``, ``"1,1"`` -> ``{"wsce": 1.0, "mae": 1.0}`` (weights default to 1).

    A weight may also be written inline, ``W*term``: ``"wsce+mae+0.5*pairwise"`` ->
    ``{"wsce": 1.0, "mae": 1.0, "pairwise": 0.5}``. Inline weights and ``weights`` (one
    per term) cannot be combined: each term's weight is said once.

    >>> parse_loss_spec("wsce+mae+0.5*pairwise")
    {'wsce': 1.0, 'mae': 1.0, 'pairwise': 0.5}
    """
    parts = [s.strip().lower() for s in _TERM_SPLIT.split(str(spec)) if s.strip()]
    names, inline = [], {}
    for part in parts:
        weight, star, name = part.rpartition("*")
        name = name.strip()
        if star:
            try:
                inline[name] = float(weight)
            except ValueError:
                raise ValueError(
                    f"loss {spec!r}: {part!r} is not WEIGHT*TERM with a number as the weight, e.g. 0.5*pairwise"
                ) from None
        names.append(name)
    unknown = [s for s in names if s not in LOSS_TERMS]
    if not names or unknown:
        raise ValueError(
            f"loss {spec!r} not understood: use '+'-joined terms from "
            f"{list(LOSS_TERMS)}, each optionally weighted as W*term (e.g. "
            f"wsce+mae+0.5*pairwise), or one of {list(OFFICIAL_LOSSES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"loss {spec!r} names a term twice; give each term once")
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        values = [inline.get(n, 1.0) for n in names]
    else:
        if inline:
            raise ValueError(
                f"loss {spec!r} weighs {sorted(inline)} inline and loss weights "
                f"{weights!r} are given too: say each weight once, either inline "
                "(0.5*pairwise) or as --loss-weights, not both"
            )
        parts = weights.split(",") if isinstance(weights, str) else list(weights)
        try:
            values = [float(w) for w in parts]
        except ValueError:
            raise ValueError(f"loss weights {weights!r} must be numbers like '1,1'") from None
    if len(values) != len(names):
        raise ValueError(
            f"loss {spec!r} has {len(names)} term(s) but {len(values)} weight(s) "
            f"({weights!r}); give one weight per term, in the same order"
        )
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"loss weights must be finite and >= 0, got {values}")
    return dict(zip(names, values))


def loss_terms(terms: Mapping[str, float], weights: str | Sequence[float] | None = None) -> dict[str, float]:
    """``{term: weight}`` as :func:`parse_loss_spec` returns it, checked the same way: known
    terms, finite weights >= 0, and no second set of ``weights``."""
    if weights is not None:
        raise ValueError(f"loss terms {dict(terms)} already carry their weights; pass no loss weights")
    unknown = [n for n in terms if n not in LOSS_TERMS]
    if not terms or unknown:
        raise ValueError(f"loss terms {dict(terms)} not understood: use terms from {list(LOSS_TERMS)}")
    values = {n: float(w) for n, w in terms.items()}
    if any(not math.isfinite(v) or v < 0 for v in values.values()):
        raise ValueError(f"loss weights must be finite and >= 0, got {list(values.values())}")
    return values


class HumanClapLoss(nn.Module):
    """A weighted sum of named terms; ``forward`` returns ``{"loss": total, term: value}``
    (term values unweighted, for logging).

    ``spec`` is a loss string (parsed by :func:`parse_loss_spec` with ``weights``) or the
    ``{term: weight}`` it parses to, e.g. a validated ``TrainConfig.loss_terms``."""

    def __init__(
        self,
        spec: str | Mapping[str, float] = "wsce+mae",
        weights: str | Sequence[float] | None = None,
        clip: bool = True,
        normalize: str = "n",
        margin: float = PAIRWISE_MARGIN,
        delta: float = PAIRWISE_DELTA,
        listnet_temperature: float = LISTNET_TEMPERATURE,
        tau: float = CLIPPED_MSE_TAU,
    ):
        super().__init__()
        self.weights = parse_loss_spec(spec, weights) if isinstance(spec, str) else loss_terms(spec, weights)
        self.clip = clip
        self.normalize = normalize
        self.margin, self.delta = margin, delta
        self.listnet_temperature, self.tau = listnet_temperature, tau

    @property
    def uses_wsce(self) -> bool:
        return "wsce" in self.weights

    def forward(
        self,
        audio_emb: torch.Tensor,
        text_emb: torch.Tensor,
        target: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        text_ids: torch.Tensor | None = None,
        audio_ids: torch.Tensor | None = None,
        prediction: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The terms on the CLAPScore of the embeddings (clipped unless ``clip`` is off), or on
        ``prediction`` ``(N,)`` when given (a score head's raw output; wsce, a loss on the
        embeddings, is then refused)."""
        terms: dict[str, torch.Tensor] = {}
        if prediction is None:
            pred = predicted_score(paired_cosine(audio_emb, text_emb), self.clip)
        elif self.uses_wsce:
            raise ValueError("wsce trains the embeddings and does not apply to a score head's prediction")
        else:
            pred = prediction
        for name in self.weights:
            if name == "mae":
                terms[name] = score_mae(pred, target)
            elif name == "mse":
                terms[name] = score_mse(pred, target)
            elif name == "pairwise":
                terms[name] = score_pairwise(pred, target, self.margin, self.delta)
            elif name == "listnet":
                terms[name] = score_listnet(pred, target, self.listnet_temperature)
            elif name == "clipped-mse":
                terms[name] = score_clipped_mse(pred, target, self.tau)
            else:
                if logit_scale is None:
                    raise ValueError("wsce needs logit_scale (1/temperature)")
                terms[name] = wsce(
                    audio_emb,
                    text_emb,
                    target,
                    logit_scale,
                    text_ids=text_ids,
                    audio_ids=audio_ids,
                    normalize=self.normalize,
                )
        total = sum(self.weights[k] * v for k, v in terms.items())
        return {"loss": total, **terms}


def _check_pairs(audio_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape:
        raise ValueError(
            "audio and text embeddings must both be (N, D) with the same shape, "
            f"got {tuple(audio_emb.shape)} and {tuple(text_emb.shape)}"
        )


def _check_target(target: torch.Tensor, like: torch.Tensor) -> None:
    if target.shape != like.shape:
        raise ValueError(f"human scores must have shape {tuple(like.shape)} (one per pair), got {tuple(target.shape)}")
