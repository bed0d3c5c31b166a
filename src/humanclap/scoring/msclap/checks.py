"""Checks of an MS CLAP config before a network is built from it.

A ``config.json`` (or the ``msclap_config`` of a ``.pth``) with a zero, negative, non-integer or
absurd size or rate used to load and then fail on every clip (``sampling_rate: 0`` blamed each
file as unreadable audio; ``window_size: 0`` a ZeroDivisionError, exit 3), or to allocate
terabytes while building the model (``d_proj: 10**9``). The same kind of checks as the LAION
extractor's (:func:`humanclap.scoring.checkpoint.check_extractor`), with upper bounds far above
any real model, make such a config one :class:`ModelLoadError` at load.
"""

from __future__ import annotations

import inspect
from typing import Any

from humanclap.errors import ModelLoadError
from humanclap.scoring.msclap.htsat import HTSATSwinTransformer

# field: (smallest, largest). Rates up to 192 kHz (the highest common audio rate); embedding
# sizes up to 8192 (the releases use 768-2048; a d_proj x d_proj matrix of 8192 is 256 MB).
INT_FIELDS = {
    "sampling_rate": (1000, 192_000),
    "mel_sampling_rate": (1000, 192_000),
    "window_size": (16, 65_536),
    "hop_size": (1, 65_536),
    "mel_bins": (1, 1024),
    "classes_num": (1, 100_000),
    "out_emb": (1, 8192),
    "transformer_embed_dim": (1, 8192),
    "d_proj": (1, 8192),
    "text_len": (1, 8192),
}
MAX_DURATION_S = 300  # a window of minutes: msclap's releases take 5 s and 7 s
# transformers text-config fields that size tensors (GPT-2 and BERT spellings).
TEXT_INT_FIELDS = {
    "vocab_size": (1, 1_000_000),
    "n_embd": (1, 8192),
    "hidden_size": (1, 8192),
    "n_layer": (1, 256),
    "num_hidden_layers": (1, 256),
    "n_head": (1, 256),
    "num_attention_heads": (1, 256),
    "n_positions": (1, 65_536),
    "max_position_embeddings": (1, 65_536),
    "n_inner": (1, 65_536),
    "intermediate_size": (1, 65_536),
}
HTSAT_INT_FIELDS = {
    "spec_size": (1, 4096),
    "patch_size": (1, 4096),
    "patch_stride": (1, 4096),
    "embed_dim": (1, 4096),
    "window": (1, 4096),
}
HTSAT_DEFAULTS = {name: p.default for name, p in inspect.signature(HTSATSwinTransformer).parameters.items()}
CHOICES = {"version": ("2022", "2023"), "audio_encoder": ("Cnn14", "HTSAT"), "text_model": ("gpt2", "bert")}
WHAT_TO_DO = (
    "restore the config from the original checkpoint (MSClapModel.save_pretrained writes it), "
    "or use msclap-2022 / msclap-2023"
)


def check_config(cfg: Any, source: str) -> None:
    """Refuse (``ModelLoadError``, naming ``source`` and the field) an MS CLAP config that cannot
    give a working model: every size and rate a positive integer in range, the band inside the
    filterbank's Nyquist, the input window long enough for one FFT and short enough for the tower."""
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            _refuse(source, name, getattr(cfg, name), f"one of {', '.join(choices)}")
    for name, (low, high) in INT_FIELDS.items():
        _int_in(source, name, getattr(cfg, name), low, high)
    duration = cfg.duration
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= MAX_DURATION_S:
        _refuse(source, "duration", duration, f"a number of seconds in (0, {MAX_DURATION_S}]")
    if cfg.window_samples < cfg.window_size or cfg.hop_size > cfg.window_samples:
        _refuse(
            source,
            "duration",
            duration,
            f"a window of at least one FFT ({cfg.window_size} samples) and "
            f"one hop ({cfg.hop_size}) at {cfg.sampling_rate} Hz",
        )
    if cfg.mel_bins > cfg.window_size // 2 + 1:
        _refuse(source, "mel_bins", cfg.mel_bins, f"at most the {cfg.window_size // 2 + 1} FFT bins of window_size")
    _check_band(cfg, source)
    _check_text(cfg, source)
    if cfg.audio_encoder == "Cnn14":
        _check_cnn14(cfg, source)
    else:
        _check_htsat(cfg, source)


def _refuse(source: str, name: str, value: Any, expected: str) -> None:
    raise ModelLoadError(f"{source}: {name} is {value!r}, not {expected}; {WHAT_TO_DO}")


