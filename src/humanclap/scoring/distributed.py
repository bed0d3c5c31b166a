"""Process-group plumbing shared by scoring, evaluation and training (``torchrun``).

``torchrun`` (one node or many) and ``accelerate launch`` set ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``; without them everything here degrades to a single process
and no collective is called. Backends: NCCL for CUDA devices, gloo otherwise (CPU tests,
CPU clusters). This is only the launcher's process group, used for barriers and small
reductions: no home-made cluster layer. It lives in ``scoring`` (layer 1) so that the
score job, evaluation and training share it without importing upward.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from humanclap.errors import AudioError, UsageError
from humanclap.scoring.parts import part_range


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
    """True when a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_info() -> DistInfo:
    """Rank, world size and local rank from the launcher's environment (no process group)."""
    if not launched_distributed():
        return DistInfo()
    return DistInfo(
        int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    )


def rank_device(device: str) -> str:
    """The device of this rank: under a launcher, ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``
    when CUDA is there (one GPU per process); anything explicit is kept."""
    if not launched_distributed() or device not in ("auto", "cuda"):
        return device
    if torch.cuda.is_available():
        local, gpus = env_info().local_rank, torch.cuda.device_count()
        if local >= gpus:
            raise UsageError(
                f"local rank {local} has no GPU of its own (this node has {gpus}): "
                f"start at most {gpus} processes per node (torchrun --nproc-per-node "
                f"{gpus}), or pass --device cpu"
            )
        return f"cuda:{local}"
    return "cpu" if device == "auto" else device


def init_distributed(device: torch.device | str, timeout_s: float | None = None) -> DistInfo:
    """Join the process group the launcher described (no-op for a single process).

    ``timeout_s``: how long a collective waits for the slowest rank (torch's default, 10 to
    30 minutes, when None)."""
    if not launched_distributed():
        return DistInfo()
    device = torch.device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            # NCCL collectives of Python objects run on the current device: make it ours.
            torch.cuda.set_device(device)

        extra = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **extra)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# How long the main thread leaves the GIL to gloo's workers at shutdown (see below).
GLOO_RELEASE_S = 0.2


def shutdown_distributed() -> None:
    """Leave the process group: destroy it, then give gloo's worker threads the GIL for a
    moment. (No barrier: this also runs after an error, when the ranks may be apart.)

    Why the pause: a gloo worker thread frees each collective it finished itself, and freeing
    one whose tensors Python has seen (``all_gather_object``'s, kept by the barrier after it)
    needs the GIL. A worker still waiting for the GIL when the interpreter finalizes is ended
    by Python inside that C++ destructor, and the process aborts ("terminate called without an
    active exception", SIGABRT) after a finished run: 2 of about 17 ``torchrun`` runs of
    ``humanclap train`` on MS CLAP before this pause, 0 of 100 with it. The stack, from a core
    dump: ``~AsyncBarrierWork`` -> ``~AsyncAllgatherWork`` -> ``decref_pyobject`` ->
    ``take_gil`` -> ``PyThread_exit_thread``, while the main thread was in ``Py_FinalizeEx``.
    ``time.sleep`` releases the GIL, so the worker finishes while the interpreter is alive."""
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(GLOO_RELEASE_S)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[int], info: DistInfo) -> list[int]:
    """Element-wise sum of small integer counters over ranks (e.g. rows failed)."""
    if not info.enabled:
        return list(values)
    return [sum(v) for v in zip(*all_gather_objects(list(values), info))]


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


def embed_shared(engine: Any, paths: list[str], texts: list[str], info: DistInfo, progress: bool | None = None) -> None:
    """Fill ``engine`` (an :class:`~humanclap.scoring.engine.EmbeddingEngine`) with the
    embeddings of every unique text and file, each rank embedding one contiguous block of
    them, then all-gathering the results: every rank ends with what one process would have
    (the same bits: no embedding depends on its neighbours), and the same ``counts()``."""

    unique_texts = [t for t in dict.fromkeys(texts) if t.strip()]
    unique_paths = list(dict.fromkeys(paths))
    mine_t = part_range(len(unique_texts), info.rank, info.world_size)
    mine_p = part_range(len(unique_paths), info.rank, info.world_size)
    engine.embed_unique(
        unique_paths[mine_p.start : mine_p.stop], unique_texts[mine_t.start : mine_t.stop], progress=progress
    )
    # Errors travel as their messages: the same text a single process would report.
    local = (engine.text_emb, engine.audio_emb, {p: str(e) for p, e in engine.audio_err.items()}, engine.decoded)
    decoded = 0  # each rank decoded its own share: the run's count is their sum
    for text_emb, audio_emb, audio_err, n_decoded in all_gather_objects(local, info):
        engine.text_emb.update(text_emb)
        engine.audio_emb.update(audio_emb)
        engine.audio_err.update({p: AudioError(m) for p, m in audio_err.items()})
        decoded += n_decoded
    engine.decoded = decoded
