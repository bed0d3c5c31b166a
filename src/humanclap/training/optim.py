"""The optimizer, its learning-rate schedule and the per-epoch RNG seed of a training run.

* AdamW with weight decay on matrices only: biases, norms and the logit scale are left
  undecayed (decaying a temperature or a LayerNorm gain towards 0 has no regularising
  meaning, it only biases them);
* a linear warm-up over ``warmup_ratio`` of all steps, then a cosine decay to
  ``min_lr_ratio * lr``. The schedule is a function of the step alone, so a resumed run
  (scheduler ``last_epoch`` restored) continues on the same curve.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from humanclap.training.config import TrainConfig


def lr_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warm-up, then cosine to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(trained: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the parameters of ``trained`` that require a gradient (see the module
    docstring for which of them are decayed). Group order is fixed (decayed first): the
    checkpoint stores optimizer state by group position."""
    named = [(n, p) for n, p in trained.named_parameters() if p.requires_grad]
    decayed = [p.ndim >= 2 and "logit_scale" not in n for n, p in named]
    decay = [p for (_, p), d in zip(named, decayed) if d]
    no_decay = [p for (_, p), d in zip(named, decayed) if not d]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up + cosine schedule over ``cfg.epochs * steps_per_epoch`` steps. Early
    stopping does not shorten it: the curve must not depend on when a run stops."""
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, int(round(cfg.warmup_ratio * total)), cfg.min_lr_ratio)
    )


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Re-seed the global RNGs (dropout, drop-path) from (seed, epoch, rank): a run resumed
    at an epoch boundary then draws what the uninterrupted run drew."""
    torch.manual_seed((seed * 1_000_003 + epoch * 1_009 + rank) % (2**63))
