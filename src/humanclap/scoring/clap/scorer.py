"""The CLAP wrapper: load any transformers CLAP checkpoint, embed texts and audio, score.

CLAPScore(a, t) = max(cos(e_a, e_t), 0) with e_a, e_t the L2-normalised projections of
``ClapModel``. Works with transformers 4.4x (``get_*_features`` return tensors) and 5.x
(they return an output object whose ``pooler_output`` is the projection).

Exactly reproducible embeddings: on CPU a forward pass of ``(1, ...)`` and of ``(8, ...)``
give the same clip different last float32 bits, and so do texts padded to different
lengths. So every forward pass has one of a few fixed shapes, whatever the caller's batch
size and whatever else is being embedded: a text is padded to the smallest of
``TEXT_BUCKETS`` (16, 24, 32, 48, 77 tokens) that holds it and embedded with texts of its bucket,
``TEXT_CHUNK`` at a time, clips ``AUDIO_CHUNK`` at a time (fused models: long and
short clips in separate chunks, since the fusion branch runs on the long ones only), a
short last chunk filled with copies of its last item. What the bits still depend on (the
device, torch, the CPU's vector instructions, these shapes) is :attr:`CLAPScorer.numerics`,
part of every cache key.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from humanclap.defaults import DEFAULT_MODEL, MAX_TEXT_CHARS, TEXT_MAX_LENGTH
from humanclap.errors import ModelLoadError, UsageError
from humanclap.scoring.audio import (
    AudioInput,
    Preprocessing,
    clip_features,
    collate_features,
    load_audio,
    load_clip_features,
)
from humanclap.scoring.checkpoint import (
    EXTRACTOR_FILE,
    check_extractor,
    check_float_weights,
    check_loaded_clap,
    check_loading_info,
    check_local_folder,
    check_model_files,
    check_tokenizer,
    local_revision,
    pickle_refusal,
    safetensors_dtypes,
)

# clapscore and ModelInfo are defined in their own modules; imported here so that
# ``humanclap.scoring.scorer.clapscore`` / ``.ModelInfo`` keep working.
from humanclap.scoring.clapscore import clapscore

# the device/dtype helpers moved to scoring.device; imported here so that the old names
# (humanclap.scoring.scorer.resolve_device, ...) keep working (see scoring/aliases.py).
from humanclap.scoring.device import DTYPES, autocast, check_dtype, device_and_dtype, device_numerics, resolve_device  # noqa: F401  (old names, see above)
from humanclap.scoring.engine import features_of
from humanclap.scoring.hub import hub_reachable, is_local_path
from humanclap.scoring.inputs import audio_list, paired_lists, text_list
from humanclap.scoring.protocol import AUDIO_CHUNK, ModelInfo

__all__ = [
    "AUDIO_CHUNK",
    "CLAPScorer",
    "DTYPES",
    "ModelInfo",
    "ModelLoadError",
    "TEXT_BUCKETS",
    "TEXT_CHUNK",
    "audio_embeddings",
    "clapscore",
    "load_components",
    "resolve_device",
    "text_embeddings",
]

log = logging.getLogger(__name__)

# Texts per text forward pass, each padded to its length bucket: a few fixed shapes.
TEXT_CHUNK = 16
# Token lengths a text is padded to: the smallest that holds it. Captions are mostly 10-25
# tokens, and a text forward costs about its padded length (a 16-token pass takes a fifth
# of a 77-token one on CPU), so padding every text to 77 wasted most of the work.
# A text's bucket depends on the text alone, so its bits still do not depend on others.
TEXT_BUCKETS = (16, 24, 32, 48, TEXT_MAX_LENGTH)


def _pooled(output) -> torch.Tensor:
    # v4 returns the projected tensor, v5 an output object carrying it as pooler_output.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised text projections (keeps the graph: usable for training)."""
    return F.normalize(
        _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)).float(), dim=-1
    )


