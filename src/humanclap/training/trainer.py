"""Human-CLAP fine-tuning: ``fine_tune(TrainConfig) -> TrainResult`` (also ``train``).

One loop for one CPU, one GPU, or many processes (``torchrun``/``accelerate launch``; see
``distributed.py`` for why the multi-process wSCE equals the single-process one):

* data: every unique audio file preprocessed once, deterministically (``data.py``);
* model: a ``ClapModel`` or an MS CLAP ``MSClapModel`` (``towers.py``: what each family's
  towers are) with the chosen parts trainable (``model.py``); frozen towers run once
  and are cached (the fast path) unless ``cache_encoders`` is off;
* AdamW, linear warm-up then cosine decay (``optim.py``), gradient clipping, bf16
  autocast on CUDA;
* each epoch: validation SRCC/LCC/KTAU/MSE, a line on stderr and in ``metrics.jsonl``, an
  atomic resume checkpoint, the best model kept; early stopping on validation SRCC
  (``state.py``);
* a NaN/inf loss or gradient stops with :class:`TrainingError`; checkpoints stay intact;
* the end: the best model in ``output_dir``, in the format its family loads back (a
  standard Hugging Face folder, or MS CLAP's config.json + model.safetensors + tokenizer).

Randomness: shuffling depends on (seed, epoch) only, and the global RNGs (dropout,
drop-path) are re-seeded from (seed, epoch, rank) at the start of each epoch, so a run
resumed at an epoch boundary continues exactly like the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from humanclap.errors import ConfigError, HumanclapError, TrainingError
from humanclap.io import atomic_dir, json_safe, write_json
from humanclap.outputs import describe_differences, identity_differences
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.device import resolve_device
from humanclap.scoring.families import precheck
from humanclap.training import checkpoints as ckpt
from humanclap.training.components import TrainComponents, build_components, precision_context
from humanclap.training.config import TrainConfig
from humanclap.training.data import global_batches, rank_share
from humanclap.training.distributed import (
    DistInfo,
    barrier,
    gather_with_grad,
    init_distributed,
    launched_distributed,
    shard_map,
    shutdown_distributed,
)
from humanclap.training.model import (
    HeadTower,
    check_head_settings,
    export_model_folder,
    load_trainable_state,
    set_train_mode,
    trainable_state,
)
from humanclap.training.optim import seed_epoch

# RESUME_FREE and planned_identity are re-exported: callers import them from here.
from humanclap.training.output import (  # noqa: F401
    RESUME_FREE,
    check_output_dir,
    claim_output,
    planned_identity,
    refuse_foreign_model,
    training_identity,
)
from humanclap.training.result import TrainResult, split_metrics
from humanclap.training.state import UNDEFINED_SELECTION, TrainState, epoch_line

# TrainingError stays importable from here: the CLI and older callers look for it here.
__all__ = ["Trainer", "fine_tune", "train", "planned_identity", "RESUME_FREE", "TrainingError"]

log = logging.getLogger(__name__)


def fine_tune(
    config: TrainConfig, printer: Callable[[str], None] | None = None, feature_memo: dict | None = None
) -> TrainResult:
    """Fine-tune a CLAP model on human ratings as ``config`` says (see the module docstring).

    ``printer`` receives one line per epoch on the main process (default: ``logging``).
    ``feature_memo``: pass the same dict to several runs on the same data to preprocess
    each audio file once (see :func:`~humanclap.training.data.build_train_data`).
    Under ``torchrun`` it joins (and afterwards leaves) the launcher's process group.
    Raises ConfigError / DatasetError / ModelLoadError for bad inputs, TrainingError when
    training diverges.
    """
    if not isinstance(config, TrainConfig):  # a path or a dict would fail deep inside, as an AttributeError
        raise ConfigError(
            f"fine_tune needs a TrainConfig, got {type(config).__name__}: build one with "
            "TrainConfig(...), TrainConfig.load('config.yaml') or TrainConfig.from_dict(d)"
        )
    cfg = config.validated_copy()  # checked here unless the caller's validate() passed on these values

    device = resolve_device(cfg.device)
    if launched_distributed() and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns_group = launched_distributed() and not torch.distributed.is_initialized()
    info = init_distributed(device)
    try:
        return Trainer(cfg, device, info, printer or log.info, feature_memo).run()
    finally:
        if owns_group:
            shutdown_distributed()


class Trainer:
    """One training run: built (model, data, optimizer, resume state) on construction,
    trained by :meth:`run`. :func:`fine_tune` is the entry point; use the class directly to
    drive or time single steps (``benchmarks/bench_train.py``)::

        trainer = Trainer(cfg)                     # one process, cfg.device
        for batch in trainer.start_epoch(1):
            terms = trainer.step(batch)            # {"loss": ..., "wsce": ..., "mae": ...}

    ``device`` defaults to ``cfg.device`` resolved; ``info`` to a single process (a
    multi-process run needs the process group :func:`fine_tune` joins).
    Raises ConfigError for an ``output_dir`` that holds another run (without ``resume``),
    a checkpoint from other settings, or unusable settings.

    The output folder is claimed (:func:`humanclap.outputs.claim_folder`: new, empty or an
    earlier train run; locked) by the main process from construction until :meth:`run`
    ends or :meth:`close` is called; a second run on the same folder is refused.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device | str | None = None,
        info: DistInfo | None = None,
        printer: Callable[[str], None] | None = None,
        feature_memo: dict | None = None,
    ):
        started = time.time()
        self.cfg = cfg.validated_copy()  # a private copy; fine_tune's is not checked again
        check_head_settings(self.cfg)

        precheck(self.cfg.model)  # a mistyped model path fails before the output folder is claimed
        if isinstance(device, torch.device):
            self.device = device  # fine_tune's choice (the local rank's GPU under torchrun)
        else:
            self.device = resolve_device(self.cfg.device if device is None else device)
        self.info = info or DistInfo()
        say = printer or log.info
        self.print: Callable[[str], None] = say if self.info.is_main else (lambda s: None)
        self.out = Path(self.cfg.output_dir)
        self.autocast = precision_context(self.cfg, self.device)
        progress = self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()
        self.progress = bool(progress and self.info.is_main)
        # Every rank checks (so all refuse alike, none waits at the barrier); the main
        # process claims and locks the folder and tells the others whether it could.
        check_output_dir(self.out, self.cfg.data, create=self.info.is_main, model=self.cfg.model)
        self._claims = ExitStack()
        try:
            self.run_folder = self._claim_output()
            barrier(self.info)
            self.resume_from = self._resume_folder()
            self.parts: TrainComponents = build_components(
                self.cfg, self.device, self.info, self.autocast, self.progress, feature_memo
            )
            self.identity = training_identity(
                self.cfg,
                self.parts.model_info,
                {name: self.parts.data.splits[name].pairs for name in self.parts.data.splits},
                free=RESUME_FREE,
            )
            self.state = self._restore(self.resume_from) if self.resume_from else TrainState()
            if self.run_folder is not None:
                self.run_folder.set_identity(self.identity)
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.time() - started

    def close(self) -> None:
        """Release the output folder's lock (:meth:`run` does it when it ends)."""
        self._claims.close()

    # -- public ------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.parts.steps_per_epoch

    @property
    def head(self) -> torch.nn.Module | None:
        """The score head being trained (``train_params=head``), else None."""
        trained = self.parts.trained
        return trained.head if isinstance(trained, HeadTower) else None

    @property
    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates."""
        return self.parts.params

    def start_epoch(self, epoch: int) -> list[torch.Tensor]:
        """Prepare epoch ``epoch`` (1-based): re-seed the global RNGs from (seed, epoch, rank),
        put the trained parts in training mode, and return the epoch's global batches
        (indices into the training split) in order, for :meth:`step`."""
        cfg = self.cfg
        seed_epoch(cfg.seed, epoch, self.info.rank)
        set_train_mode(self.parts.tower.clap, cfg)
        if self.head is not None:
            self.head.train()  # its dropout (0 with --no-dropout)
        return global_batches(len(self.parts.train_split), cfg.batch_size, cfg.seed, epoch)

    def step(self, batch: torch.Tensor, epoch: int = 0, step: int = 0) -> dict[str, torch.Tensor]:
        """One optimizer step on a global batch (indices into the training split): this
        rank's share runs forward, embeddings are gathered over ranks, then loss, backward,
        gradient clipping, AdamW and the schedule. Returns the loss terms (``"loss"`` is the
        weighted total). ``epoch``/``step`` only label a :class:`TrainingError` raised on a
        non-finite loss or gradient norm (the weights are then left unchanged)."""
        cfg, info, p = self.cfg, self.info, self.parts
        split = p.train_split
        mine = rank_share(batch, info.rank, info.world_size)
        with self.autocast():
            a, t, scale, *head = p.step_module(split.audio_idx[mine], split.text_idx[mine])
        a, t = gather_with_grad(a.float(), info), gather_with_grad(t.float(), info)
        ids = (
            {"text_ids": split.text_idx[batch].to(self.device), "audio_ids": split.audio_idx[batch].to(self.device)}
            if cfg.mask_shared
            else {}
        )
        if head:  # train_params=head: the losses score the head's prediction
            ids["prediction"] = gather_with_grad(head[0].float(), info)
        out = p.loss_fn(a, t, split.target[batch].to(self.device), logit_scale=scale.float(), **ids)
        loss = out["loss"]
        if not torch.isfinite(loss):
            self._diverged(epoch, step, "loss", {k: float(v.detach()) for k, v in out.items()})
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(p.params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        if not torch.isfinite(norm):
            self._diverged(epoch, step, "gradient norm", {"grad_norm": float(norm)})
        p.optimizer.step()
        p.scheduler.step()
        self.state.global_step += 1
        return out

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Every step of epoch ``epoch``; the mean of each loss term over its steps."""
        batches = self.start_epoch(epoch)
        sums: dict[str, float] = {}
        bar = None
        if self.progress:
            bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False)
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

    @torch.no_grad()
    def predict(self, split_name: str) -> torch.Tensor:
        """CLAPScores of a split's pairs with the current weights (eval mode), on CPU; with a
        score head, its prediction clipped to [0, 1] (what the exported model scores)."""
        p = self.parts
        split = p.data.splits[split_name]
        p.tower.clap.eval()
        ua, ut = torch.unique(split.audio_idx), torch.unique(split.text_idx)
        bs = self.cfg.eval_batch_size

        def emb(fn, items):
            def run(i):
                with self.autocast():
                    return fn(items[i])

            return shard_map(len(items), bs, run, self.info)

        a = emb(p.tower.embed_audio, ua)
        t = emb(p.tower.embed_text, ut)
        a, t = a[torch.searchsorted(ua, split.audio_idx)], t[torch.searchsorted(ut, split.text_idx)]
        if self.head is not None:
            self.head.eval()
            return self.head(a.float(), t.float()).clamp(0, 1).float().cpu()
        return clapscore((a * t).sum(-1)).float().cpu()

    def run(self) -> TrainResult:
        """Train the remaining epochs (all of them, or those after the resumed one), then
        publish the best model; returns what was achieved. Releases the output's lock."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> TrainResult:
        t0 = time.time()
        cfg, st, p = self.cfg, self.state, self.parts
        while not st.finished and st.epoch < cfg.epochs:
            epoch = st.epoch + 1
            e0 = time.time()
            terms = self.train_epoch(epoch)
            val = self._validate()
            validating = bool(p.val_split)
            kept = st.observe(epoch, val, validating=validating)
            if kept and p.test_split:
                st.best_test = split_metrics(self.predict(p.test_split), p.data.splits[p.test_split].target)
            # "best" only when selected on a defined SRCC: a model kept because no epoch had
            # one (constant predictions) is not the best of anything.
            best = kept and (not validating or st.best_srcc is not None)
            record = {
                "epoch": epoch,
                "step": st.global_step,
                "lr": p.scheduler.get_last_lr()[0],
                "train": terms,
                "val": val,
                "best": best,
                "seconds": round(time.time() - e0, 3),
            }
            st.end_epoch(record, cfg.patience, validating, cfg.epochs)
            self._checkpoint(kept)
            if self.info.is_main:
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(json_safe(record)) + "\n")
            self.print(epoch_line(record, cfg.epochs))
        return self._finish(self.setup_seconds + time.time() - t0)

    # -- internals ---------------------------------------------------------------------
    def _claim_output(self):
        """Claim ``output_dir`` on the main process (a RunFolder; None on the others);
        every process raises the main one's refusal."""
        error: HumanclapError | None = None
        run = None
        if self.info.is_main:
            try:
                run = claim_output(self.out, self.cfg.resume, self._claims, self.print)
            except HumanclapError as exc:
                error = exc
                self._claims.close()
        if self.info.enabled:
            message = [str(error) if error is not None else None]
            torch.distributed.broadcast_object_list(message, src=0)
            if error is None and message[0] is not None:
                raise ConfigError(message[0])
        if error is not None:
            raise error
        return run

    def _resume_folder(self) -> Path | None:
        """The checkpoint to resume from; refuses to train over another run's folder."""
        last = ckpt.find_checkpoint(self.out, ckpt.LAST)
        if last is not None and not self.cfg.resume:
            raise ConfigError(
                f"{self.out} already holds a training run ({last}); pass --resume to "
                "continue it, or choose another --output-dir"
            )
        if last is None:
            refuse_foreign_model(self.out)
        if self.cfg.resume and last is None:
            self.print(f"--resume: no checkpoint in {self.out}/checkpoints yet, starting from scratch")
        if self.info.is_main:  # folders a killed run left half-written
            for stale in (self.out / "checkpoints").glob(".*.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            # Recorded before they are written: a killed run's marker owns them.
            self.run_folder.record("checkpoints", "metrics.jsonl")
        return last if self.cfg.resume else None

    def _restore(self, folder: Path) -> TrainState:
        """Load weights, optimizer and schedule from ``folder``; its run state."""
        saved = ckpt.read_training_state(folder)
        config = saved["config"]
        diff = sorted(k for k, v in self.cfg.to_dict().items() if k not in RESUME_FREE and config.get(k) != v)
        if diff:
            raise ConfigError(
                f"--resume with settings that differ from the checkpoint's: "
                f"{ {k: (config.get(k), getattr(self.cfg, k)) for k in diff} }; "
                "use the original settings or a new --output-dir"
            )
        then = saved.get("identity")
        if then is None:  # written before the identity record: settings were compared above
            if saved.get("base_revision") != self.parts.model_info.revision:
                log.warning(
                    "the base model's revision differs from the one the checkpoint started "
                    "from; frozen weights may differ"
                )
        else:
            diffs = identity_differences(then, self.identity)
            if diffs:
                raise ConfigError(
                    f"--resume: {self.out} holds a run of another model, data or "
                    f"settings ({describe_differences(diffs)}); resume with what "
                    "the run started from, or choose another --output-dir"
                )
        trainable = ckpt.restore_training_state(folder, saved, self.parts.optimizer, self.parts.scheduler)
        load_trainable_state(self.parts.trained, trainable)
        state = TrainState.from_dict(saved, source=str(folder / ckpt.STATE_FILE))
        self._write_history(state.history)
        self.print(f"resumed from {folder} after epoch {state.epoch}")
        return state

    def _write_history(self, history: list[dict]) -> None:
        # metrics.jsonl may hold epochs after the checkpoint (killed between the two writes).
        if self.info.is_main:
            lines = "".join(json.dumps(json_safe(h)) + "\n" for h in history)
            (self.out / "metrics.jsonl").write_text(lines)

    def _validate(self) -> dict[str, float]:
        p = self.parts
        if not p.val_split:
            return {}
        pred = self.predict(p.val_split)
        if not bool((pred > 0).any()) and self.head is not None:
            log.warning("every validation score of the head is 0 (its outputs are all below 0): lower --lr")
        elif not bool((pred > 0).any()):
            log.warning(
                "every validation CLAPScore is 0 (all cosines negative): a clipped "
                "MAE/MSE gives such pairs no gradient. Lower --lr, or pass "
                "--no-clip-score to regress the raw cosine."
            )
        return split_metrics(pred, p.data.splits[p.val_split].target)

    def _diverged(self, epoch: int, step: int, what: str, values: dict) -> None:
        last = ckpt.find_checkpoint(self.out, ckpt.LAST)
        where = (
            f"the last good checkpoint is {last} (epoch {self.state.epoch})"
            if last
            else "no epoch had finished, so there is no checkpoint"
        )
        raise TrainingError(
            f"training diverged: non-finite {what} at epoch {epoch}, step {step} "
            f"({values}); {where}. Lower --lr, keep --max-grad-norm > 0, or check "
            "the data for extreme values."
        )

    def _checkpoint(self, improved: bool) -> None:
        p = self.parts
        if self.info.is_main:
            if improved:
                with atomic_dir(ckpt.checkpoint_dir(self.out, ckpt.BEST)) as tmp:
                    export_model_folder(p.trained, self.cfg, p.tokenizer, p.extractor, tmp, base_info=p.model_info)
            state = {
                **self.state.to_dict(),
                "config": self.cfg.to_dict(),
                "base_revision": p.model_info.revision,
                "world_size": self.info.world_size,
                "identity": self.identity,
            }
            with atomic_dir(ckpt.checkpoint_dir(self.out, ckpt.LAST)) as tmp:
                ckpt.save_training_state(tmp, trainable_state(p.trained), p.optimizer, p.scheduler, state)
        barrier(self.info)

    def _finish(self, seconds: float) -> TrainResult:
        st, p = self.state, self.parts
        best = ckpt.find_checkpoint(self.out, ckpt.BEST)
        selected_by = st.selected_by(bool(p.val_split))
        if self.info.is_main and selected_by == UNDEFINED_SELECTION:
            # Kept rather than refused: the run did train, and an undefined SRCC can be the
            # validation data's fault (too few pairs, one score for all) as much as the
            # model's; the user decides, told loudly what was kept and why.
            log.warning(
                "validation SRCC was undefined on every epoch (constant predictions or "
                "targets, e.g. every CLAPScore clipped to 0, or fewer than 3 validation pairs): "
                "no epoch could be selected on it, so the LAST epoch (%s) is kept. Check the "
                "validation split, lower --lr, or pass --no-clip-score.",
                st.best_epoch,
            )
        if self.info.is_main and best is not None:
            names = sorted(f.name for f in best.iterdir() if f.is_file())
            foreign = [n for n in names if (self.out / n).exists() and n not in self.run_folder.files]
            if foreign:
                raise ConfigError(
                    f"--output-dir {self.out} holds {', '.join(foreign)}, which this "
                    "run did not write: not replaced. The model is in "
                    f"{best}; move those files away and rerun with --resume"
                )
            self.run_folder.record(*names, "training_config.json", "metrics.json")
            ckpt.publish(best, self.out)
            self.cfg.save(self.out / "training_config.json")
            write_json(
                self.out / "metrics.json",
                {
                    "best_epoch": st.best_epoch,
                    "validation": st.best_val,
                    "test": st.best_test,
                    "epochs_run": st.epoch,
                    "stopped_early": st.stopped_early,
                    "val_split": p.val_split,
                    "test_split": p.test_split,
                    "world_size": self.info.world_size,
                    "cached_towers": p.cached_towers,
                    "base_model": p.model_info.as_dict(),
                    "selected_by": selected_by,
                    "targets": p.targets,
                },
            )
        digest = self._digest()
        barrier(self.info)
        return TrainResult(
            output_dir=self.out,
            best_epoch=st.best_epoch,
            best_val=st.best_val,
            test=st.best_test,
            epochs_run=st.epoch,
            stopped_early=st.stopped_early,
            seconds=seconds,
            cached_towers=p.cached_towers,
            history=st.history,
            weights_digest=digest,
            selected_by=selected_by,
            family=p.tower.towers.family,
            head=self.head is not None,
        )

    def _digest(self) -> str:
        """Hash of this rank's trained parameters; ranks that disagree mean a broken run."""
        h = hashlib.sha256()
        for name, t in sorted(trainable_state(self.parts.trained).items()):
            h.update(name.encode())
            h.update(t.float().numpy().tobytes())
        digest = h.hexdigest()
        if self.info.enabled:
            digests: list = [None] * self.info.world_size
            torch.distributed.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise TrainingError(
                    f"processes ended with different weights ({digests}); this is a "
                    "bug or a non-deterministic kernel, please report it"
                )
        return digest


train = fine_tune  # the name used before the package was split into layers; kept for callers
