"""LAION-CLAP ``.pt`` checkpoints (the ``laion_clap`` package's format) -> transformers folders.

LAION publishes some of its best checkpoints (``630k-audioset-fusion-best.pt``, the HTSAT-base
``music_audioset_epoch_15_esc_90.14.pt``, ...) only as ``laion_clap`` training checkpoints: a
dict with ``state_dict`` whose keys may start with ``module.``. :func:`convert_laion_checkpoint`
maps every tensor onto ``transformers.ClapModel`` and writes a complete folder (config,
safetensors, preprocessor and tokenizer) that ``CLAPScorer``/``ClapModel.from_pretrained`` and
``humanclap train`` load like any hub checkpoint.

What makes it strict where transformers' own script is not: the audio config comes from the
architecture (HTSAT-base is 128 wide with 12 blocks in stage 3, not the tiny defaults), the text
config is RoBERTa's (layer-norm eps 1e-5, not ClapTextConfig's 1e-12), and every key of the
checkpoint is either mapped, or dropped for a stated reason (the torchlibrosa front end the
feature extractor replaces, the AudioSet head, training-only MLPs, buffers the model recomputes);
an unknown key, a missing key or a shape mismatch refuses the conversion and nothing is written.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from humanclap.defaults import TEXT_MAX_LENGTH
from humanclap.errors import ModelLoadError, UsageError
from humanclap.io import atomic_dir, write_json
from humanclap.outputs import MARKER, file_lock_path, output_lock

# The presets live in laion_archs; re-exported here, the one module users import.
from humanclap.scoring.clap.laion_archs import ARCHS, TEXTS, HtsatArch, TextArch, clap_config, feature_extractor
from humanclap.scoring.clap.laion_checkpoint import read_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "TEXTS",
    "ConversionReport",
    "HtsatArch",
    "TextArch",
    "clap_config",
    "convert_laion_checkpoint",
    "feature_extractor",
    "hf_to_laion",
    "infer_layout",
    "laion_to_hf",
]


# Keys of the .pt that carry nothing the transformers model uses, with the reason (reported).
_DROPPED = (
    (
        re.compile(r"audio_branch\.(spectrogram_extractor|logmel_extractor)\."),
        "torchlibrosa STFT/mel filters (the feature extractor computes the log-mel)",
    ),
    (re.compile(r"audio_branch\.(tscam_conv|head)\."), "AudioSet classification head (not in the embedding)"),
    (re.compile(r"(text|audio)_transform\."), "training-only MLP heads of LAION's loss"),
    (re.compile(r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$"), "shifted-window masks (recomputed)"),
)
# Audio-tower name fragments, LAION HTSAT <-> transformers ClapAudioEncoder, and where they
# must sit ("^" start, "$" end, "" anywhere). One table for both directions; applied in
# this order (".attention.output.dense." before its tail ".output.dense." going back).
_AUDIO_NAMES = (
    ("bn0.", "batch_norm.", "^"),
    (".norm1.", ".layernorm_before.", ""),
    (".norm2.", ".layernorm_after.", ""),
    (".attn.proj.", ".attention.output.dense.", ""),
    (".attn.relative_position_bias_table", ".attention.self.relative_position_bias_table", "$"),
    (".attn.relative_position_index", ".attention.self.relative_position_index", "$"),
    (".mlp.fc1.", ".intermediate.dense.", ""),
    (".mlp.fc2.", ".output.dense.", ""),
)


def _audio_renames(to_hf: bool) -> tuple[tuple[re.Pattern, str], ...]:
    out = []
    for laion, hf, anchor in _AUDIO_NAMES:
        src, dst = (laion, hf) if to_hf else (hf, laion)
        pattern = re.escape(src)
        pattern = "^" + pattern if anchor == "^" else pattern + anchor
        out.append((re.compile(pattern), dst))
    return tuple(out)


_AUDIO_RENAMES = _audio_renames(to_hf=True)
_AUDIO_RENAMES_BACK = _audio_renames(to_hf=False)
_PROJECTION = re.compile(r"^(text|audio)_projection\.([02])\.(weight|bias)$")
_QKV = re.compile(r"^(.*)\.attn\.qkv\.(weight|bias)$")


@dataclass
class ConversionReport:
    """What a conversion found and did: printed by the CLI and written as ``conversion.json``."""

    arch: str
    fused: bool
    text: str
    inferred: list[str] = field(default_factory=list)  # which of arch/fusion came from the weights
    tensors: int = 0
    parameters: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of keys

    def text_summary(self) -> str:
        how = f" (inferred from the weights: {', '.join(self.inferred)})" if self.inferred else ""
        drops = "; ".join(f"{n} {why}" for why, n in self.dropped.items()) or "none"
        return (
            f"converted {self.arch}, {'fused' if self.fused else 'unfused'}, text {self.text}{how}: "
            f"{self.tensors} tensors, {self.parameters / 1e6:.1f}M values; dropped keys: {drops}"
        )


# -- layout inference -----------------------------------------------------------------
def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix DistributedDataParallel training leaves on every key."""
    prefixed = [k.startswith("module.") for k in sd]
    if all(prefixed):
        return {k[len("module.") :]: v for k, v in sd.items()}
    if any(prefixed):
        raise ModelLoadError(
            "the checkpoint mixes keys with and without the 'module.' prefix "
            f"(e.g. {next(k for k in sd if k.startswith('module.'))!r}); it is not a "
            "laion_clap state dict"
        )
    return sd


