"""The CLAP wrapper: load any transformers CLAP checkpoint, embed texts and audio, score.

CLAPScore(a, t) = max(cos(e_a, e_t), 0) with e_a, e_t the L2-normalised projections of
``ClapModel``. Works with transformers 4.4x (``get_*_features`` return tensors) and 5.x
(they return an output object whose ``pooler_output`` is the projection).
"""

from __future__ import annotations

from humanclap.errors import ModelLoadError

import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from humanclap.defaults import DEFAULT_MODEL, TEXT_MAX_LENGTH
from humanclap.scoring.audio import AudioInput, Preprocessing, clip_features, collate_features, load_audio

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")




@dataclass(frozen=True)
class ModelInfo:
    """Where a checkpoint came from; recorded in every output."""

    model_id: str
    revision: str  # hub commit hash, or "sha256:<prefix>" of a local folder's weights
    source: str  # "hub" or "local"
    preprocessing: Preprocessing

    def as_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = asdict(self.preprocessing)
        return d


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available; use --device cpu")
    return torch.device(device)


def _pooled(output) -> torch.Tensor:
    # v4 returns the projected tensor, v5 an output object carrying it as pooler_output.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised text projections (keeps the graph: usable for training)."""
    return F.normalize(_pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)).float(), dim=-1)


