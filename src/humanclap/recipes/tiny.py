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


def tiny_clap_config(fused: bool = False, vocab_size: int = 300, projection_dim: int = 16,
                     hidden_size: int = 32, audio_depths: tuple[int, ...] = (1, 1)):
    """A ``ClapConfig`` a few hundred kB in size; 64 mel bins as every CLAP extractor uses."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=2 * hidden_size,
        max_position_embeddings=80, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    audio = ClapAudioConfig(
        num_mel_bins=64, spec_size=64, window_size=4, patch_size=4, patch_stride=(4, 4),
        hidden_size=hidden_size, patch_embeds_hidden_size=hidden_size // 2,
        depths=list(audio_depths), num_attention_heads=[2] * len(audio_depths),
        enable_fusion=fused, fusion_type="aff_2d" if fused else None,
        num_hidden_layers=len(audio_depths),
    )
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                      projection_dim=projection_dim)


def tiny_feature_extractor(fused: bool = False, sampling_rate: int = 16000):
    """1-second window, 64 mel bins, 63 frames: fits the tiny spectrogram size of 64."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=64, sampling_rate=sampling_rate, hop_length=sampling_rate // 62,
        max_length_s=1, fft_window_size=512, frequency_min=50,
        frequency_max=sampling_rate // 2, truncation="fusion" if fused else "rand_trunc",
        padding="repeatpad",
    )


def build_tiny_clap(out_dir: str | Path, fused: bool = False, seed: int = 0,
                    corpus: Iterable[str] = DEFAULT_CORPUS) -> Path:
    """Write a tiny random CLAP checkpoint (model, tokenizer, feature extractor) to ``out_dir``."""
    from transformers import ClapModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus)
    torch.manual_seed(seed)
    model = ClapModel(tiny_clap_config(fused=fused, vocab_size=len(tokenizer)))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tiny_feature_extractor(fused=fused).save_pretrained(out)
    return out