def _depths(sd: dict[str, torch.Tensor]) -> tuple[int, ...]:
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = re.match(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    return tuple(len(blocks[i]) for i in sorted(blocks))


def _supported() -> str:
    return ", ".join(ARCHS)


def infer_layout(
    sd: dict[str, torch.Tensor], arch: str | None = None, fusion: bool | None = None
) -> tuple[HtsatArch, bool, list[str]]:
    """The audio architecture and fusion of a (prefix-free) laion_clap state dict.

    Given values are checked against the weights; ``None`` ones are inferred. Returns
    ``(arch, fused, names of what was inferred)``; raises ``ModelLoadError``/``UsageError``."""
    if arch is not None and arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r}; supported: {_supported()}")
    proj = sd.get("audio_branch.patch_embed.proj.weight")
    if proj is None:
        kind = "PANN (CNN)" if any(k.startswith("audio_branch.conv_block") for k in sd) else "unknown"
        raise ModelLoadError(
            f"the checkpoint's audio tower is not HTS-AT (no audio_branch.patch_embed.proj.weight; "
            f"looks {kind}); supported architectures: {_supported()}"
        )
    if (
        proj.shape[1] != 1
        or any(k.startswith("audio_branch.mel_conv1d") for k in sd)
        or any(".fusion_model.local_att2." in k for k in sd)
    ):
        raise ModelLoadError(
            "the checkpoint uses a fusion type other than LAION's released 'aff_2d' "
            "(channel_map, 1-D or iAFF fusion), which transformers' ClapModel does not implement"
        )
    has_aff = any(k.startswith("audio_branch.patch_embed.fusion_model.") for k in sd)
    if any(k.startswith("audio_branch.patch_embed.mel_conv2d.") for k in sd) and not has_aff:
        raise ModelLoadError("the checkpoint uses 'daf_2d' fusion, which transformers' ClapModel does not implement")
    inferred = []
    if fusion is None:
        fusion = has_aff
        inferred.append(f"fusion={'on' if has_aff else 'off'}")
    elif fusion != has_aff:
        raise UsageError(
            f"--{'' if fusion else 'no-'}fusion was given but the checkpoint is "
            f"{'fused (it has fusion layers)' if has_aff else 'unfused (it has no fusion layers)'}; "
            f"drop the flag or pass --{'' if has_aff else 'no-'}fusion"
        )
    found = (int(proj.shape[0]), _depths(sd))
    matches = [a for a in ARCHS.values() if (a.embed_dim, a.depths) == found]
    shape = f"embed dim {found[0]}, depths {list(found[1])}"
    if arch is None:
        if not matches:
            raise ModelLoadError(
                f"unknown HTS-AT architecture ({shape}); supported: "
                + "; ".join(f"{a.name} (embed dim {a.embed_dim}, depths {list(a.depths)})" for a in ARCHS.values())
            )
        inferred.insert(0, f"arch={matches[0].name}")
        return matches[0], fusion, inferred
    if ARCHS[arch] not in matches:
        raise UsageError(
            f"--arch {arch} does not match the checkpoint ({shape}: "
            f"{matches[0].name if matches else 'an unsupported architecture'}); "
            "drop --arch to infer it"
        )
    return ARCHS[arch], fusion, inferred