def audio_embeddings(model, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
    """L2-normalised audio projections (keeps the graph: usable for training)."""
    return F.normalize(_pooled(model.get_audio_features(input_features=input_features, is_longer=is_longer)).float(), dim=-1)


def _is_local(id_or_dir: str) -> bool:
    return Path(id_or_dir).exists() or not _HUB_ID.match(id_or_dir)


def _local_revision(folder: Path) -> str:
    """Content hash of a local checkpoint's config and weights (changes when they change)."""
    h = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + [folder / "config.json"]
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe, so an offline machine fails in seconds instead of minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_model_and_tokenizer(id_or_dir: str, local: bool, kwargs: dict):
    """Local folder, else the local hub cache, else the Hub (when it can be reached)."""
    from transformers import AutoTokenizer, ClapModel

    def load(kw: dict):
        return ClapModel.from_pretrained(id_or_dir, **kw), AutoTokenizer.from_pretrained(id_or_dir, **kw), kw

    if local:
        return load(kwargs)
    try:
        return load({**kwargs, "local_files_only": True})
    except OSError:
        if not _hub_reachable():
            raise OSError("no network connection to the Hub (or HF_HUB_OFFLINE is set)") from None
    return load(kwargs)


def load_components(id_or_dir: str, revision: str | None = None):
    """Load ``(ClapModel, tokenizer, feature_extractor, ModelInfo)`` from a hub id or folder."""
    from transformers import ClapFeatureExtractor

    local = _is_local(id_or_dir)
    if local and not (Path(id_or_dir) / "config.json").is_file():
        raise ModelLoadError(
            f"{id_or_dir!r} is not a CLAP checkpoint folder (no config.json there) and not a hub id "
            "like 'laion/clap-htsat-unfused'. Pass a folder written by save_pretrained or a hub id."
        )
    kwargs = {} if local else {"revision": revision}
    try:
        model, tokenizer, kwargs = _load_model_and_tokenizer(id_or_dir, local, kwargs)
    except OSError as exc:
        if local:
            raise ModelLoadError(f"could not load the checkpoint in {id_or_dir}: {exc}") from None
        raise ModelLoadError(
            f"could not load {id_or_dir!r}: it is not in the local Hugging Face cache and the Hub "
            f"could not be reached ({str(exc).splitlines()[0][:200]}). Either run once with network "
            f"access (or `huggingface-cli download {id_or_dir}` and copy the cache), or pass a local "
            "folder: --model /path/to/checkpoint (config.json, model.safetensors, tokenizer and "
            "preprocessor_config.json as written by save_pretrained)."
        ) from None
    fused = bool(model.config.audio_config.enable_fusion)
    try:
        extractor = ClapFeatureExtractor.from_pretrained(id_or_dir, **kwargs)
    except OSError:
        extractor = ClapFeatureExtractor(feature_size=model.config.audio_config.num_mel_bins,
                                         frequency_min=50, frequency_max=14000)
        log.warning("%s has no preprocessor_config.json: using LAION's extractor settings derived "
                    "from the model config (48 kHz, 10 s, %d mel bins, 50-14000 Hz, fusion=%s)",
                    id_or_dir, extractor.feature_size, fused)
    # The stock default truncation="fusion" breaks unfused models: follow the model config.
    extractor.truncation = "fusion" if fused else "rand_trunc"
    if local:
        rev = _local_revision(Path(id_or_dir))
    else:
        rev = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    info = ModelInfo(model_id=str(id_or_dir), revision=str(rev), source="local" if local else "hub",
                     preprocessing=Preprocessing.from_extractor(extractor, fused))
    return model, tokenizer, extractor, info


class CLAPScorer:
    """Deterministic CLAPScore with any LAION-family or Human-CLAP checkpoint.

    >>> scorer = CLAPScorer.from_pretrained("sarulab-speech/human-clap-wsce-mae")  # doctest: +SKIP
    >>> scorer.score(["dog.wav"], ["a dog barks"])                                 # doctest: +SKIP
    array([0.53], dtype=float32)
    """

    def __init__(self, model, tokenizer, feature_extractor, info: ModelInfo,
                 device: str | torch.device = "auto", dtype: str = "fp32"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        if dtype == "fp16" and self.device.type == "cpu":
            raise ValueError("fp16 is not supported on CPU; use --dtype bf16 or fp32")
        self.dtype = dtype
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.info = info
        self.fused = info.preprocessing.fused
        self.sampling_rate = info.preprocessing.sampling_rate

    @classmethod
    def from_pretrained(cls, id_or_dir: str = DEFAULT_MODEL, device: str = "auto",
                        dtype: str = "fp32", revision: str | None = None) -> "CLAPScorer":
        """Load from a hub id (default: the official Human-CLAP wSCE+MAE) or a local folder."""
        return cls(*load_components(id_or_dir, revision), device=device, dtype=dtype)

    # -- preprocessing -------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize with LAION's truncation at 77 tokens (warns when a text is cut).

        Padding is to the longest text of the call, not to 77: the attention mask hides pad
        tokens, so the embedding is the same (to float rounding) and short texts cost far less.
        """
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"empty text {text!r}: every text needs at least one word")
        enc = self.tokenizer(list(texts), padding="longest", truncation=True,
                             max_length=TEXT_MAX_LENGTH, return_tensors="pt")
        full = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        for text, ids in zip(texts, full):
            if len(ids) > TEXT_MAX_LENGTH:
                log.warning("text cut to %d tokens (%d given): %.60s...", TEXT_MAX_LENGTH, len(ids), text)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """Model features of one mono waveform already at the model's rate."""
        return clip_features(waveform, self.feature_extractor, self.fused)

    def load(self, item: AudioInput) -> np.ndarray:
        """Decode, downmix and resample one audio item to the model's rate."""
        return load_audio(item, self.sampling_rate)

    # -- embeddings ----------------------------------------------------------------
    def _autocast(self):
        if self.dtype == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised text embeddings, ``(len(texts), dim)`` float32.

        Texts are batched in order of token length (little padding). The result depends only
        on the list passed in, so the same list always gives the same bits.
        """
        texts = list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]] if texts else []
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            enc = {k: v.to(self.device) for k, v in self.tokenize([texts[j] for j in idx]).items()}
            with self._autocast():
                out[idx] = text_embeddings(self.model, **enc).float().cpu().numpy()
        return out

    @torch.no_grad()
    def embed_features(self, items: list[tuple[np.ndarray, bool]], pad_to: int | None = None) -> np.ndarray:
        """Audio embeddings from precomputed per-clip features (one forward pass).

        With ``pad_to``, the batch is filled up to that size by repeating its last clip:
        every forward then has the same shape, which makes a clip's embedding bit-identical
        wherever it sits in the run (resumed runs reproduce uninterrupted ones byte for byte).
        """
        n = len(items)
        batch = {k: v.to(self.device) for k, v in collate_features(_pad_batch(items, pad_to or n)).items()}
        with self._autocast():
            return audio_embeddings(self.model, **batch)[:n].float().cpu().numpy()

    def embed_audio(self, audio: Sequence[AudioInput], batch_size: int = 8) -> np.ndarray:
        """L2-normalised audio embeddings, ``(len(audio), dim)`` float32; raises AudioError."""
        out = []
        for i in range(0, len(audio), batch_size):
            feats = [self.features(self.load(item)) for item in audio[i : i + batch_size]]
            out.append(torch.from_numpy(self.embed_features(feats, pad_to=batch_size)))
        return _stack(out, self.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    # -- scores --------------------------------------------------------------------
    def cosine(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Cosine between each audio item and its text (paired, same length)."""
        if len(audio) != len(text):
            raise ValueError(f"audio and text must pair up: {len(audio)} audio items vs {len(text)} texts")
        unique_texts = list(dict.fromkeys(text))
        t = self.embed_text(unique_texts)
        index = {s: i for i, s in enumerate(unique_texts)}
        a = self.embed_audio(audio, batch_size=batch_size)
        return np.einsum("nd,nd->n", a, t[[index[s] for s in text]]).astype(np.float32)

    def score(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """CLAPScore = max(cosine, 0) for each (audio, text) pair, as a float32 array."""
        return clapscore(self.cosine(audio, text, batch_size=batch_size))


def clapscore(cosine):
    """CLAPScore from cosines: negative similarities count as no relevance (0).

    A torch tensor stays a tensor (same dtype and device, in the autograd graph: training
    regresses on it); anything else becomes a float32 numpy array."""
    if isinstance(cosine, torch.Tensor):
        return cosine.clamp(min=0)
    return np.maximum(np.asarray(cosine, dtype=np.float32), 0.0)


def _pad_batch(items: list, size: int) -> list:
    """Fill a short last batch up to ``size`` by repeating its last item (fixed shapes)."""
    return items + [items[-1]] * (size - len(items)) if items else items


def _stack(parts: list[torch.Tensor], dim: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(parts).float().numpy()


def quiet_transformers() -> None:
    """Silence transformers' own progress bars and info logs (CLI output stays readable)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    except Exception:  # older/newer transformers without these helpers
        pass
