"""The two towers of each CLAP family, as the trainer sees them.

Training needs the same handful of things from every family: the text and audio towers,
their two projections, the logit scale of the loss, the *pooled* output of each tower (so
that a frozen tower can be run once and cached, see :class:`~humanclap.training.model.DualTower`),
which parameters must never train, LoRA's default targets, and how to write the finished
model. A :class:`Towers` answers these for one loaded model; :func:`towers_for` picks the
family from the model's class. Everything else in ``training`` is family-free.

=====================  ==================================  =========================================
                       ClapModel (LAION, Human-CLAP)       MSClapModel (MS CLAP 2022 / 2023)
=====================  ==================================  =========================================
text tower             ``text_model`` (RoBERTa)            ``caption_encoder.base`` (BERT / GPT-2)
audio tower            ``audio_model`` (HTS-AT)            ``audio_encoder.base`` (CNN14 / HTS-AT)
pooled output          ``.pooler_output``                  text: ``caption_encoder.pooled(ids, mask)``;
                                                           audio: ``base(wave)["embedding"]``
projections            ``text_projection``,                ``caption_encoder.projection``,
                       ``audio_projection``                ``audio_encoder.projection``
temperature            ``exp(logit_scale_a)``              ``exp(logit_scale)``
never trained          ``logit_scale_t``                   the log-mel front end (fixed STFT and mel
                                                           kernels, frozen in msclap too) and what
                                                           the embedding never reads: CNN14's
                                                           ``fc_audioset``, HTS-AT's ``tscam_conv``
                                                           and ``head``, BERT's ``pooler``
LoRA default targets   ``query``, ``key``, ``value``       2023: GPT-2 ``c_attn`` + HTS-AT ``qkv``;
                       (RoBERTa and HTS-AT attention)      2022: BERT ``query``, ``key``, ``value`` +
                                                           CNN14 ``fc1`` (CNN14 has no attention)
dropout (``dropout``)  trained towers                      trained towers and trained projections
exported as            ``save_pretrained`` + tokenizer     ``MSClapModel.save_pretrained``
                       + feature extractor                 (config.json, model.safetensors) + tokenizer
=====================  ==================================  =========================================

PE-Audio (``transformers.PeAudioModel``, :class:`PeAudioTowers`): text tower ``text_model``
(ModernBERT), pooled at the last hidden state's [CLS] (``forward`` asks for the hidden
states); audio tower ``audio_encoder`` (DAC codec encoder + ResNet block + transformer),
pooled at its class token from the ``(B, 2, n)`` waveform + padding-mask input; projections
``text_audio_head`` and ``audio_head`` (LayerNorm + Linear); logit scale and bias
``text_audio_logit_scale`` / ``text_audio_logit_bias``. Never trained: the DAC codec encoder
and its bottleneck (transformers runs them under ``no_grad``, so they never get a gradient),
and the logit scale and bias: they belong to the model's sigmoid loss on *unnormalised*
head outputs, while Human-CLAP's losses work on cosines, to which neither applies (the bias
cancels in a softmax); they are exported unchanged, so the match probability keeps its
form. For the same reason the learned scale is no softmax temperature:
``temperature=model`` means CLIP's initial 1/0.07 for PE-Audio (pass ``--temperature`` to
choose), and ``train_logit_scale`` is refused. LoRA default targets: ModernBERT's ``Wqkv``
and the audio transformer's ``q_proj``, ``k_proj``, ``v_proj``. Dropout: trained towers.
Exported as ``save_pretrained`` of the model, tokenizer and ``PeAudioFeatureExtractor``.

Why MS CLAP's never-read parameters are frozen: they get no gradient, so a trained copy
would equal the base anyway, and DistributedDataParallel would wait for their gradients
forever (or need ``find_unused_parameters``, which costs a graph walk every step).

Why ``dropout`` also switches on MS CLAP's projection dropout (p = 0.5 on the residual
branch) when that projection is trained: the projection is a trained part of the model,
msclap trained it with that dropout active, and ``dropout`` means "the model's own
regularisation in what is trained". ``--no-dropout`` turns it off with the towers' dropout
(a step then depends on the data only). LAION's projections have no dropout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from humanclap.errors import ConfigError

# The shipped default of TrainConfig.lora_targets: it stands for "each family's attention
# projections", so an MS CLAP run translates it (see LORA_DEFAULTS) instead of finding
# no module of that name.
GENERIC_LORA_TARGETS = ("query", "key", "value")


class Towers:
    """One loaded CLAP model seen as two towers (see the module docstring).

    Holds references to the model's own modules: it is a view, built again whenever the
    module tree changes (after LoRA adapters are injected)."""

    family = ""
    projection_dropout = False  # whether the projections hold dropout that ``dropout`` controls

    def __init__(self, model: nn.Module):
        self.model = model

    # modules and parameters ----------------------------------------------------------
    @property
    def text_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def audio_tower(self) -> nn.Module:
        raise NotImplementedError

    @property
    def text_projection(self) -> nn.Module:
        raise NotImplementedError

    @property
    def audio_projection(self) -> nn.Module:
        raise NotImplementedError

    @property
    def logit_scale(self) -> nn.Parameter:
        """The log of 1/tau of the contrastive loss (both directions)."""
        raise NotImplementedError

    def fixed_parameters(self) -> list[nn.Parameter]:
        """Parameters that never train, whatever ``train_params`` says."""
        return []

    def inverse_temperature(self) -> torch.Tensor:
        """1/tau of the contrastive loss on cosines when ``temperature=model``."""
        return self.logit_scale.float().exp()

    # forward pieces --------------------------------------------------------------------
    def text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def audio_pooled(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # settings ----------------------------------------------------------------------------
    def lora_targets(self, requested: list[str]) -> list[str]:
        """The module names that get LoRA adapters for ``requested`` (the config's list)."""
        return list(requested)

    def find_unused_parameters(self, train_params: str) -> bool:
        """Whether DistributedDataParallel must look for trained parameters without a gradient."""
        return False

    def export(self, tokenizer: Any, extractor: Any, folder: Path) -> None:
        """Write the model (LoRA already merged) in the format its family loads back."""
        raise NotImplementedError


class ClapTowers(Towers):
    """``transformers.ClapModel``: every LAION-family and Human-CLAP checkpoint."""

    family = "clap"

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    @property
    def audio_tower(self) -> nn.Module:
        return self.model.audio_model

    @property
    def text_projection(self) -> nn.Module:
        return self.model.text_projection

    @property
    def audio_projection(self) -> nn.Module:
        return self.model.audio_projection

    @property
    def logit_scale(self) -> nn.Parameter:
        # LAION's ClipLoss (mlp_loss off) used logit_scale_a for both directions.
        return self.model.logit_scale_a

    def fixed_parameters(self) -> list[nn.Parameter]:
        return [self.model.logit_scale_t]  # LAION never trained it (see losses/temperature)

    def text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def audio_pooled(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        return self.model.audio_model(input_features=input_features, is_longer=is_longer).pooler_output

    def find_unused_parameters(self, train_params: str) -> bool:
        # A fused HTSAT skips its fusion layers when no clip of a batch is longer than
        # the window: those parameters then get no gradient on that rank.
        return bool(self.model.config.audio_config.enable_fusion) and train_params in ("all", "audio")

    def export(self, tokenizer: Any, extractor: Any, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        extractor.save_pretrained(folder)


class MSClapTowers(Towers):
    """:class:`~humanclap.scoring.msclap.MSClapModel` (MS CLAP 2022 and 2023)."""

    family = "msclap"
    projection_dropout = True
    # the trained tower's modules whose parameters the embedding never reads
    UNREAD = ("fc_audioset", "tscam_conv", "head", "pooler")
    LORA_DEFAULTS = {"2023": ["c_attn", "qkv"], "2022": ["query", "key", "value", "fc1"]}

    @property
    def text_tower(self) -> nn.Module:
        return self.model.caption_encoder.base

    @property
    def audio_tower(self) -> nn.Module:
        return self.model.audio_encoder.base

    @property
    def text_projection(self) -> nn.Module:
        return self.model.caption_encoder.projection

    @property
    def audio_projection(self) -> nn.Module:
        return self.model.audio_encoder.projection

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def fixed_parameters(self) -> list[nn.Parameter]:
        from humanclap.scoring.msclap.frontend import LogmelFilterBank, Spectrogram

        out: list[nn.Parameter] = []
        for tower in (self.audio_tower, self.text_tower):
            for name, module in tower.named_modules():
                if isinstance(module, (Spectrogram, LogmelFilterBank)) or name.rsplit(".", 1)[-1] in self.UNREAD:
                    out.extend(module.parameters())
        return out

    def text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.caption_encoder.pooled(input_ids, attention_mask)

    def audio_pooled(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        # the front end is inside the tower: input_features is the raw 44.1 kHz window
        return self.model.audio_encoder.base(input_features)["embedding"]

    def lora_targets(self, requested: list[str]) -> list[str]:
        if tuple(requested) == GENERIC_LORA_TARGETS:
            return list(self.LORA_DEFAULTS[self.model.config.version])
        return list(requested)

    def export(self, tokenizer: Any, extractor: Any, folder: Path) -> None:
        self.model.save_pretrained(folder)  # config.json (model_type msclap) + model.safetensors
        tokenizer.save_pretrained(folder)  # beside the weights, where MSClapScorer looks first


class PeAudioTowers(Towers):
    """``transformers.PeAudioModel`` (Meta PE-Audio; see the module docstring)."""

    family = "pe_audio"
    LORA_DEFAULTS = ["Wqkv", "q_proj", "k_proj", "v_proj"]
    CLIP_INVERSE_TEMPERATURE = 1 / 0.07  # CLIP's initial temperature (see the module docstring)

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    @property
    def audio_tower(self) -> nn.Module:
        return self.model.audio_encoder

    @property
    def text_projection(self) -> nn.Module:
        return self.model.text_audio_head

    @property
    def audio_projection(self) -> nn.Module:
        return self.model.audio_head

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.text_audio_logit_scale

    @property
    def logit_bias(self) -> nn.Parameter:
        return self.model.text_audio_logit_bias

    def fixed_parameters(self) -> list[nn.Parameter]:
        if self.logit_scale.requires_grad:  # set just before from train_logit_scale
            raise ConfigError(
                "--train-logit-scale does not apply to PE-Audio: its learned scale and bias "
                "belong to its sigmoid loss on unnormalised head outputs, not to a softmax "
                "temperature on cosines; drop the flag (pass --temperature to choose 1/tau)"
            )
        embedder = self.model.audio_encoder.embedder
        return [
            *embedder.dac_encoder.parameters(),
            *embedder.bottleneck.parameters(),
            self.logit_scale,
            self.logit_bias,
        ]

    def inverse_temperature(self) -> torch.Tensor:
        return torch.tensor(self.CLIP_INVERSE_TEMPERATURE, device=self.logit_scale.device)

    def text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from humanclap.scoring.pe_audio.numerics import text_pooled

        return text_pooled(self.model, input_ids, attention_mask)

    def audio_pooled(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        from humanclap.scoring.pe_audio.numerics import audio_pooled

        return audio_pooled(self.model, input_features)  # (B, 2, n): waveform and padding mask

    def lora_targets(self, requested: list[str]) -> list[str]:
        if tuple(requested) == GENERIC_LORA_TARGETS:
            return list(self.LORA_DEFAULTS)
        return list(requested)

    def export(self, tokenizer: Any, extractor: Any, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        extractor.save_pretrained(folder)


def towers_for(model: nn.Module) -> Towers:
    """The :class:`Towers` view of a loaded model (a ClapModel, an MSClapModel or a PeAudioModel)."""
    from humanclap.scoring.families import family_of_model

    family = family_of_model(model)  # the family table names each family's Towers class
    if family is not None:
        return family.towers_class()(model)
    raise TypeError(f"cannot train a {type(model).__name__}: expected a transformers ClapModel or an MSClapModel")


def check_lora_targets(towers: Towers, targets: list[str]) -> None:
    """Every tower must get at least one adapter: ``lora`` trains both towers, and a tower
    without one would silently stay frozen while running (uncached) at every step."""

    def matched(tower: nn.Module) -> bool:
        return any(name == t or name.endswith("." + t) for name, _ in tower.named_modules() for t in targets)

    missing = [
        name for name, tower in (("text", towers.text_tower), ("audio", towers.audio_tower)) if not matched(tower)
    ]
    if missing:
        works = (
            "query,key,value (RoBERTa and HTS-AT attention)"
            if towers.family == "clap"
            else "the default, which means Wqkv,q_proj,k_proj,v_proj for PE-Audio (ModernBERT and audio "
            "transformer attention)"
            if towers.family == "pe_audio"
            else "the default, which means c_attn,qkv for MS CLAP 2023 (GPT-2 and HTS-AT attention) "
            "and query,key,value,fc1 for MS CLAP 2022 (BERT attention, CNN14's last layer)"
        )
        raise ConfigError(
            f"--lora-targets {','.join(targets)}: no module of that name in the "
            f"{' and '.join(missing)} tower(s) of this {type(towers.model).__name__}, so "
            f"LoRA would not train {'them' if len(missing) > 1 else 'it'}; pass module names "
            f"that exist in both towers, e.g. {works}, or another --train-params"
        )
