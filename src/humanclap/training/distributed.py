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

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group the launcher described (no-op for a single process)."""
    if not launched_distributed():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``x`` (same shape on each) in rank order, keeping the graph."""
    if not info.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``x`` in rank order (ranks may hold different row counts)."""
    if not info.enabled:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)], dim=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()



def shard_map(n: int, batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor],
              info: DistInfo) -> torch.Tensor:
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
