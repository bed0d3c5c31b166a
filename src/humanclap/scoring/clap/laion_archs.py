"""The architectures ``humanclap convert`` knows: LAION's HTS-AT audio towers and RoBERTa text tower.

Every value here is one that ``laion_clap`` hard-codes (``htsat.create_htsat_model``,
``model_configs/HTSAT-*.json``, ``RobertaModel.from_pretrained('roberta-base')``) and that the
weights alone do not record (head counts, window, spectrogram size, front end).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARCHS", "TEXTS", "HtsatArch", "TextArch", "clap_config", "feature_extractor"]


@dataclass(frozen=True)
class HtsatArch:
    """An HTS-AT audio tower as ``laion_clap``'s ``create_htsat_model`` builds it, plus its front end."""

    name: str
    embed_dim: int  # width of stage 1; the audio embedding is embed_dim * 2**(stages-1)
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 8
    spec_size: int = 256  # HTS-AT's square input: 1024 frames x 64 mels folded to 256 x 256
    patch_size: int = 4
    patch_stride: int = 4
    projection_dim: int = 512  # LAION's joint_embed_shape
    # Front end (model_configs/HTSAT-*.json audio_cfg); the .pt stores the torchlibrosa filters
    # for it, which we check against these values instead of carrying them over.
    sampling_rate: int = 48000
    window_s: int = 10
    n_fft: int = 1024
    hop_length: int = 480
    num_mel_bins: int = 64
    fmin: int = 50
    fmax: int = 14000

    @property
    def audio_hidden_size(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


@dataclass(frozen=True)
class TextArch:
    """A RoBERTa text tower (``laion_clap`` builds it with ``RobertaModel.from_pretrained('roberta-base')``).

    The head count is not recorded in the weights, so it is part of the preset."""

    name: str
    tokenizer_id: str = "roberta-base"
    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5  # RoBERTa's; ClapTextConfig's default (1e-12) is not
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2


ARCHS: dict[str, HtsatArch] = {
    "HTSAT-tiny": HtsatArch("HTSAT-tiny", embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
    "HTSAT-base": HtsatArch("HTSAT-base", embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)),
}
TEXTS: dict[str, TextArch] = {"roberta": TextArch("roberta")}


def clap_config(arch: HtsatArch, text: TextArch, fused: bool):
    """The ``ClapConfig`` of a converted checkpoint (every value LAION's code hard-codes)."""
    # lazy: keeps torch/transformers out of `import humanclap.scoring.clap.laion_archs`
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text_cfg = ClapTextConfig(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        num_hidden_layers=text.num_layers,
        num_attention_heads=text.num_heads,
        intermediate_size=text.intermediate_size,
        max_position_embeddings=text.max_position_embeddings,
        type_vocab_size=text.type_vocab_size,
        layer_norm_eps=text.layer_norm_eps,
        hidden_act="gelu",
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
    )
    audio_cfg = ClapAudioConfig(
        window_size=arch.window_size,
        num_mel_bins=arch.num_mel_bins,
        spec_size=arch.spec_size,
        patch_size=arch.patch_size,
        patch_stride=[arch.patch_stride, arch.patch_stride],
        hidden_size=arch.audio_hidden_size,
        patch_embeds_hidden_size=arch.embed_dim,
        depths=list(arch.depths),
        num_attention_heads=list(arch.num_heads),
        num_hidden_layers=len(arch.depths),
        enable_fusion=fused,
        fusion_type="aff_2d" if fused else None,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
    )
    return ClapConfig(
        text_config=text_cfg.to_dict(),
        audio_config=audio_cfg.to_dict(),
        projection_dim=arch.projection_dim,
        projection_hidden_act="relu",
    )


def feature_extractor(arch: HtsatArch, fused: bool):
    """LAION's front end as a ``ClapFeatureExtractor`` (humanclap makes its crops deterministic)."""
    # lazy: keeps torch/transformers out of `import humanclap.scoring.clap.laion_archs`
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=arch.num_mel_bins,
        sampling_rate=arch.sampling_rate,
        hop_length=arch.hop_length,
        max_length_s=arch.window_s,
        fft_window_size=arch.n_fft,
        frequency_min=arch.fmin,
        frequency_max=arch.fmax,
        padding="repeatpad",
        truncation="fusion" if fused else "rand_trunc",
    )
