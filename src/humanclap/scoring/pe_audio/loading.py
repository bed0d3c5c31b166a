"""Loading a PE-Audio checkpoint whole or not at all: model, tokenizer, feature extractor.

The same rules as the ClapModel family (:mod:`humanclap.scoring.checkpoint`): a local
folder is checked before transformers sees it (readable ``config.json`` of model type
``pe_audio``/``pe_audio_video``, weights that open, tokenizer files, the extractor config),
weights transformers would leave random are refused, and a hub id that is neither cached
nor reachable is one clear message. On transformers 4.x, which has no ``pe_audio``, any
PE-Audio spec is a :class:`~humanclap.errors.ModelLoadError` naming the version it needs.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from humanclap.errors import ModelLoadError
from humanclap.scoring.checkpoint import (
    EXTRACTOR_FILE,
    TOKENIZER_FILE_SETS,
    WEIGHT_FILES,
    check_loading_info,
    check_tokenizer,
    local_revision,
)
from humanclap.scoring.hub import hub_reachable, is_local_path
from humanclap.scoring.pe_audio.preprocessing import preprocessing
from humanclap.scoring.pe_audio.spec import MODEL_TYPES, needs_newer_transformers, pe_audio_available
from humanclap.scoring.protocol import ModelInfo

COMPLETE_FOLDER = (
    "a complete PE-Audio folder holds config.json (model_type pe_audio), model.safetensors, "
    "tokenizer.json with tokenizer_config.json, and preprocessor_config.json, as written by "
    "save_pretrained of PeAudioModel, its tokenizer and its PeAudioFeatureExtractor"
)


def check_folder(folder: Path) -> str:
    """Refuse a local folder that is not a complete, readable PE-Audio checkpoint; return its model type."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: not readable JSON ({exc}); {COMPLETE_FOLDER}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise ModelLoadError(
            f"{folder / 'config.json'}: model_type is {model_type!r}, not 'pe_audio'; {COMPLETE_FOLDER}"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"{folder}: no weights (none of {', '.join(WEIGHT_FILES)}); {COMPLETE_FOLDER}")

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # SafetensorError is a bare Exception subclass
            raise ModelLoadError(
                f"{path}: the weights file is empty, corrupt or truncated ({str(exc)[:160]}); "
                "restore it from the original checkpoint or save the model again"
            ) from None
    if not any(all((folder / f).is_file() for f in group) for group in TOKENIZER_FILE_SETS):
        raise ModelLoadError(
            f"{folder}: the tokenizer is missing (no tokenizer.json); without it every text "
            f"would get the same embedding. Copy the base model's tokenizer files "
            f"(tokenizer.save_pretrained(folder)); {COMPLETE_FOLDER}"
        )
    if not (folder / EXTRACTOR_FILE).is_file():
        raise ModelLoadError(
            f"{folder}: no {EXTRACTOR_FILE}: the sampling rate and hop length of the audio "
            f"input come from it (the model config does not say them); {COMPLETE_FOLDER}"
        )
    return str(model_type)


def check_extractor(extractor, model, source: str) -> None:
    """The extractor fits the model: mono, a positive integer rate, and the codec's hop."""
    rate, hop = getattr(extractor, "sampling_rate", None), getattr(extractor, "hop_length", None)
    codec_hop = int(model.config.audio_config.dac_config.hop_length)
    for name, value in (("sampling_rate", rate), ("hop_length", hop)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelLoadError(
                f"{source}: {EXTRACTOR_FILE}: {name} is {value!r}, not a positive integer; {COMPLETE_FOLDER}"
            )
    if hop != codec_hop or getattr(extractor, "feature_size", 1) != 1:
        raise ModelLoadError(
            f"{source}: {EXTRACTOR_FILE} does not fit the model: hop_length {hop} and "
            f"feature_size {getattr(extractor, 'feature_size', None)}, but the audio codec "
            f"downsamples by {codec_hop} and takes mono; the extractor and the model must "
            "come from the same checkpoint"
        )


def _load(spec: str, kwargs: dict, model_type: str | None):
    # lazy: keeps torch/transformers out of `import humanclap.scoring.pe_audio.loading`
    from transformers import AutoTokenizer, PeAudioFeatureExtractor, PeAudioModel

    model, info = PeAudioModel.from_pretrained(spec, output_loading_info=True, **kwargs)
    if model_type != "pe_audio":
        # a PE-AV checkpoint also holds its video tower and joint heads, which PeAudioModel
        # does not read; only missing or mismatched audio/text weights are a fault there
        info = {**info, "unexpected_keys": []}
    check_loading_info(info, spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, **kwargs)
    except OSError:
        raise
    except Exception as exc:  # tokenizers' parse errors are bare Exceptions
        raise ModelLoadError(
            f"{spec}: the tokenizer files cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); {COMPLETE_FOLDER}"
        ) from None
    try:
        extractor = PeAudioFeatureExtractor.from_pretrained(spec, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{spec}: {EXTRACTOR_FILE} cannot be used ({exc}); {COMPLETE_FOLDER}") from None
    return model, tokenizer, extractor


def load_components(spec: str, revision: str | None = None):
    """``(PeAudioModel, tokenizer, PeAudioFeatureExtractor, ModelInfo)`` from a folder or hub id;
    raises :class:`ModelLoadError` for anything that cannot be used whole."""
    if not pe_audio_available():
        raise ModelLoadError(needs_newer_transformers(spec))
    local = is_local_path(spec)
    model_type = None
    if local:
        if not (Path(spec) / "config.json").is_file():
            raise ModelLoadError(
                f"{spec!r} is not a PE-Audio checkpoint folder (no config.json there) and not "
                f"a hub id like 'facebook/pe-av-large'; {COMPLETE_FOLDER}"
            )
        model_type = check_folder(Path(spec))
    try:
        if local:
            model, tokenizer, extractor = _load(spec, {}, model_type)
        else:
            try:
                model, tokenizer, extractor = _load(spec, {"revision": revision, "local_files_only": True}, None)
            except OSError:
                if not hub_reachable():
                    raise OSError("no network connection to the Hub (or HF_HUB_OFFLINE is set)") from None
                model, tokenizer, extractor = _load(spec, {"revision": revision}, None)
    except ModelLoadError:
        raise
    except OSError as exc:
        if local:
            raise ModelLoadError(f"could not load the checkpoint in {spec}: {exc}") from None
        raise ModelLoadError(
            f"could not load {spec!r}: it is not in the local Hugging Face cache and the Hub could not be "
            f"reached ({str(exc).splitlines()[0][:200]}). Either run once with network access (or "
            f"`huggingface-cli download {spec}` and copy the cache), or pass a local folder: --model "
            f"/path/to/checkpoint ({COMPLETE_FOLDER})."
        ) from None
    except Exception as exc:  # size mismatches (RuntimeError), safetensors errors, bad configs
        raise ModelLoadError(
            f"could not load the PE-Audio checkpoint {spec}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}; the config and the weights must come from "
            "the same, complete checkpoint"
        ) from None
    check_tokenizer(tokenizer, spec)
    check_extractor(extractor, model, spec)
    if local:
        rev = local_revision(Path(spec))
    else:
        rev = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    info = ModelInfo(
        model_id=spec,
        revision=str(rev),
        source="local" if local else "hub",
        preprocessing=preprocessing(extractor.sampling_rate, extractor.hop_length),
    )
    return model, tokenizer, extractor, info