# -- key mapping ------------------------------------------------------------------------
def laion_to_hf(
    sd: dict[str, torch.Tensor], origin: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, int], list[str]]:
    """Map a prefix-free laion_clap state dict onto ``ClapModel`` names.

    Returns ``(mapped tensors, {drop reason: count}, unknown keys)``; qkv is split in three.
    ``origin``, when given, is filled with ``ClapModel`` name -> checkpoint key (for messages)."""
    out = _Traced(origin)
    dropped: dict[str, int] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        out.source = key
        reason = next((why for pattern, why in _DROPPED if pattern.match(key)), None)
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        if key in ("logit_scale_a", "logit_scale_t"):
            out[key] = value
        elif m := _PROJECTION.match(key):
            out[f"{m[1]}_projection.linear{1 if m[2] == '0' else 2}.{m[3]}"] = value
        elif key.startswith("text_branch."):
            out["text_model." + key[len("text_branch.") :]] = value
        elif key.startswith("audio_branch."):
            name = key[len("audio_branch.") :]
            if m := _QKV.match(name):
                prefix = f"audio_model.audio_encoder.{m[1]}.attention.self"
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{prefix}.{part}.{m[2]}"] = chunk
                continue
            for pattern, repl in _AUDIO_RENAMES:
                name = pattern.sub(repl, name)
            out["audio_model.audio_encoder." + name] = value
        else:
            unknown.append(key)
    return dict(out), dropped, unknown


class _Traced(dict):
    """A dict that records, for each key set, the checkpoint key being mapped (``self.source``)."""

    def __init__(self, origin: dict[str, str] | None):
        super().__init__()
        self.origin = origin if origin is not None else {}
        self.source = ""

    def __setitem__(self, key: str, value) -> None:
        self.origin[key] = self.source
        super().__setitem__(key, value)


