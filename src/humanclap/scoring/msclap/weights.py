"""Where MS CLAP weights and tokenizers come from: msclap ``.pth`` files, the Hub, folders.

* An msclap checkpoint (``CLAP_weights_2022.pth`` / ``CLAP_weights_2023.pth`` of
  ``microsoft/msclap``) is ``{"model": state_dict}``; it is read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs) and
  loaded with a strict key check. The release is inferred from the keys (HTS-AT keys:
  2023, CNN14 keys: 2022) unless given. A ``.pth`` humanclap writes (:func:`save_pth`)
  also carries its config under ``"msclap_config"`` (tiny test models).
* Three buffers that older transformers versions stored with the text tower (GPT-2's
  causal-mask ``attn.bias`` / ``attn.masked_bias``, BERT's ``embeddings.position_ids``) are
  not weights; they are dropped before the key check, every other key must match.
* The tokenizer is msclap's (``gpt2`` / ``bert-base-uncased``): taken from the folder of the
  checkpoint when tokenizer files are there, else from the Hugging Face cache, else the Hub.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download

from humanclap.errors import ModelLoadError
from humanclap.scoring.checkpoint import check_model_files, check_regular_file, pickle_refusal
from humanclap.scoring.hub import hub_reachable
from humanclap.scoring.msclap.model import MSClapConfig, MSClapModel, empty_model

HUB_REPO = "microsoft/msclap"
HUB_FILES = {"2022": "CLAP_weights_2022.pth", "2023": "CLAP_weights_2023.pth"}
SPECS = {"msclap-2022": "2022", "msclap-2023": "2023"}  # --model names of the hub releases
LEGACY_TEXT_BUFFERS = re.compile(
    r"^caption_encoder\.base\.(h\.\d+\.attn\.(bias|masked_bias)|embeddings\.position_ids)$"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")
# Every file AutoTokenizer may open in a tokenizer folder (checked for FIFOs and devices first).
TOKENIZER_READS = (*TOKENIZER_FILES, "merges.txt", "special_tokens_map.json", "added_tokens.json")


def file_revision(path: Path) -> str:
    """Content hash of a weights file (the cache key changes when the file does)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def read_pth(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict of an msclap ``.pth`` (legacy text buffers dropped) and the config a
    humanclap-written file carries (None for msclap's own files)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # not torch.save's format at all
            raise ModelLoadError(
                f"{path}: not a readable PyTorch checkpoint (no torch.save archive); pass an "
                "msclap CLAP_weights_2022.pth / CLAP_weights_2023.pth"
            ) from None
        raise pickle_refusal(path, exc) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: not a readable PyTorch checkpoint ({str(exc)[:200]}); pass an msclap "
            "CLAP_weights_2022.pth / CLAP_weights_2023.pth"
        ) from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise ModelLoadError(f"{path}: expected msclap's layout {{'model': state_dict}} of named tensors")
    config = obj.get("msclap_config") if isinstance(obj.get("msclap_config"), dict) else None
    return {k: v for k, v in state.items() if not LEGACY_TEXT_BUFFERS.match(k)}, config


def infer_version(state: dict[str, Any]) -> str | None:
    """``"2023"`` for HTS-AT keys, ``"2022"`` for CNN14 keys, None when neither is there."""
    if any(k.startswith("audio_encoder.base.htsat.") for k in state):
        return "2023"
    if any(k.startswith("audio_encoder.base.conv_block1.") for k in state):
        return "2022"
    return None


def load_pth(path: str | Path, version: str | None = None) -> MSClapModel:
    """An :class:`MSClapModel` from an msclap ``.pth`` (release inferred from the keys when
    ``version`` is None; a given version must agree with them)."""
    path = Path(path)
    check_regular_file(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such checkpoint file; pass an msclap .pth (e.g. CLAP_weights_2023.pth)")
    state, saved = read_pth(path)
    inferred = infer_version(state)
    if version is not None and version not in SPECS.values():
        raise ModelLoadError(f"unknown MS CLAP version {version!r}; the releases are 2022 and 2023")
    if version is not None and inferred is not None and version != inferred:
        raise ModelLoadError(
            f"{path} holds MS CLAP {inferred} weights ({'HTS-AT' if inferred == '2023' else 'CNN14'} "
            f"audio tower) but version {version} was asked for; drop --msclap-version or pass {inferred}"
        )
    version = version or inferred
    if saved is not None:
        config = MSClapConfig.from_dict(saved, str(path))
    elif version is None:
        raise ModelLoadError(
            f"{path}: cannot tell the MS CLAP release from its keys (no HTS-AT or CNN14 audio "
            "tower found); pass --msclap-version 2022 or 2023"
        )
    else:
        config = MSClapConfig.release(version)
    model = empty_model(config, str(path))
    model.load_checked(state, str(path))
    return model.eval()


def save_pth(model: MSClapModel, path: str | Path) -> None:
    """Write ``model`` as msclap does (``{"model": state_dict}``) plus its config."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"model": state, "msclap_config": model.config.to_dict()}, str(path))


def hub_checkpoint(version: str) -> Path:
    """The release's ``.pth`` from the Hugging Face cache, else the Hub; ModelLoadError offline."""

    name = HUB_FILES[version]
    try:
        return Path(hf_hub_download(HUB_REPO, name, local_files_only=True))
    except Exception:  # not cached (the hub client raises several kinds here)
        pass
    offline = (
        f"MS CLAP {version} ({HUB_REPO}/{name}) is not in the local Hugging Face cache and the Hub cannot be reached"
    )
    how = (
        f"Download {name} from https://huggingface.co/{HUB_REPO} on a machine with network access "
        f"and pass it as --model /path/to/{name}, with msclap's tokenizer files "
        f"({MSClapConfig.release(version).tokenizer}: tokenizer.json, tokenizer_config.json, ...) "
        "in the same folder"
    )
    if not hub_reachable():
        raise ModelLoadError(f"{offline}. {how}.")
    try:
        return Path(hf_hub_download(HUB_REPO, name))
    except Exception as exc:
        raise ModelLoadError(
            f"could not download {HUB_REPO}/{name} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). {how}."
        ) from None


def has_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds tokenizer files (a FIFO or device among them is refused)."""
    check_model_files(folder, TOKENIZER_READS)
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(config: MSClapConfig, near: Path | None = None, tokenizer: Any = None):
    """msclap's tokenizer for ``config``: ``tokenizer`` (an object, folder or hub id) if given,
    else tokenizer files in ``near``, else ``config.tokenizer`` from the cache or the Hub.
    GPT-2's gets msclap's pad token '!', which must be id 0 (msclap's pooling counts ids != 0)."""
    # lazy: keeps transformers out of `import humanclap.scoring.msclap.weights`
    from transformers import AutoTokenizer

    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        tok = tokenizer
    else:
        source = (
            str(tokenizer)
            if tokenizer is not None
            else (str(near) if near is not None and has_tokenizer(near) else config.tokenizer)
        )
        tok = _auto_tokenizer(AutoTokenizer, source, config, near)
    if config.text_model == "gpt2":
        tok.add_special_tokens({"pad_token": "!"})
    if tok.pad_token_id != 0:
        raise ModelLoadError(
            f"the tokenizer pads with id {tok.pad_token_id}, but MS CLAP pools on ids != 0 "
            f"(GPT-2's '!', BERT's [PAD]); use msclap's tokenizer ({config.tokenizer})"
        )
    return tok


def _auto_tokenizer(auto, source: str, config: MSClapConfig, near: Path | None):
    if Path(source).is_dir():
        check_model_files(Path(source), TOKENIZER_READS)
        try:
            return auto.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer in {source}: {str(exc)[:200]}") from None
    try:
        return auto.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        pass
    how = (
        f"MS CLAP {config.version} needs the {source!r} tokenizer, which is not in the local Hugging Face "
        f"cache{f' (nor are tokenizer files in {near})' if near is not None else ''}"
    )
    if not hub_reachable():
        raise ModelLoadError(
            f"{how}, and the Hub cannot be reached. Put {source}'s tokenizer files (tokenizer.json, "
            "tokenizer_config.json, vocab/merges) in the checkpoint's folder, or run once online"
        )
    try:
        return auto.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{how}; downloading it failed ({str(exc).splitlines()[0][:160]})") from None
