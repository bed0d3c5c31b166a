"""Everything a training run builds before its first step, built once, in a fixed order.

The order matters for exact reproducibility: the global RNG is seeded from ``cfg.seed``
right before the model is loaded, so LoRA adapters (the only randomly initialised
weights) start the same in every run and on every rank.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from humanclap.errors import ConfigError
from humanclap.training.config import TrainConfig
from humanclap.training.data import SplitTable, TrainData, build_train_data, global_batches, load_splits
from humanclap.training.distributed import DistInfo, shard_map
from humanclap.training.losses import HumanClapLoss
from humanclap.training.model import DualTower, HeadTower, prepare_trainable
from humanclap.training.optim import build_optimizer, build_scheduler
from humanclap.training.targets import training_targets

Autocast = Callable[[], AbstractContextManager]


@dataclass(frozen=True)
class TrainComponents:
    """The model, data, optimizer and loss of one run (the objects themselves change as
    training proceeds; which objects they are does not)."""

    tokenizer: Any  # saved with every exported model folder
    extractor: Any  # the checkpoint's ClapFeatureExtractor, saved likewise; None for MS CLAP
    model_info: Any  # humanclap.scoring.protocol.ModelInfo of the base model
    data: TrainData
    train_split: SplitTable
    val_split: str | None  # split names; None when not used
    test_split: str | None
    steps_per_epoch: int
    trained: torch.nn.Module  # whose parameters are optimised and saved (PEFT wrapper for LoRA, HeadTower for head)
    tower: DualTower  # embeddings by item index, frozen towers served from caches
    step_module: torch.nn.Module  # the tower, wrapped in DistributedDataParallel on several ranks
    cached_towers: list[str]  # "text"/"audio": towers that run once instead of every step
    params: list[torch.nn.Parameter]  # the trained parameters (gradient clipping)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: HumanClapLoss
    targets: dict  # how the training targets were made (targets.py), for metrics.json


def precision_context(cfg: TrainConfig, device: torch.device) -> Autocast:
    """A factory of the autocast context every forward pass runs in: bf16 on CUDA when
    asked (or ``auto`` and supported), otherwise none (fp32)."""
    use_bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if use_bf16 and device.type != "cuda":
        raise ConfigError("precision bf16 is only supported on CUDA here; use --precision fp32")
    if use_bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def build_components(
    cfg: TrainConfig,
    device: torch.device,
    info: DistInfo,
    autocast: Autocast,
    progress: bool = False,
    feature_memo: dict | None = None,
) -> TrainComponents:
    """Load the base model and the data, make the chosen parts trainable, cache the frozen
    towers (``cfg.cache_encoders``), and build optimizer, schedule and loss.

    Raises ConfigError / DatasetError / ModelLoadError for inputs that cannot be used."""
    from humanclap.scoring.loader import load_scorer

    torch.manual_seed(cfg.seed)  # LoRA initialisation
    # The family follows the spec (a hub id or folder: ClapModel; msclap-2022/-2023, a .pth
    # or an MS CLAP folder: MSClapModel); preprocessing is the scorer's own, on CPU.
    scorer = load_scorer(cfg.model, device="cpu", revision=cfg.revision)
    model, tokenizer, model_info = scorer.model, scorer.tokenizer, scorer.info
    extractor = getattr(scorer, "feature_extractor", None)  # MS CLAP: the front end is in the model
    rated, names, val_split, test_split = load_splits(cfg)
    targets = training_targets(
        rated, cfg.train_split, cfg.targets, cfg.screen_listeners, cfg.min_listener_ratings, data_name=cfg.data
    )
    data = build_train_data(
        rated, names, scorer, progress=progress, memo=feature_memo, targets={cfg.train_split: targets.values}
    )
    train_split = data.splits[cfg.train_split]
    if cfg.batch_size % info.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} (global) must be divisible by the {info.world_size} processes")
    steps_per_epoch = len(global_batches(len(train_split), cfg.batch_size, cfg.seed, 1))
    trained, clap = prepare_trainable(model, cfg)
    clap.to(device)
    tau = cfg.tau()
    tower = DualTower(clap, data, device, None if tau is None else 1.0 / tau)
    cached: list[str] = []
    if cfg.cache_encoders:
        tower.build_caches(cfg, autocast, cfg.eval_batch_size, lambda n, bs, fn: shard_map(n, bs, fn, info))
        cached = [n for n, c in (("text", tower.text_cache), ("audio", tower.audio_cache)) if c is not None]
    step_module: torch.nn.Module = tower
    if cfg.train_params == "head":  # the model frozen, a score head on its embeddings trained
        from humanclap.scoring.head import ScoreHead

        torch.manual_seed(cfg.seed)  # the head's initialisation, the same on every rank
        head = ScoreHead(scorer.embedding_dim, cfg.head_hidden, cfg.head_dropout if cfg.dropout else 0.0)
        with torch.no_grad():  # start at the mean training target, not near 0 (clipped: no signal)
            head.net[-1].bias.fill_(float(train_split.target.float().mean()))
        trained = step_module = HeadTower(tower, head.to(device))
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        unused = tower.towers.find_unused_parameters(cfg.train_params)
        step_module = DDP(step_module, device_ids=ids, broadcast_buffers=False, find_unused_parameters=unused)
    optimizer = build_optimizer(trained, cfg)
    return TrainComponents(
        tokenizer=tokenizer,
        extractor=extractor,
        model_info=model_info,
        data=data,
        train_split=train_split,
        val_split=val_split,
        test_split=test_split,
        steps_per_epoch=steps_per_epoch,
        trained=trained,
        tower=tower,
        step_module=step_module,
        cached_towers=cached,
        params=[p for p in trained.parameters() if p.requires_grad],
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps_per_epoch),
        loss_fn=HumanClapLoss(
            cfg.loss_terms,
            clip=cfg.clip_score,  # parsed once, by validate
            normalize=cfg.wsce_normalize,
            margin=cfg.pairwise_margin,
            delta=cfg.pairwise_delta,
            listnet_temperature=cfg.listnet_temperature,
            tau=cfg.clipped_mse_tau,
        ),
        targets=targets.report,
    )