def hf_to_laion(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`laion_to_hf` on the keys it maps (tests, and exporting back).

    Keys ``laion_to_hf`` drops (front end, AudioSet head, training MLPs) are not produced."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in ("logit_scale_a", "logit_scale_t"):
            out[key] = value
        elif m := re.match(r"^(text|audio)_projection\.linear([12])\.(weight|bias)$", key):
            out[f"{m[1]}_projection.{0 if m[2] == '1' else 2}.{m[3]}"] = value
        elif key.startswith("text_model."):
            out["text_branch." + key[len("text_model.") :]] = value
        elif key.startswith("audio_model.audio_encoder."):
            name = key[len("audio_model.audio_encoder.") :]
            if m := re.match(r"^(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", name):
                qkv.setdefault(f"audio_branch.{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = value
                continue
            for pattern, repl in _AUDIO_RENAMES_BACK:
                name = pattern.sub(repl, name)
            out["audio_branch." + name] = value
        else:
            raise ValueError(f"hf_to_laion: no LAION name for {key!r}")
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _check_front_end(sd: dict[str, torch.Tensor], arch: HtsatArch) -> None:
    """The .pt's STFT/mel filter shapes must be the front end we write (e.g. not a 1536-point window)."""
    bins = arch.n_fft // 2 + 1
    expect = {
        "audio_branch.spectrogram_extractor.stft.conv_real.weight": (bins, 1, arch.n_fft),
        "audio_branch.logmel_extractor.melW": (bins, arch.num_mel_bins),
    }
    for key, shape in expect.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise ModelLoadError(
                f"the checkpoint's front end differs from {arch.name}'s ({key} has shape "
                f"{tuple(sd[key].shape)}, expected {shape}: another FFT size or mel count, "
                f"e.g. HTSAT-tiny-win-1536); supported: {_supported()}"
            )


def _check_against_model(mapped: dict[str, torch.Tensor], config, origin: dict[str, str]) -> dict[str, torch.Tensor]:
    """Every ``ClapModel`` tensor present with its shape; fills the two derived text buffers."""
    # lazy: keeps transformers out of `import humanclap.scoring.clap.laion_convert`
    from transformers import ClapModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ClapModel(config).state_dict().items()}
    emb = "text_model.embeddings."
    n_pos = config.text_config.max_position_embeddings
    # Derived buffers older transformers saved and newer ones do not: recreate them exactly.
    mapped.setdefault(emb + "position_ids", torch.arange(n_pos).unsqueeze(0))
    mapped.setdefault(emb + "token_type_ids", torch.zeros(1, n_pos, dtype=torch.long))
    if not torch.equal(mapped[emb + "position_ids"].long(), torch.arange(n_pos).unsqueeze(0)):
        raise ModelLoadError("text_branch.embeddings.position_ids is not 0..N-1: not a RoBERTa text tower")
    missing = sorted(set(expected) - set(mapped))
    unexpected = [f"{origin.get(k, k)} (-> {k})" for k in sorted(set(mapped) - set(expected))]
    wrong = [
        f"{origin.get(k, k)} -> {k}: {tuple(mapped[k].shape)} vs {expected[k]}"
        for k in sorted(set(mapped) & set(expected))
        if tuple(mapped[k].shape) != expected[k]
    ]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (checkpoint vs model)", wrong)):
        if items:
            problems.append(f"{len(items)} {what}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
    if problems:
        raise ModelLoadError(
            "the checkpoint does not fit the ClapModel it should become (nothing was written): " + "; ".join(problems)
        )
    return {k: mapped[k] for k in expected}


def _load_tokenizer(tokenizer_dir: str | None, text: TextArch, vocab_size: int):
    # lazy: keeps transformers out of `import humanclap.scoring.clap.laion_convert`
    from transformers import AutoTokenizer

    if tokenizer_dir is not None:
        if (
            not (Path(tokenizer_dir) / "tokenizer_config.json").is_file()
            and not (Path(tokenizer_dir) / "vocab.json").is_file()
        ):
            raise UsageError(
                f"--tokenizer {tokenizer_dir}: no tokenizer files there (tokenizer_config.json "
                f"or vocab.json + merges.txt of {text.tokenizer_id})"
            )
        try:
            tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer in {tokenizer_dir}: {exc}") from None
    else:
        try:
            tok = AutoTokenizer.from_pretrained(text.tokenizer_id, local_files_only=True)
        except (OSError, ValueError):
            raise ModelLoadError(
                f"no tokenizer: {text.tokenizer_id!r} is not in the local Hugging Face cache. LAION CLAP uses "
                f"the {text.tokenizer_id} tokenizer; get it once with `huggingface-cli download "
                f"{text.tokenizer_id}` (or copy its vocab.json, merges.txt and tokenizer_config.json into a "
                "folder) and pass --tokenizer DIR"
            ) from None
    if len(tok) > vocab_size:
        raise UsageError(
            f"the tokenizer has {len(tok)} tokens but the text tower only {vocab_size} embeddings: "
            f"it is not {text.tokenizer_id}'s tokenizer"
        )
    tok.model_max_length = TEXT_MAX_LENGTH  # LAION truncates at 77 tokens
    return tok


def convert_laion_checkpoint(
    ckpt: str | Path,
    out_dir: str | Path,
    *,
    arch: str | None = None,
    fusion: bool | None = None,
    text: str = "roberta",
    tokenizer_dir: str | None = None,
) -> ConversionReport:
    """Convert a laion_clap ``.pt`` into a transformers CLAP folder at ``out_dir``.

    All checks run before anything is written; the folder appears whole or not at all
    (written beside it, then renamed). ``out_dir`` must not exist or be empty."""

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; give a new folder for the converted model")
    if text not in TEXTS:
        raise UsageError(f"unknown --text {text!r}; supported: {', '.join(TEXTS)}")
    text_arch = TEXTS[text]
    sd = _strip_module(read_state_dict(ckpt))
    audio_arch, fused, inferred = infer_layout(sd, arch, fusion)
    _check_front_end(sd, audio_arch)
    origin: dict[str, str] = {}
    mapped, dropped, unknown = laion_to_hf(sd, origin)
    if unknown:
        raise ModelLoadError(
            f"{len(unknown)} keys of the checkpoint have no place in ClapModel (nothing was "
            f"written): {', '.join(sorted(unknown)[:8])}{' ...' if len(unknown) > 8 else ''}"
        )
    config = clap_config(audio_arch, text_arch, fused)
    tensors = _check_against_model(mapped, config, origin)
    tokenizer = _load_tokenizer(tokenizer_dir, text_arch, text_arch.vocab_size)
    report = ConversionReport(
        arch=audio_arch.name,
        fused=fused,
        text=text,
        inferred=inferred,
        tensors=len(tensors),
        dropped=dropped,
        parameters=sum(v.numel() for v in tensors.values() if v.is_floating_point()),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(file_lock_path(out), str(out)), atomic_dir(out) as tmp:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # filled meanwhile
            raise UsageError(f"{out} is no longer an empty folder; give a new folder for the converted model")
        write_json(tmp / MARKER, {"command": "convert", "files": []})  # the output contract's marker
        # clone: qkv chunks are views and safetensors refuses shared or strided storage
        save_file(
            {k: v.detach().clone().contiguous() for k, v in tensors.items()},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        config.save_pretrained(tmp)
        feature_extractor(audio_arch, fused).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "conversion.json", {"source": str(Path(ckpt).name), **vars(report)})
    log.debug("%s", report.text_summary())
    return report
