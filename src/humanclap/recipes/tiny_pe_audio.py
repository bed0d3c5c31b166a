"""Build small random PE-Audio checkpoints offline (tests, smoke runs).

The model is the real ``transformers.PeAudioModel`` at a tiny size, built from transformers'
own config classes (``PeAudioConfig``: a ModernBERT text config and a ``PeAudioEncoderConfig``
with its DAC codec config); the tokenizer is a byte-level BPE trained with ``tokenizers`` in
ModernBERT's shape (``[CLS] text [SEP]``, ``[PAD]``, ``[MASK]``). The folder is an ordinary
Hugging Face checkpoint (``save_pretrained`` of model, tokenizer and ``PeAudioFeatureExtractor``)
and loads back through :func:`humanclap.scoring.load_scorer`.

The tiny model runs at 16 kHz with a 320-sample hop (codec ratios 2·4·5·8, 20 ms frames)
instead of Meta's 48 kHz / 1920 (2·8·10·12, 40 ms): the same code paths, a third of the samples.
Needs transformers >= 5.0 (``transformers.models.pe_audio``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from humanclap.recipes.tiny import DEFAULT_CORPUS

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
# So that the match probability is not the constant sigmoid(0) of transformers' zero init.
LOGIT_SCALE, LOGIT_BIAS = 2.0, -1.0


def train_modernbert_tokenizer(texts: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 300):
    """A byte-level BPE with ModernBERT's special tokens and ``[CLS] $A [SEP]`` template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def tiny_pe_audio_config(tokenizer, hidden_size: int = 32, sampling_rate: int = 16000):
    """A ``PeAudioConfig`` of ~150 k parameters."""
    from transformers import PeAudioConfig

    text = dict(
        model_type="modernbert",
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        global_attn_every_n_layers=2,
        local_attention=16,
    )
    audio = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=hidden_size // 2,
        max_position_embeddings=2048,
        dac_config=dict(
            encoder_hidden_size=4, downsampling_ratios=[2, 4, 5, 8], codebook_dim=8, sampling_rate=sampling_rate
        ),
    )
    return PeAudioConfig(text_config=text, audio_config=audio)


def build_tiny_pe_audio(out_dir: str | Path, seed: int = 0, corpus: Iterable[str] = DEFAULT_CORPUS) -> Path:
    """Write a tiny random PE-Audio checkpoint (model, tokenizer, feature extractor) to ``out_dir``."""
    from transformers import PeAudioFeatureExtractor, PeAudioModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_modernbert_tokenizer(corpus)
    config = tiny_pe_audio_config(tokenizer)
    torch.manual_seed(seed)
    model = PeAudioModel(config).eval()
    with torch.no_grad():
        model.text_audio_logit_scale.fill_(LOGIT_SCALE)
        model.text_audio_logit_bias.fill_(LOGIT_BIAS)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    hop = int(config.audio_config.dac_config.hop_length)
    PeAudioFeatureExtractor(
        sampling_rate=int(config.audio_config.dac_config.sampling_rate), hop_length=hop
    ).save_pretrained(out)
    return out
