"""What is trained and how embeddings are computed during training.

A CLAP embedding is ``normalize(projection(pooled(inputs)))`` for either tower, the same
computation as the model's ``get_text_features`` / ``get_audio_features``; what the towers,
the pooled outputs and the projections are for each family (ClapModel, MS CLAP) is in
:mod:`~humanclap.training.towers`.

Splitting it at the pooled output lets a *frozen* tower be run once per unique item and
its outputs reused every epoch (:class:`DualTower` with ``text_cache`` / ``audio_cache``);
frozen towers always run in eval mode, so the cached outputs are the ones the uncached
path would compute at every step.

``train_params=head`` freezes the whole model (both towers cached) and trains a
:class:`~humanclap.scoring.head.ScoreHead` on the embeddings instead (:class:`HeadTower`); the
losses then score the head's prediction, and the export is the unchanged model plus the head.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.errors import ConfigError, MissingExtraError
from humanclap.training.config import TrainConfig
from humanclap.training.towers import check_lora_targets, towers_for

log = logging.getLogger(__name__)


def trained_parts(cfg: TrainConfig) -> dict[str, bool]:
    """Which parts receive gradients: towers, projections (per modality)."""
    p = cfg.train_params
    return {
        "text_tower": p in ("all", "text", "lora"),
        "audio_tower": p in ("all", "audio", "lora"),
        "text_projection": p in ("all", "text", "projections", "lora"),
        "audio_projection": p in ("all", "audio", "projections", "lora"),
    }


def prepare_trainable(model, cfg: TrainConfig):
    """Freeze what is not trained, add LoRA adapters if asked.

    Returns ``(trained_module, clap)``: the module whose parameters are optimised and
    saved (the PEFT wrapper for LoRA, else the model) and the model used for the forward
    pass (the same object, with adapters injected for LoRA). Works for every family of
    :func:`~humanclap.training.towers.towers_for`; raises ConfigError for LoRA targets
    that miss a tower.
    """
    towers = towers_for(model)
    model.requires_grad_(False)
    parts = trained_parts(cfg)
    trained = model
    if cfg.train_params == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MissingExtraError(
                "train_params=lora needs peft, which is not installed: "
                "pip install 'humanclap[train]', or choose another "
                "--train-params"
            ) from None
        targets = towers.lora_targets(list(cfg.lora_targets))
        check_lora_targets(towers, targets)
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            bias="none",
        )
        with warnings.catch_warnings():
            # GPT-2's c_attn is a transformers Conv1D (weights stored transposed): peft
            # notices and handles it, with a warning that says only that.
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            trained = get_peft_model(model, lora)  # marks only the adapters trainable
        model = trained.base_model.model
        towers = towers_for(model)  # the tree now holds the adapters
    else:
        towers.text_tower.requires_grad_(parts["text_tower"])
        towers.audio_tower.requires_grad_(parts["audio_tower"])
    towers.text_projection.requires_grad_(parts["text_projection"])
    towers.audio_projection.requires_grad_(parts["audio_projection"])
    towers.logit_scale.requires_grad_(bool(cfg.train_logit_scale))
    for p in towers.fixed_parameters():
        p.requires_grad_(False)
    return trained, model


def set_train_mode(clap, cfg: TrainConfig) -> None:
    """Frozen towers: eval. Trained towers (and trained projections that have dropout, MS
    CLAP's): dropout on if ``cfg.dropout``; BatchNorm always uses running statistics so
    that an item's output never depends on its batch."""
    towers = towers_for(clap)
    clap.eval()
    parts = trained_parts(cfg)
    if cfg.dropout:
        modules = [("text_tower", towers.text_tower), ("audio_tower", towers.audio_tower)]
        if towers.projection_dropout:
            modules += [("text_projection", towers.text_projection), ("audio_projection", towers.audio_projection)]
        for part, module in modules:
            if parts[part]:
                module.train()
    for m in clap.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def text_pooled(clap, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The text tower's output before its projection (any family)."""
    return towers_for(clap).text_pooled(input_ids, attention_mask)


def audio_pooled(clap, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
    """The audio tower's output before its projection (any family)."""
    return towers_for(clap).audio_pooled(input_features, is_longer)


class DualTower(nn.Module):
    """Embeddings of dataset items by index; optional caches replace frozen towers."""

    def __init__(self, clap, data, device: torch.device, fixed_logit_scale: float | None):
        super().__init__()
        self.clap = clap
        self.towers = towers_for(clap)  # a view of clap's modules, not a module itself
        self.data = data  # TrainData: features/tokens on CPU, indexed by unique item
        self.device = device
        self.fixed_logit_scale = fixed_logit_scale
        self.text_cache: torch.Tensor | None = None
        self.audio_cache: torch.Tensor | None = None

    def text_inputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.data.input_ids[idx].to(self.device),
            "attention_mask": self.data.attention_mask[idx].to(self.device),
        }

    def audio_inputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "input_features": self.data.features[idx].to(self.device),
            "is_longer": self.data.is_longer[idx].to(self.device),
        }

    def embed_text(self, idx: torch.Tensor) -> torch.Tensor:
        if self.text_cache is not None:
            pooled = self.text_cache[idx.to(self.text_cache.device)]
        else:
            pooled = self.towers.text_pooled(**self.text_inputs(idx))
        return F.normalize(self.towers.text_projection(pooled).float(), dim=-1)

    def embed_audio(self, idx: torch.Tensor) -> torch.Tensor:
        if self.audio_cache is not None:
            pooled = self.audio_cache[idx.to(self.audio_cache.device)]
        else:
            pooled = self.towers.audio_pooled(**self.audio_inputs(idx))
        return F.normalize(self.towers.audio_projection(pooled).float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        if self.fixed_logit_scale is not None:
            return torch.tensor(self.fixed_logit_scale, device=self.device)
        return self.towers.inverse_temperature()

    def forward(self, audio_idx: torch.Tensor, text_idx: torch.Tensor):
        return self.embed_audio(audio_idx), self.embed_text(text_idx), self.logit_scale()

    @torch.no_grad()
    def build_caches(self, cfg: TrainConfig, autocast, batch_size: int, shard) -> None:
        """Run each frozen tower once over every unique item (eval mode, no grad)."""
        parts = trained_parts(cfg)
        self.clap.eval()
        if not parts["text_tower"]:
            self.text_cache = shard(
                len(self.data.texts), batch_size, lambda i: _run(autocast, self.towers.text_pooled, self.text_inputs(i))
            )
        if not parts["audio_tower"]:
            self.audio_cache = shard(
                len(self.data.audio_paths),
                batch_size,
                lambda i: _run(autocast, self.towers.audio_pooled, self.audio_inputs(i)),
            )


def _run(autocast, fn, inputs):
    with autocast():
        return fn(**inputs)


def check_head_settings(cfg: TrainConfig) -> None:
    """ConfigError for settings a frozen-feature head cannot use (``train_params=head``)."""
    from humanclap.training.losses import parse_loss_spec

    if cfg.train_params != "head":
        return
    if "wsce" in parse_loss_spec(cfg.loss, cfg.loss_weights or None):
        raise ConfigError(
            f"--loss {cfg.loss} has a wsce term, which does not apply to --train-params head: "
            "wSCE trains the embeddings, and a head's embeddings are frozen. Use the head's "
            "regression and ranking terms, e.g. --loss mae (or mse, mae+0.5*pairwise, listnet, "
            "clipped-mse)"
        )
    if cfg.head_hidden < 1:
        raise ConfigError(f"head_hidden must be >= 1, got {cfg.head_hidden}")
    if not 0 <= cfg.head_dropout < 1:
        raise ConfigError(f"head_dropout must be in [0, 1), got {cfg.head_dropout}")


class HeadTower(nn.Module):
    """``train_params=head``: the frozen :class:`DualTower` (both towers cached) and the
    trained score head. ``forward`` gives the tower's ``(audio, text, logit scale)`` and the
    head's raw prediction of each pair; only the head has trainable parameters."""

    def __init__(self, tower: DualTower, head: nn.Module):
        super().__init__()
        self.tower, self.head = tower, head

    def forward(self, audio_idx: torch.Tensor, text_idx: torch.Tensor):
        a, t, scale = self.tower(audio_idx, text_idx)
        return a, t, scale, self.head(a.float(), t.float())


def export_model_folder(trained, cfg: TrainConfig, tokenizer, extractor, folder: Path, base_info=None) -> None:
    """Write the model folder its family loads back (LoRA merged into a copy; training
    state untouched): a standard Hugging Face folder for a ClapModel, ``config.json`` +
    ``model.safetensors`` + tokenizer for MS CLAP (``extractor`` is None there). A
    :class:`HeadTower` writes its unchanged model and then the head beside it
    (:func:`~humanclap.scoring.head.save_head`; ``base_info``: the base model's ModelInfo)."""
    if isinstance(trained, HeadTower):
        from humanclap.scoring.families import family_of_model
        from humanclap.scoring.head import save_head

        clap = trained.tower.clap
        towers_for(clap).export(tokenizer, extractor, folder)
        origin = {} if base_info is None else {"model": base_info.model_id, "revision": base_info.revision}
        save_head(trained.head, folder, family_of_model(clap).name, origin)
        return
    model = trained
    if cfg.train_params == "lora":
        model = copy.deepcopy(trained).merge_and_unload()
    towers_for(model).export(tokenizer, extractor, folder)


export_hf_folder = export_model_folder  # the name before MS CLAP could be trained; kept for callers


def trainable_state(trained) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all others are the base checkpoint's)."""
    return {n: p.detach().cpu().contiguous() for n, p in trained.named_parameters() if p.requires_grad}


def load_trainable_state(trained, state: dict[str, torch.Tensor]) -> None:
    params = dict(trained.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(state) != wanted:
        missing, extra = sorted(wanted - set(state))[:3], sorted(set(state) - wanted)[:3]
        raise ConfigError(
            "the checkpoint was written with different trained parameters "
            f"(missing {missing}, unexpected {extra}); resume with the same "
            "train_params/lora settings, or start a new output folder"
        )
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
