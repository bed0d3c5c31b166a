"""Build small random CLAP checkpoints offline (tests, smoke runs, the quick start).

The model is the real ``transformers.ClapModel`` architecture at a tiny size; the
tokenizer is a byte-level BPE trained with ``tokenizers`` and wrapped as a
``RobertaTokenizerFast`` (LAION CLAP uses RoBERTa's tokenizer). The folder written is an
ordinary Hugging Face checkpoint, loaded back through ``CLAPScorer.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

DEFAULT_CORPUS = (
    "a dog barks while a man talks",
    "rain falls on a roof followed by thunder",
    "a car horn honks then an engine revs",
    "birds chirp in the distance as wind blows",
    "a woman speaks and a baby cries",
    "music plays with a drum beat and a guitar",
    "a siren wails as traffic passes by",
    "people applaud and cheer loudly",
    "water runs from a tap into a sink",
    "a bell rings several times",
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 300):
    """Train a byte-level BPE tokenizer and wrap it as ``RobertaTokenizerFast``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=special)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        # positional: the keywords are vocab_file/merges_file in v4 but vocab/merges in v5
        tok = RobertaTokenizerFast(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=77)
    return tok


def tiny_clap_config(
    fused: bool = False,
    vocab_size: int = 300,
    projection_dim: int = 16,
    hidden_size: int = 32,
    audio_depths: tuple[int, ...] = (1, 1),
):
    """A ``ClapConfig`` a few hundred kB in size; 64 mel bins as every CLAP extractor uses."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=80,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    audio = ClapAudioConfig(
        num_mel_bins=64,
        spec_size=64,
        window_size=4,
        patch_size=4,
        patch_stride=(4, 4),
        hidden_size=hidden_size,
        patch_embeds_hidden_size=hidden_size // 2,
        depths=list(audio_depths),
        num_attention_heads=[2] * len(audio_depths),
        enable_fusion=fused,
        fusion_type="aff_2d" if fused else None,
        num_hidden_layers=len(audio_depths),
    )
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=projection_dim)


def tiny_feature_extractor(fused: bool = False, sampling_rate: int = 16000):
    """1-second window, 64 mel bins, 63 frames: fits the tiny spectrogram size of 64."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=sampling_rate,
        hop_length=sampling_rate // 62,
        max_length_s=1,
        fft_window_size=512,
        frequency_min=50,
        frequency_max=sampling_rate // 2,
        truncation="fusion" if fused else "rand_trunc",
        padding="repeatpad",
    )


def _init_std(name: str, config) -> float:
    """transformers' CLAP rule for a Linear/Conv weight: hidden^-1/2 * (2 * layers)^-1/2."""
    if name.startswith("text_model."):
        hidden, layers = config.text_config.hidden_size, config.text_config.num_hidden_layers
    elif name.startswith("audio_model."):
        hidden, layers = config.audio_config.hidden_size, len(config.audio_config.depths)
    else:  # the projection heads: the joint config, as transformers does
        hidden = config.text_config.hidden_size
        layers = config.text_config.num_hidden_layers + len(config.audio_config.depths)
    return hidden**-0.5 * (2 * layers) ** -0.5 * config.initializer_factor


@torch.no_grad()
def init_weights(model, seed: int) -> None:
    """Set every parameter of a ``ClapModel`` from ``seed`` alone, whatever transformers' version.

    transformers 4.x and 5.x draw the same distributions in a different order, so one
    ``torch.manual_seed`` gave each version a different tiny model (on 4.57 every cosine of
    the test models came out negative, CLAPScore a constant 0). Drawing each tensor here,
    by name from one seeded generator, gives the same weights on every stack. The
    distributions are transformers' own: N(0, 0.02) embeddings, N(0, hidden^-1/2 (2
    layers)^-1/2) Linear/Conv weights, zero biases, unit norms, zero relative-position
    biases, logit scales log(1/0.07). A parameter of a kind not listed here is refused, so
    a new architecture cannot silently fall back to the library's initialisation.
    """
    import math

    from torch import nn

    config = model.config
    gen = torch.Generator().manual_seed(seed)

    def normal(param: torch.Tensor, std: float) -> None:
        param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype) * std)

    for name, module in sorted(model.named_modules()):
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Embedding):
            normal(own["weight"], 0.02 * config.initializer_factor)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            normal(own["weight"], _init_std(prefix, config))
            if "bias" in own:
                own["bias"].zero_()
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            own["weight"].fill_(1.0)
            own["bias"].zero_()
        elif set(own) == {"relative_position_bias_table"}:
            own["relative_position_bias_table"].zero_()
        elif set(own) == {"logit_scale_a", "logit_scale_t"}:
            for p in own.values():
                p.fill_(math.log(config.logit_scale_init_value))
        else:
            raise TypeError(
                f"init_weights: no rule for {prefix or 'the model'} ({type(module).__name__}: {sorted(own)})"
            )


def build_tiny_clap(
    out_dir: str | Path, fused: bool = False, seed: int = 0, corpus: Iterable[str] = DEFAULT_CORPUS
) -> Path:
    """Write a tiny random CLAP checkpoint (model, tokenizer, feature extractor) to ``out_dir``."""
    from transformers import ClapModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus)
    torch.manual_seed(seed)
    model = ClapModel(tiny_clap_config(fused=fused, vocab_size=len(tokenizer)))
    init_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tiny_feature_extractor(fused=fused).save_pretrained(out)
    return out
