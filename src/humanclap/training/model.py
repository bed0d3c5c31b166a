"""What is trained and how embeddings are computed during training.

A CLAP embedding is ``normalize(projection(tower(inputs).pooler_output))`` for either
tower, the same computation as ``ClapModel.get_text_features`` / ``get_audio_features``.
Splitting it at the pooled output lets a *frozen* tower be run once per unique item and
its outputs reused every epoch (:class:`DualTower` with ``text_cache`` / ``audio_cache``);
frozen towers always run in eval mode, so the cached outputs are the ones the uncached
path would compute at every step.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from humanclap.errors import ConfigError, MissingExtraError
from humanclap.training.config import TrainConfig

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
    saved (the PEFT wrapper for LoRA, else the ClapModel) and the ClapModel used for the
    forward pass (the same object, with adapters injected for LoRA).
    """
    model.requires_grad_(False)
    parts = trained_parts(cfg)
    trained = model
    if cfg.train_params == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MissingExtraError("train_params=lora needs peft, which is not installed: "
                                    "pip install 'humanclap[train]', or choose another "
                                    "--train-params") from None
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), bias="none")
        trained = get_peft_model(model, lora)  # marks only the adapters trainable
        model = trained.base_model.model
    else:
        model.text_model.requires_grad_(parts["text_tower"])
        model.audio_model.requires_grad_(parts["audio_tower"])
    model.text_projection.requires_grad_(parts["text_projection"])
    model.audio_projection.requires_grad_(parts["audio_projection"])
    model.logit_scale_a.requires_grad_(bool(cfg.train_logit_scale))
    model.logit_scale_t.requires_grad_(False)  # LAION never trained it (see losses/temperature)
    return trained, model


def set_train_mode(clap, cfg: TrainConfig) -> None:
    """Frozen towers: eval. Trained towers: dropout on if ``cfg.dropout``; BatchNorm always
    uses running statistics so that an item's output never depends on its batch."""
    clap.eval()
    parts = trained_parts(cfg)
    if cfg.dropout:
        if parts["text_tower"]:
            clap.text_model.train()
        if parts["audio_tower"]:
            clap.audio_model.train()
    for m in clap.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def text_pooled(clap, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return clap.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def audio_pooled(clap, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
    return clap.audio_model(input_features=input_features, is_longer=is_longer).pooler_output


class DualTower(nn.Module):
    """Embeddings of dataset items by index; optional caches replace frozen towers."""

    def __init__(self, clap, data, device: torch.device, fixed_logit_scale: float | None):
        super().__init__()
        self.clap = clap
        self.data = data  # TrainData: features/tokens on CPU, indexed by unique item
        self.device = device
        self.fixed_logit_scale = fixed_logit_scale
        self.text_cache: torch.Tensor | None = None
        self.audio_cache: torch.Tensor | None = None

    def text_inputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data.input_ids[idx].to(self.device),
                "attention_mask": self.data.attention_mask[idx].to(self.device)}

    def audio_inputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_features": self.data.features[idx].to(self.device),
                "is_longer": self.data.is_longer[idx].to(self.device)}

    def embed_text(self, idx: torch.Tensor) -> torch.Tensor:
        if self.text_cache is not None:
            pooled = self.text_cache[idx.to(self.text_cache.device)]
        else:
            pooled = text_pooled(self.clap, **self.text_inputs(idx))
        return F.normalize(self.clap.text_projection(pooled).float(), dim=-1)

    def embed_audio(self, idx: torch.Tensor) -> torch.Tensor:
        if self.audio_cache is not None:
            pooled = self.audio_cache[idx.to(self.audio_cache.device)]
        else:
            pooled = audio_pooled(self.clap, **self.audio_inputs(idx))
        return F.normalize(self.clap.audio_projection(pooled).float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        if self.fixed_logit_scale is not None:
            return torch.tensor(self.fixed_logit_scale, device=self.device)
        # LAION's ClipLoss (mlp_loss off) used logit_scale_a for both directions.
        return self.clap.logit_scale_a.float().exp()

    def forward(self, audio_idx: torch.Tensor, text_idx: torch.Tensor):
        return self.embed_audio(audio_idx), self.embed_text(text_idx), self.logit_scale()

    @torch.no_grad()
    def build_caches(self, cfg: TrainConfig, autocast, batch_size: int, shard) -> None:
        """Run each frozen tower once over every unique item (eval mode, no grad)."""
        parts = trained_parts(cfg)
        self.clap.eval()
        if not parts["text_tower"]:
            self.text_cache = shard(len(self.data.texts), batch_size,
                                    lambda i: _run(autocast, text_pooled, self.clap, self.text_inputs(i)))
        if not parts["audio_tower"]:
            self.audio_cache = shard(len(self.data.audio_paths), batch_size,
                                     lambda i: _run(autocast, audio_pooled, self.clap, self.audio_inputs(i)))


def _run(autocast, fn, clap, inputs):
    with autocast():
        return fn(clap, **inputs)


def export_hf_folder(trained, cfg: TrainConfig, tokenizer, extractor, folder: Path) -> None:
    """Write a standard HF model folder (LoRA merged into a copy; training state untouched)."""
    model = trained
    if cfg.train_params == "lora":
        model = copy.deepcopy(trained).merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    extractor.save_pretrained(folder)


def trainable_state(trained) -> dict[str, torch.Tensor]:
    """The parameters that training changes (all others are the base checkpoint's)."""
    return {n: p.detach().cpu().contiguous() for n, p in trained.named_parameters() if p.requires_grad}


def load_trainable_state(trained, state: dict[str, torch.Tensor]) -> None:
    params = dict(trained.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(state) != wanted:
        missing, extra = sorted(wanted - set(state))[:3], sorted(set(state) - wanted)[:3]
        raise ConfigError("the checkpoint was written with different trained parameters "
                          f"(missing {missing}, unexpected {extra}); resume with the same "
                          "train_params/lora settings, or start a new output folder")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
