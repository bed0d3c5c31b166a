"""Process-group plumbing for training on several processes (``torchrun``/``accelerate launch``).

Both launchers set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; without them
everything here degrades to a single process and no collective is called. Backends:
NCCL for CUDA devices, gloo otherwise (CPU tests, CPU clusters).

Why the wSCE loss is exact across processes: every rank all-gathers the embeddings *with
gradient* (``torch.distributed.nn.functional.all_gather``) and computes the same global
loss L over the global batch. The gather's backward sums the incoming gradients over
ranks, so rank r's local embeddings receive ``W * dL/dx_r``; DistributedDataParallel then
averages parameter gradients over the W ranks, which gives exactly ``dL/dtheta`` of a
single process that saw the whole global batch.
"""

from __future__ import annotations

from typing import Callable

import torch

# The generic helpers live in scoring (layer 1) so that the score job and evaluation use
# them too; re-exported here for training's callers.
from humanclap.scoring.distributed import (  # noqa: F401
    DistInfo,
    barrier,
    gather_no_grad,
    init_distributed,
    launched_distributed,
    shutdown_distributed,
)


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``x`` (same shape on each) in rank order, keeping the graph."""
    if not info.enabled:
        return x
    # lazy: torch.distributed.nn exists only in torch builds with distributed support
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def shard_map(n: int, batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor], info: DistInfo) -> torch.Tensor:
    """``fn`` over items ``0..n-1`` in batches of index tensors, the items split into
    contiguous shards over ranks, the results gathered in item order on every rank.

    A rank whose shard is empty runs ``fn`` on item 0 and keeps none of its rows: it needs
    the output's shape and dtype to join the gather."""
    w, r = info.world_size, info.rank
    chunk = -(-n // w)
    lo, hi = min(n, r * chunk), min(n, (r + 1) * chunk)
    parts = [fn(torch.arange(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)]
    local = torch.cat(parts) if parts else fn(torch.arange(0, 1))[:0]
    return gather_no_grad(local, info)