def audio_embeddings(model, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
    """L2-normalised audio projections (keeps the graph: usable for training)."""
    return F.normalize(
        _pooled(model.get_audio_features(input_features=input_features, is_longer=is_longer)).float(), dim=-1
    )


def _load_model_and_tokenizer(id_or_dir: str, local: bool, kwargs: dict):
    """Local folder, else the local hub cache, else the Hub (when it can be reached)."""
    # lazy: keeps transformers out of `import humanclap.scoring.clap.scorer`
    from transformers import AutoTokenizer, ClapModel

    def load(kw: dict):
        # output_loading_info: transformers initialises missing weights at random with only
        # a log line; the info lets check_loading_info refuse such a model. Mismatched sizes
        # are let through to it too: it names each tensor and both shapes (transformers'
        # own error points to a report in a log the CLI keeps quiet).
        model, info = ClapModel.from_pretrained(id_or_dir, output_loading_info=True, ignore_mismatched_sizes=True, **kw)
        check_loading_info(info, str(id_or_dir), model, Path(id_or_dir) if local else None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(id_or_dir, **kw)
        except OSError:
            raise
        except Exception as exc:  # tokenizers' parse errors are bare Exceptions
            raise ModelLoadError(
                f"{id_or_dir}: the tokenizer files cannot be loaded ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); restore them from the original "
                "checkpoint (tokenizer.save_pretrained)"
            ) from None
        return model, tokenizer, kw

    if local:
        return load(kwargs)
    try:
        return load({**kwargs, "local_files_only": True})
    except OSError:
        if not hub_reachable():
            raise OSError("no network connection to the Hub (or HF_HUB_OFFLINE is set)") from None
    return load(kwargs)


def _check_weight_dtypes_before_loading(folder: Path) -> None:
    """Integer/bool tensors stored where the model has float weights, refused before
    ``from_pretrained``: transformers 4.x fails on them with its own RuntimeError, 5.x casts
    them silently. The model's own dtypes come from a weightless (meta-device) instance."""
    from transformers import ClapConfig, ClapModel

    try:
        config = ClapConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            state = ClapModel(config).state_dict()
    except Exception:  # a config that cannot build a model: the loading path below says why
        return
    check_float_weights(safetensors_dtypes(folder), state, str(folder))


def _unpickling_cause(exc: BaseException) -> pickle.UnpicklingError | None:
    """The ``UnpicklingError`` somewhere in ``exc``'s chain of causes, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, pickle.UnpicklingError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_components(id_or_dir: str, revision: str | None = None):
    """Load ``(ClapModel, tokenizer, feature_extractor, ModelInfo)`` from a hub id or folder.

    All or nothing: an incomplete or corrupt checkpoint is a :class:`ModelLoadError` naming
    the file (see :mod:`humanclap.scoring.checkpoint`), never a model with random weights
    or an empty tokenizer. Without ``preprocessor_config.json`` the extractor is derived
    from the model config with LAION's settings, and a warning says so."""
    # lazy: keeps transformers out of `import humanclap.scoring.clap.scorer`
    from transformers import ClapFeatureExtractor

    local = is_local_path(id_or_dir)
    if local and Path(id_or_dir).is_dir():
        check_model_files(Path(id_or_dir))  # a FIFO config.json would block the is_file below
    if local and not (Path(id_or_dir) / "config.json").is_file():
        raise ModelLoadError(
            f"{id_or_dir!r} is not a CLAP checkpoint folder (no config.json there) and not a hub id "
            "like 'laion/clap-htsat-unfused'. Pass a folder written by save_pretrained or a hub id."
        )
    if local:
        check_local_folder(Path(id_or_dir))
        _check_weight_dtypes_before_loading(Path(id_or_dir))
    kwargs = {} if local else {"revision": revision}
    try:
        model, tokenizer, kwargs = _load_model_and_tokenizer(id_or_dir, local, kwargs)
    except ModelLoadError:
        raise
    except OSError as exc:
        unpickling = _unpickling_cause(exc)  # transformers 4.x wraps weights_only's refusal
        if unpickling is not None:
            raise pickle_refusal(id_or_dir, unpickling) from None
        if local:
            raise ModelLoadError(f"could not load the checkpoint in {id_or_dir}: {exc}") from None
        raise ModelLoadError(
            f"could not load {id_or_dir!r}: it is not in the local Hugging Face cache and the Hub "
            f"could not be reached ({str(exc).splitlines()[0][:200]}). Either run once with network "
            f"access (or `huggingface-cli download {id_or_dir}` and copy the cache), or pass a local "
            "folder: --model /path/to/checkpoint (config.json, model.safetensors, tokenizer and "
            "preprocessor_config.json as written by save_pretrained)."
        ) from None
    except pickle.UnpicklingError as exc:  # pytorch_model.bin with pickled objects: weights_only refused it
        raise pickle_refusal(id_or_dir, exc) from None
    except Exception as exc:  # safetensors' SafetensorError, ...
        raise ModelLoadError(
            f"could not load the checkpoint {id_or_dir}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}; the config and the weights must "
            "come from the same, complete checkpoint"
        ) from None
    check_tokenizer(tokenizer, str(id_or_dir))
    check_loaded_clap(model, tokenizer, str(id_or_dir), Path(id_or_dir) if local else None)
    fused = bool(model.config.audio_config.enable_fusion)
    if local and not (Path(id_or_dir) / EXTRACTOR_FILE).exists():
        extractor = None
    else:
        try:
            extractor = ClapFeatureExtractor.from_pretrained(id_or_dir, **kwargs)
        except (OSError, TypeError, ValueError) as exc:
            # TypeError/ValueError: a value of the wrong type, e.g. "sampling_rate": "16k"
            if local or not isinstance(exc, OSError):  # present but unusable: never replaced
                raise ModelLoadError(f"{Path(id_or_dir) / EXTRACTOR_FILE}: cannot be used ({exc})") from None
            extractor = None  # a hub repo without one (LAION's converted checkpoints)
    extractor_found = extractor is not None
    if extractor is None:
        extractor = ClapFeatureExtractor(
            feature_size=model.config.audio_config.num_mel_bins, frequency_min=50, frequency_max=14000
        )
        log.warning(
            "%s has no preprocessor_config.json: using LAION's extractor settings derived "
            "from the model config (48 kHz, 10 s, %d mel bins, 50-14000 Hz, fusion=%s)",
            id_or_dir,
            extractor.feature_size,
            fused,
        )
    # A derived extractor is LAION's defaults: checked for sane numbers, not for fitting a
    # non-LAION-size tower (the warning above says where the settings came from).
    check_extractor(extractor, str(id_or_dir), model.config.audio_config if extractor_found else None)
    # The stock default truncation="fusion" breaks unfused models: follow the model config.
    extractor.truncation = "fusion" if fused else "rand_trunc"
    if local:
        rev = local_revision(Path(id_or_dir))
    else:
        rev = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    info = ModelInfo(
        model_id=str(id_or_dir),
        revision=str(rev),
        source="local" if local else "hub",
        preprocessing=Preprocessing.from_extractor(extractor, fused),
    )
    return model, tokenizer, extractor, info


class CLAPScorer:
    """Deterministic CLAPScore with any LAION-family or Human-CLAP checkpoint.

    >>> scorer = CLAPScorer.from_pretrained("sarulab-speech/human-clap-wsce-mae")  # doctest: +SKIP
    >>> scorer.score(["dog.wav"], ["a dog barks"])                                 # doctest: +SKIP
    array([0.53], dtype=float32)
    """

    def __init__(
        self,
        model,
        tokenizer,
        feature_extractor,
        info: ModelInfo,
        device: str | torch.device = "auto",
        dtype: str = "fp32",
    ):
        self.device = device_and_dtype(device, dtype)
        self.dtype = dtype
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.info = info
        self.fused = info.preprocessing.fused
        self.sampling_rate = info.preprocessing.sampling_rate

    @classmethod
    def from_pretrained(
        cls, id_or_dir: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "fp32", revision: str | None = None
    ) -> "CLAPScorer":
        """Load from a hub id (default: the official Human-CLAP wSCE+MAE) or a local folder."""
        return cls(*load_components(id_or_dir, revision), device=device, dtype=dtype)

    # -- preprocessing -------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], fixed_length: bool | int = False) -> dict[str, torch.Tensor]:
        """Tokenize with LAION's truncation at 77 tokens (warns when a text is cut).

        ``fixed_length``: pad every text to that many tokens (``True``: 77), one shape for
        the whole call (bits independent of the other texts). Otherwise pad to the longest
        text of the call (training: the mask hides pads, equal to float rounding and far
        cheaper).
        """
        texts = text_list(texts)
        counts = self.token_counts(texts)  # validates the texts; warns about the cut ones
        if fixed_length is False:
            return self._encode(texts, None)
        length = TEXT_MAX_LENGTH if fixed_length is True else int(fixed_length)
        if max(counts, default=0) > length:
            raise ValueError(f"a text of {max(counts)} tokens does not fit a {length}-token pad")
        return self._encode(texts, length)

    def _encode(self, texts: Sequence[str], pad_to: int | None) -> dict[str, torch.Tensor]:
        """Token ids and mask of checked texts, padded to ``pad_to`` (None: the longest)."""
        texts = [text[:MAX_TEXT_CHARS] for text in texts]  # beyond 77 tokens anyway
        enc = self.tokenizer(
            list(texts),
            padding="longest" if pad_to is None else "max_length",
            truncation=True,
            max_length=pad_to or TEXT_MAX_LENGTH,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text has after truncation to 77 (warns when a text is cut);
        raises ValueError for an empty text."""
        texts = text_list(texts)
        for text in texts:
            if not text.strip():
                raise UsageError(f"empty text {text!r}: every text needs at least one word")
        texts = [text[:MAX_TEXT_CHARS] for text in texts]  # beyond 77 tokens anyway
        if not texts:
            return []
        full = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        for text, ids in zip(texts, full):
            if len(ids) > TEXT_MAX_LENGTH:
                log.warning("text cut to %d tokens (%d given): %.60s...", TEXT_MAX_LENGTH, len(ids), text)
        return [min(len(ids), TEXT_MAX_LENGTH) for ids in full]

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """Model features of one mono waveform already at the model's rate."""
        return clip_features(waveform, self.feature_extractor, self.fused)

    def load(self, item: AudioInput) -> np.ndarray:
        """Decode, downmix and resample one audio item to the model's rate."""
        return load_audio(item, self.sampling_rate)

    def load_features(self, item: AudioInput) -> tuple[np.ndarray, bool]:
        """``features(load(item))``, reading no more of a file than the model uses."""
        return load_clip_features(item, self.feature_extractor, self.fused)

    # -- embeddings ----------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.dtype)

    @property
    def numerics(self) -> dict:
        """What an embedding's bits depend on besides the model, its preprocessing and the
        dtype (all part of every cache key). Measured on CPU: not the batch size, the
        neighbours or the intra-op thread count (1 vs 2 threads: same bits) once shapes are
        fixed; but a different device, torch build or CPU instruction set may round
        differently, so each is named here."""
        return {
            "device": device_numerics(self.device),
            "torch": torch.__version__,
            "audio_chunk": AUDIO_CHUNK,
            "text_chunk": TEXT_CHUNK,
            "text_length": TEXT_MAX_LENGTH,
            "text_buckets": list(TEXT_BUCKETS),
        }

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """L2-normalised text embeddings, ``(len(texts), dim)`` float32.

        Every forward pass is ``(TEXT_CHUNK, bucket)`` tokens, ``bucket`` the smallest of
        ``TEXT_BUCKETS`` that holds each of its texts, so a text's embedding has the same
        bits alone or among any other texts. ``batch_size`` is accepted for compatibility
        and ignored: it must not change bits. ``texts``: a list (any iterable) of strings;
        one bare string is a UsageError (pass ``["dog"]``); ``[]`` gives ``(0, dim)``.
        """
        texts = text_list(texts)
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        buckets = [next(b for b in TEXT_BUCKETS if n <= b) for n in self.token_counts(texts)]
        for bucket in TEXT_BUCKETS:
            members = [i for i, b in enumerate(buckets) if b == bucket]
            for k in range(0, len(members), TEXT_CHUNK):
                idx = members[k : k + TEXT_CHUNK]
                enc = self._encode(_pad_batch([texts[i] for i in idx], TEXT_CHUNK), bucket)
                enc = {name: v.to(self.device) for name, v in enc.items()}
                with self._autocast():
                    out[idx] = text_embeddings(self.model, **enc)[: len(idx)].float().cpu().numpy()
        return out

    @torch.no_grad()
    def embed_features(self, items: list[tuple[np.ndarray, bool]], pad_to: int | None = None) -> np.ndarray:
        """Audio embeddings from precomputed per-clip features, ``AUDIO_CHUNK`` clips per pass.

        Every forward has the same shape (a short chunk is filled with copies of its last
        clip), and a fused model gets long and short clips in separate chunks (its fusion
        branch runs on the batch's long clips only, so their number would change the
        bits). A clip's embedding is thus bit-identical wherever it sits in any run.
        ``pad_to`` is accepted for the protocol and ignored: the shape is always fixed.
        """
        out = np.zeros((len(items), self.embedding_dim), dtype=np.float32)
        groups = [[i for i, (_, longer) in enumerate(items) if bool(longer) == flag] for flag in (False, True)]
        if not self.fused:
            groups = [list(range(len(items)))]
        for group in groups:
            for k in range(0, len(group), AUDIO_CHUNK):
                idx = group[k : k + AUDIO_CHUNK]
                batch = collate_features(_pad_batch([items[i] for i in idx], AUDIO_CHUNK))
                batch = {name: v.to(self.device) for name, v in batch.items()}
                with self._autocast():
                    out[idx] = audio_embeddings(self.model, **batch)[: len(idx)].float().cpu().numpy()
        return out

    def embed_audio(self, audio: Sequence[AudioInput], batch_size: int = 8) -> np.ndarray:
        """L2-normalised audio embeddings, ``(len(audio), dim)`` float32; raises AudioError.

        ``batch_size`` items are decoded at a time (memory); the forward passes, and so the
        bits, are those of :meth:`embed_features` whatever it is. ``audio``: a list (any
        iterable) of items (``scoring.inputs``); one bare item is a UsageError."""
        audio = audio_list(audio)
        out = []
        for i in range(0, len(audio), batch_size):
            feats = [features_of(self, item) for item in audio[i : i + batch_size]]
            out.append(torch.from_numpy(self.embed_features(feats)))
        return _stack(out, self.embedding_dim)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    # -- scores --------------------------------------------------------------------
    def cosine(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Cosine between each audio item and its text (paired lists of the same length; a
        bare string for ``text`` is a :class:`UsageError`)."""
        audio, text = paired_lists(audio, text)
        unique_texts = list(dict.fromkeys(text))
        t = self.embed_text(unique_texts)
        index = {s: i for i, s in enumerate(unique_texts)}
        a = self.embed_audio(audio, batch_size=batch_size)
        return np.einsum("nd,nd->n", a, t[[index[s] for s in text]]).astype(np.float32)

    def score(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """CLAPScore = max(cosine, 0) for each (audio, text) pair, as a float32 array."""
        return clapscore(self.cosine(audio, text, batch_size=batch_size))


def _pad_batch(items: list, size: int) -> list:
    """Fill a short last batch up to ``size`` by repeating its last item (fixed shapes)."""
    return items + [items[-1]] * (size - len(items)) if items else items


def _stack(parts: list[torch.Tensor], dim: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(parts).float().numpy()
