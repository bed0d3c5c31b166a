"""PE-Audio's embeddings and match logit, computed as ``PeAudioModel.forward`` computes them.

transformers 5.25's ``PeAudioModel``:

* text: ModernBERT, asked for its hidden states; the last one's first token ([CLS]) goes
  through ``text_audio_head`` (LayerNorm + Linear). ``get_text_audio_embeds`` reads
  ``hidden_states`` without requesting them (``None`` -> TypeError), so it is not used;
  :func:`text_heads` requests them as ``forward`` does;
* audio: ``audio_encoder`` (DAC codec encoder, run under ``no_grad`` by transformers itself,
  then a ResNet block and a transformer) pooled at its class token, through ``audio_head``;
* the match logit: ``scale * (audio_head(a) . text_audio_head(t)) + bias``, on the heads'
  **unnormalised** outputs, with ``text_audio_logit_scale`` used as it is (no ``exp``). Meta's
  original release (facebookresearch/perception_models, ``PEAudioFrame``) computes its
  logits the same way (``unscaled_logits * logit_scale + logit_bias``, then a sigmoid);
  humanclap follows transformers 5.25, which agrees with it;
* CLAPScore: ``max(cos, 0)`` of the two heads' outputs, like every family.

These functions keep the autograd graph (training uses them through ``training/towers.py``).
"""

from __future__ import annotations

import torch


def text_pooled(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The text tower's [CLS] state before ``text_audio_head`` (what ``forward`` uses)."""
    out = model.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-1][:, 0]


def audio_pooled(model, features: torch.Tensor) -> torch.Tensor:
    """The audio tower's class-token output before ``audio_head``; ``features`` is ``(B, 2, n)``:
    waveform and padding mask (see :mod:`.preprocessing`)."""
    mask = features[:, 1].to(torch.int32)  # PeAudioFeatureExtractor's padding_mask dtype
    return model.audio_encoder(input_values=features[:, :1], padding_mask=mask).pooler_output


def text_heads(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``text_audio_head`` outputs (unnormalised), ``(B, dim)``."""
    return model.text_audio_head(text_pooled(model, input_ids, attention_mask))


def audio_heads(model, features: torch.Tensor) -> torch.Tensor:
    """``audio_head`` outputs (unnormalised), ``(B, dim)``."""
    return model.audio_head(audio_pooled(model, features))


def match_logit(model, audio_raw: torch.Tensor, text_raw: torch.Tensor) -> torch.Tensor:
    """The logit of each (audio, text) pair, paired row by row: ``scale * a.t + bias``."""
    dots = torch.einsum("nd,nd->n", audio_raw.float(), text_raw.float())
    scale = model.text_audio_logit_scale.detach().float().to(dots.device)
    bias = model.text_audio_logit_bias.detach().float().to(dots.device)
    return dots * scale + bias
