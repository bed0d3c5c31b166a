"""Human-CLAP fine-tuning: ``fine_tune(TrainConfig) -> TrainResult`` (also ``train``).

One loop for one CPU, one GPU, or many processes (``torchrun``/``accelerate launch``; see
``train_dist.py`` for why the multi-process wSCE equals the single-process one):

* data: every unique audio file preprocessed once, deterministically (``train_data.py``);
* model: ``ClapModel`` with the chosen parts trainable (``train_model.py``); frozen towers
  run once and are cached (the fast path) unless ``cache_encoders`` is off;
* AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA;
* each epoch: validation SRCC/LCC/KTAU/MSE, a line on stderr and in ``metrics.jsonl``, an
  atomic resume checkpoint, the best model kept; early stopping on validation SRCC;
* a NaN/inf loss or gradient stops with :class:`TrainingError`; checkpoints stay intact;
* the end: the best model as a standard Hugging Face folder in ``output_dir``.

Randomness: shuffling depends on (seed, epoch) only, and the global RNGs (dropout,
drop-path) are re-seeded from (seed, epoch, rank) at the start of each epoch, so a run
resumed at an epoch boundary continues exactly like the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from humanclap.training import checkpoints as ckpt
from humanclap.training.losses import HumanClapLoss
from humanclap.training.config import ConfigError, TrainConfig
from humanclap.training.data import build_train_data, global_batches, load_splits, rank_share
from humanclap.training.distributed import (DistInfo, barrier, gather_no_grad, gather_with_grad,
                         init_distributed, launched_distributed, shutdown_distributed)
from humanclap.training.result import TrainingError, TrainResult, clean_json, split_metrics
from humanclap.training.model import (DualTower, export_hf_folder, load_trainable_state, prepare_trainable,
                          set_train_mode, trainable_state)

log = logging.getLogger(__name__)
# Fields that may change between a run and its --resume without changing the result.
# (epochs and patience are not: they shape the learning-rate schedule and the stopping point.)
RESUME_FREE = {"resume", "progress", "device", "eval_batch_size", "cache_encoders", "audio_root",
               "output_dir"}


def fine_tune(config: TrainConfig, printer: Callable[[str], None] | None = None,
              feature_memo: dict | None = None) -> TrainResult:
    """Fine-tune a CLAP model on human ratings as ``config`` says (see the module docstring).

    ``printer`` receives one line per epoch on the main process (default: ``logging``).
    ``feature_memo``: pass the same dict to several runs on the same data to preprocess
    each audio file once (see :func:`~humanclap.training.data.build_train_data`).
    Raises ConfigError / DatasetError / ModelLoadError for bad inputs, TrainingError when
    training diverges.
    """
    cfg = TrainConfig.from_dict(config.to_dict()).validate()
    from humanclap.scoring.scorer import resolve_device

    device = resolve_device(cfg.device)
    if launched_distributed() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns_group = launched_distributed() and not torch.distributed.is_initialized()
    info = init_distributed(device)
    try:
        return _Run(cfg, device, info, printer or log.info, feature_memo).run()
    finally:
        if owns_group:
            shutdown_distributed()


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    torch.manual_seed((seed * 1_000_003 + epoch * 1_009 + rank) % (2**63))


def _lr_lambda(total: int, warmup: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


class _Run:
    def __init__(self, cfg: TrainConfig, device: torch.device, info: DistInfo, printer,
                 feature_memo: dict | None = None):
        self.cfg, self.device, self.info = cfg, device, info
        self.feature_memo = feature_memo
        self.print = printer if info.is_main else (lambda s: None)
        self.out = Path(cfg.output_dir)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                               and torch.cuda.is_bf16_supported())
        if use_bf16 and device.type != "cuda":
            raise ConfigError("precision bf16 is only supported on CUDA here; use --precision fp32")
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
        self.progress = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.progress = bool(self.progress and info.is_main)

    # -- setup -----------------------------------------------------------------------
    def _setup(self) -> None:
        from humanclap.scoring.scorer import CLAPScorer, load_components

        cfg = self.cfg
        last = ckpt.find_checkpoint(self.out, ckpt.LAST)
        if last is not None and not cfg.resume:
            raise ConfigError(f"{self.out} already holds a training run ({last}); pass --resume to "
                              "continue it, or choose another --output-dir")
        self.resume_from = last if cfg.resume else None
        if cfg.resume and last is None:
            self.print(f"--resume: no checkpoint in {self.out}/checkpoints yet, starting from scratch")
        if self.info.is_main:  # folders a killed run left half-written
            for stale in (self.out / "checkpoints").glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        torch.manual_seed(cfg.seed)  # LoRA initialisation
        model, self.tokenizer, self.extractor, self.model_info = load_components(cfg.model, cfg.revision)
        scorer = CLAPScorer(model, self.tokenizer, self.extractor, self.model_info, device="cpu")
        rated, names, self.val_split, self.test_split = load_splits(cfg)
        self.data = build_train_data(rated, names, scorer, progress=self.progress, memo=self.feature_memo)
        self.train_split = self.data.splits[cfg.train_split]
        if cfg.batch_size % self.info.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} (global) must be divisible by the "
                              f"{self.info.world_size} processes")
        self.steps_per_epoch = len(global_batches(len(self.train_split), cfg.batch_size, cfg.seed, 1))
        self.trained, clap = prepare_trainable(model, cfg)
        clap.to(self.device)
        tau = cfg.tau()
        self.tower = DualTower(clap, self.data, self.device, None if tau is None else 1.0 / tau)
        self.cached = []
        if cfg.cache_encoders:
            self.tower.build_caches(cfg, self.autocast, cfg.eval_batch_size, self._sharded)
            self.cached = [n for n, c in (("text", self.tower.text_cache), ("audio", self.tower.audio_cache))
                           if c is not None]
        self.step_module = self.tower
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # A fused HTSAT skips its fusion layers when no clip of a batch is longer than
            # the window: those parameters then get no gradient on that rank.
            unused = bool(clap.config.audio_config.enable_fusion) and cfg.train_params in ("all", "audio")
            self.step_module = DDP(self.tower, device_ids=ids, broadcast_buffers=False,
                                   find_unused_parameters=unused)
        self.params = [p for p in self.trained.parameters() if p.requires_grad]
        named = [(n, p) for n, p in self.trained.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.ndim >= 2 and "logit_scale" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "logit_scale" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(total, int(round(cfg.warmup_ratio * total)), cfg.min_lr_ratio))
        self.loss_fn = HumanClapLoss(cfg.loss, cfg.loss_weights or None, clip=cfg.clip_score,
                                     normalize=cfg.wsce_normalize)
        self.state = {"epoch": 0, "global_step": 0, "best_epoch": None, "best_srcc": None,
                      "best_val": {}, "best_test": None, "bad_epochs": 0, "history": [],
                      "stopped_early": False, "finished": False}
        if self.resume_from is not None:
            self._resume()

    def _resume(self) -> None:
        trainable, state = ckpt.load_training_state(self.resume_from, self.optimizer, self.scheduler)
        saved = state.pop("config")
        diff = sorted(k for k, v in self.cfg.to_dict().items()
                      if k not in RESUME_FREE and saved.get(k) != v)
        if diff:
            raise ConfigError(f"--resume with settings that differ from the checkpoint's: "
                              f"{ {k: (saved.get(k), getattr(self.cfg, k)) for k in diff} }; "
                              "use the original settings or a new --output-dir")
        if state.pop("base_revision", None) != self.model_info.revision:
            log.warning("the base model's revision differs from the one the checkpoint started "
                        "from; frozen weights may differ")
        state.pop("world_size", None)
        load_trainable_state(self.trained, trainable)
        self.state.update(state)
        self._rewrite_jsonl()
        self.print(f"resumed from {self.resume_from} after epoch {self.state['epoch']}")

    # -- helpers ---------------------------------------------------------------------
    def _sharded(self, n: int, batch_size: int, fn) -> torch.Tensor:
        """``fn`` over items 0..n-1, split into contiguous shards over ranks, gathered."""
        w, r = self.info.world_size, self.info.rank
        chunk = -(-n // w)
        lo, hi = min(n, r * chunk), min(n, (r + 1) * chunk)
        parts = [fn(torch.arange(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)]
        local = torch.cat(parts) if parts else fn(torch.arange(0, 1))[:0]
        return gather_no_grad(local, self.info)

    @torch.no_grad()
    def predict(self, split_name: str) -> torch.Tensor:
        """CLAPScores of a split's pairs with the current weights (eval mode)."""
        split = self.data.splits[split_name]
        self.tower.clap.eval()
        ua, ut = torch.unique(split.audio_idx), torch.unique(split.text_idx)
        bs = self.cfg.eval_batch_size

        def emb(fn, items):
            def run(i):
                with self.autocast():
                    return fn(items[i])
            return self._sharded(len(items), bs, run)

        a = emb(self.tower.embed_audio, ua)
        t = emb(self.tower.embed_text, ut)
        cos = (a[torch.searchsorted(ua, split.audio_idx)] * t[torch.searchsorted(ut, split.text_idx)]).sum(-1)
        return cos.clamp(min=0).float().cpu()

    def _rewrite_jsonl(self) -> None:
        if self.info.is_main:
            lines = "".join(json.dumps(clean_json(h)) + "\n" for h in self.state["history"])
            (self.out / "metrics.jsonl").write_text(lines)

    # -- the loop ----------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict:
        cfg, info = self.cfg, self.info
        _seed_epoch(cfg.seed, epoch, info.rank)
        set_train_mode(self.tower.clap, cfg)
        split = self.train_split
        batches = global_batches(len(split), cfg.batch_size, cfg.seed, epoch)
        sums: dict[str, float] = {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
        for step, batch in enumerate(batches, 1):
            out = self.step(batch, epoch, step)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / step:.4f}")
        if bar is not None:
            bar.close()
        return {k: v / len(batches) for k, v in sums.items()}

    def step(self, batch: torch.Tensor, epoch: int = 0, step: int = 0) -> dict[str, torch.Tensor]:
        """One optimizer step on a global batch (indices into the training split)."""
        cfg, info, split = self.cfg, self.info, self.train_split
        mine = rank_share(batch, info.rank, info.world_size)
        with self.autocast():
            a, t, scale = self.step_module(split.audio_idx[mine], split.text_idx[mine])
        a, t = gather_with_grad(a.float(), info), gather_with_grad(t.float(), info)
        ids = {"text_ids": split.text_idx[batch].to(self.device),
               "audio_ids": split.audio_idx[batch].to(self.device)} if cfg.mask_shared else {}
        out = self.loss_fn(a, t, split.target[batch].to(self.device), logit_scale=scale.float(), **ids)
        loss = out["loss"]
        if not torch.isfinite(loss):
            self._diverged(epoch, step, "loss", {k: float(v.detach()) for k, v in out.items()})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm if cfg.max_grad_norm > 0
                                              else float("inf"))
        if not torch.isfinite(norm):
            self._diverged(epoch, step, "gradient norm", {"grad_norm": float(norm)})
        self.optimizer.step()
        self.scheduler.step()
        self.state["global_step"] += 1
        return out

    def _diverged(self, epoch: int, step: int, what: str, values: dict) -> None:
        last = ckpt.find_checkpoint(self.out, ckpt.LAST)
        where = f"the last good checkpoint is {last} (epoch {self.state['epoch']})" if last else \
            "no epoch had finished, so there is no checkpoint"
        raise TrainingError(f"training diverged: non-finite {what} at epoch {epoch}, step {step} "
                            f"({values}); {where}. Lower --lr, keep --max-grad-norm > 0, or check "
                            "the data for extreme values.")

    def _checkpoint(self, improved: bool) -> None:
        if self.info.is_main:
            if improved:
                with ckpt.atomic_dir(ckpt.checkpoint_dir(self.out, ckpt.BEST)) as tmp:
                    export_hf_folder(self.trained, self.cfg, self.tokenizer, self.extractor, tmp)
            state = {**self.state, "config": self.cfg.to_dict(), "base_revision": self.model_info.revision,
                     "world_size": self.info.world_size}
            with ckpt.atomic_dir(ckpt.checkpoint_dir(self.out, ckpt.LAST)) as tmp:
                ckpt.save_training_state(tmp, trainable_state(self.trained), self.optimizer,
                                         self.scheduler, clean_json(state))
        barrier(self.info)

    def run(self) -> TrainResult:
        t0 = time.time()
        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(self.info)
        self._setup()
        st = self.state
        while not st["finished"] and st["epoch"] < cfg.epochs:
            epoch = st["epoch"] + 1
            e0 = time.time()
            terms = self._train_epoch(epoch)
            val = {}
            if self.val_split:
                pred = self.predict(self.val_split)
                val = split_metrics(pred, self.data.splits[self.val_split].target)
                if not bool((pred > 0).any()):
                    log.warning("every validation CLAPScore is 0 (all cosines negative): a clipped "
                                "MAE/MSE gives such pairs no gradient. Lower --lr, or pass "
                                "--no-clip-score to regress the raw cosine.")
            srcc = val.get("srcc", float("nan")) if val else float("nan")
            score = srcc if math.isfinite(srcc) else -math.inf
            best = st["best_srcc"] if st["best_srcc"] is not None else -math.inf
            improved = st["best_epoch"] is None or not self.val_split or score > best
            if improved:
                st.update(best_epoch=epoch, best_srcc=score if math.isfinite(score) else None,
                          best_val=val, bad_epochs=0)
                if self.test_split:
                    st["best_test"] = split_metrics(self.predict(self.test_split),
                                                    self.data.splits[self.test_split].target)
            else:
                st["bad_epochs"] += 1
            record = {"epoch": epoch, "step": st["global_step"], "lr": self.scheduler.get_last_lr()[0],
                      "train": terms, "val": val, "best": improved, "seconds": round(time.time() - e0, 3)}
            st["history"].append(record)
            st["epoch"] = epoch
            if cfg.patience and self.val_split and st["bad_epochs"] >= cfg.patience and epoch < cfg.epochs:
                st["stopped_early"] = True
                st["finished"] = True
            self._checkpoint(improved)
            if self.info.is_main:
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(clean_json(record)) + "\n")
            self.print(self._epoch_line(record))
        return self._finish(t0)

    def _epoch_line(self, r: dict) -> str:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in r["train"].items() if k != "loss")
        val = "  ".join(f"{k.upper()} {v:.3f}" for k, v in r["val"].items())
        return (f"epoch {r['epoch']}/{self.cfg.epochs}  loss {r['train']['loss']:.4f} ({terms})  "
                f"val {val or 'n/a'}{'  *best*' if r['best'] else ''}  {r['seconds']:.1f} s")

    def _finish(self, t0: float) -> TrainResult:
        st = self.state
        best = ckpt.find_checkpoint(self.out, ckpt.BEST)
        if self.info.is_main and best is not None:
            ckpt.publish(best, self.out)
            self.cfg.save(self.out / "training_config.json")
            ckpt.write_json_atomic(self.out / "metrics.json", clean_json({
                "best_epoch": st["best_epoch"], "validation": st["best_val"], "test": st["best_test"],
                "epochs_run": st["epoch"], "stopped_early": st["stopped_early"],
                "val_split": self.val_split, "test_split": self.test_split,
                "world_size": self.info.world_size, "cached_towers": self.cached,
                "base_model": self.model_info.as_dict()}))
        digest = self._digest()
        barrier(self.info)
        return TrainResult(output_dir=self.out, best_epoch=st["best_epoch"], best_val=st["best_val"],
                           test=st["best_test"], epochs_run=st["epoch"], stopped_early=st["stopped_early"],
                           seconds=time.time() - t0, cached_towers=self.cached, history=st["history"],
                           weights_digest=digest)

    def _digest(self) -> str:
        """Hash of this rank's trained parameters; ranks that disagree mean a broken run."""
        h = hashlib.sha256()
        for name, t in sorted(trainable_state(self.trained).items()):
            h.update(name.encode())
            h.update(t.float().numpy().tobytes())
        digest = h.hexdigest()
        if self.info.enabled:
            digests: list = [None] * self.info.world_size
            torch.distributed.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise TrainingError(f"processes ended with different weights ({digests}); this is a "
                                    "bug or a non-deterministic kernel, please report it")
        return digest


train = fine_tune  # the name used before the package was split into layers; kept for callers