def _int_in(source: str, name: str, value: Any, low: int, high: int) -> None:
    # bool is an int to Python, and 16000.0 is not an int: neither sizes a tensor
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _refuse(source, name, value, f"an integer in {low}..{high}")


def _check_band(cfg: Any, source: str) -> None:
    low, high = cfg.fmin, cfg.fmax
    nyquist = cfg.mel_sampling_rate / 2
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not 0 <= low < high <= nyquist:
        name = "fmin" if not (isinstance(low, (int, float)) and 0 <= low) else "fmax"
        _refuse(
            source,
            name,
            low if name == "fmin" else high,
            f"a band 0 <= fmin < fmax <= {nyquist:g} Hz (half of mel_sampling_rate; fmin/fmax {low!r}/{high!r})",
        )


def _check_text(cfg: Any, source: str) -> None:
    if not isinstance(cfg.text_config, dict):
        _refuse(source, "text_config", cfg.text_config, "a JSON object of GPT2Config / BertConfig fields")
    for name, (low, high) in TEXT_INT_FIELDS.items():
        if name in cfg.text_config:
            _int_in(source, f"text_config.{name}", cfg.text_config[name], low, high)
    gpt2 = cfg.text_model == "gpt2"
    hidden = cfg.text_config.get("n_embd" if gpt2 else "hidden_size", 768)
    positions = cfg.text_config.get("n_positions" if gpt2 else "max_position_embeddings", 1024 if gpt2 else 512)
    if cfg.transformer_embed_dim != hidden:
        _refuse(source, "transformer_embed_dim", cfg.transformer_embed_dim, f"the text tower's width {hidden}")
    if cfg.text_len > positions:
        _refuse(source, "text_len", cfg.text_len, f"at most the text tower's {positions} positions")


def _check_cnn14(cfg: Any, source: str) -> None:
    channels = cfg.cnn14_channels
    if not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= 8:
        _refuse(source, "cnn14_channels", channels, "a list of 1 to 8 channel counts")
    for i, value in enumerate(channels):
        _int_in(source, f"cnn14_channels[{i}]", value, 1, 8192)
    halvings = 2 ** (len(channels) - 1)  # every block but the last pools time and mels by 2
    if cfg.mel_bins < halvings or cfg.window_samples // cfg.hop_size + 1 < halvings:
        _refuse(
            source,
            "mel_bins",
            cfg.mel_bins,
            f"at least {halvings} mels and frames for {len(channels)} CNN14 blocks (each but the last halves them)",
        )


def _check_htsat(cfg: Any, source: str) -> None:
    if not isinstance(cfg.htsat, dict):
        _refuse(source, "htsat", cfg.htsat, "a JSON object of HTS-AT settings")
    settings = {**HTSAT_DEFAULTS, **cfg.htsat}
    for name, (low, high) in HTSAT_INT_FIELDS.items():
        if name in cfg.htsat:
            _int_in(source, f"htsat.{name}", cfg.htsat[name], low, high)
    depths, heads = settings["depths"], settings["num_heads"]
    for name, values in (("depths", depths), ("num_heads", heads)):
        if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= 8:
            _refuse(source, f"htsat.{name}", values, "a list of 1 to 8 integers")
        for i, value in enumerate(values):
            _int_in(source, f"htsat.{name}[{i}]", value, 1, 256)
    if len(heads) < len(depths):
        _refuse(source, "htsat.num_heads", heads, f"one head count per stage ({len(depths)} stages)")
    spec, mels = settings["spec_size"], cfg.mel_bins
    # HTS-AT folds spec_size // mel_bins strips of the log-mel into a spec_size square: more
    # mels or frames than that fail on every clip (reshape_wav2img)
    frames = cfg.window_samples // cfg.hop_size + 1
    if mels > spec or frames > spec * (spec // mels):
        _refuse(
            source,
            "duration",
            cfg.duration,
            f"a window the HTS-AT tower takes: {frames} frames of {mels} "
            f"mels, at most {spec * max(spec // mels, 1)} frames of at most {spec} mels (htsat.spec_size)",
        )
    width = settings["embed_dim"] * 2 ** (len(depths) - 1)
    if cfg.out_emb != width:
        _refuse(
            source,
            "out_emb",
            cfg.out_emb,
            f"the HTS-AT tower's output width {width} (htsat.embed_dim x 2^(stages - 1))",
        )
