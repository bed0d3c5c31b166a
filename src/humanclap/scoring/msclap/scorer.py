"""MS CLAP behind the :class:`~humanclap.scoring.protocol.Scorer` protocol, deterministic.

What msclap's ``get_audio_embeddings`` / ``get_text_embeddings`` do, and what happens here:

* audio: torchaudio decode + torchaudio resampler to 44.1 kHz -> our decoder, mean of the
  channels (msclap concatenates the channels of a stereo file end to end), soxr "HQ" to
  44.1 kHz like every humanclap model (a different resampler: embeddings of resampled
  input differ slightly from msclap's; on identical 44.1 kHz arrays they agree to float
  rounding, see ``parity/``);
* a clip no longer than the window (5 s in 2022, 7 s in 2023) is tiled
  ``ceil(window / n)`` times and cut to the window, as msclap does; a longer clip is cropped
  at its **centre** (msclap draws a random start, so its scores of long clips change from
  run to run);
* text: msclap's tokenization (GPT-2: ``text + ' <|endoftext|>'``, padded with '!' to 77
  tokens; BERT: ``[CLS] text [SEP]`` padded to 100) and pooling (see ``model.py``); a text
  longer than that is not cut (msclap does not cut it either) up to the text tower's
  position limit, where it is cut with a warning;
* embeddings are the projections, L2-normalised; CLAPScore = max(cos, 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from humanclap.defaults import MAX_TEXT_CHARS
from humanclap.errors import AudioError, ModelLoadError, UsageError
from humanclap.scoring.audio import AudioInput, Preprocessing, check_waveform, describe, load_audio
from humanclap.scoring.audio_file import check_audio_path, open_audio, read_centre_window
from humanclap.scoring.checkpoint import check_vocab_fits
from humanclap.scoring.device import autocast, device_and_dtype, device_numerics
from humanclap.scoring.engine import features_of
from humanclap.scoring.inputs import audio_list, text_list
from humanclap.scoring.msclap.model import CONFIG_NAME, WEIGHTS_NAME, MSClapModel, is_msclap_folder
from humanclap.scoring.msclap.weights import (
    HUB_FILES,
    HUB_REPO,
    SPECS,
    file_revision,
    hub_checkpoint,
    load_pth,
    load_tokenizer,
)
from humanclap.scoring.protocol import AUDIO_CHUNK, ModelInfo

log = logging.getLogger(__name__)

LONG_CLIP_RULE = "centre-crop"
TEXT_BATCH = 8  # texts per text forward pass (a fixed shape: see embed_text)


class MSClapScorer:
    """Deterministic CLAPScore with MS CLAP 2022 or 2023.

    >>> scorer = MSClapScorer.from_pretrained("msclap-2023")            # doctest: +SKIP
    >>> scorer.embed_text(["a dog barks"]).shape                         # doctest: +SKIP
    (1, 1024)
    """

    def __init__(
        self,
        model: MSClapModel,
        tokenizer: Any,
        info: ModelInfo,
        device: str | torch.device = "auto",
        dtype: str = "fp32",
    ):
        self.device = device_and_dtype(device, dtype)  # UsageError for a bad dtype, as for every family
        self.dtype = dtype
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.info = info
        cfg = model.config
        self.sampling_rate = int(cfg.sampling_rate)
        self.window = cfg.window_samples
        self.text_len = int(cfg.text_len)
        text_cfg = model.caption_encoder.base.config
        self.max_tokens = int(getattr(text_cfg, "n_positions", None) or text_cfg.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        spec: str | Path = "msclap-2023",
        device: str = "auto",
        dtype: str = "fp32",
        version: str | None = None,
        tokenizer: Any = None,
    ) -> "MSClapScorer":
        """``msclap-2022`` / ``msclap-2023`` (the Hub, or its local cache), an msclap ``.pth``
        (release from ``version`` or its keys; tokenizer files beside it), or a folder written
        by :meth:`MSClapModel.save_pretrained` with its tokenizer."""
        spec = str(spec)
        if spec in SPECS:
            if version is not None and version != SPECS[spec]:
                raise ModelLoadError(f"--model {spec} is MS CLAP {SPECS[spec]}; it cannot be loaded as {version}")
            path = hub_checkpoint(SPECS[spec])
            model = load_pth(path, SPECS[spec])
            info_id, source, near = f"{HUB_REPO}/{HUB_FILES[SPECS[spec]]}", "hub", None
        elif is_msclap_folder(spec):
            model = MSClapModel.from_pretrained(spec)
            if version is not None and version != model.config.version:
                raise ModelLoadError(f"{spec} holds MS CLAP {model.config.version}, not {version}")
            path, info_id, source, near = Path(spec) / WEIGHTS_NAME, spec, "local", Path(spec)
        elif spec.endswith(".pth"):
            path = Path(spec)
            model = load_pth(path, version)
            info_id, source, near = spec, "local", path.parent
        else:
            raise ModelLoadError(
                f"{spec!r} is not an MS CLAP model: pass msclap-2022, msclap-2023, an msclap "
                f".pth or a folder with an MS CLAP {CONFIG_NAME}"
            )
        tok = load_tokenizer(model.config, near, tokenizer)
        rows = int(model.caption_encoder.base.get_input_embeddings().num_embeddings)
        check_vocab_fits(tok, rows, spec, f"config text_config.vocab_size = {rows}")
        cfg = model.config
        pre = Preprocessing(
            cfg.sampling_rate,
            cfg.window_samples,
            False,
            cfg.mel_bins,
            cfg.hop_size,
            cfg.window_size,
            float(cfg.fmin),
            float(cfg.fmax),
            LONG_CLIP_RULE,
        )
        info = ModelInfo(info_id, model_revision(path, tok), source, pre)
        return cls(model, tok, info, device=device, dtype=dtype)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.d_proj)

    @property
    def numerics(self) -> dict:
        """What an embedding's bits depend on besides the model, its preprocessing and the
        dtype (part of every cache key): the device, torch, the fixed forward shapes, and
        whether the STFT runs as an FFT or as msclap's convolutions (``frontend.STFT``)."""

        stft = self.model.audio_encoder.base
        stft = getattr(stft, "htsat", stft).spectrogram_extractor.stft
        return {
            "device": device_numerics(self.device),
            "torch": torch.__version__,
            "audio_chunk": AUDIO_CHUNK,
            "text_chunk": TEXT_BATCH,
            "stft": "fft" if stft.uses_fft() else "conv",
        }

    # -- audio ---------------------------------------------------------------------
    def load(self, item: AudioInput) -> np.ndarray:
        """Decode, downmix and resample (soxr) one audio item to 44.1 kHz."""
        return load_audio(item, self.sampling_rate)

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """The window-long model input of one clip and whether the clip was longer."""
        waveform = np.asarray(waveform)
        check_waveform(waveform)
        n, window = int(waveform.shape[0]), self.window
        if n <= window:  # msclap: tile, then cut to the window
            return np.tile(waveform, math.ceil(window / n))[:window].astype(np.float32), False
        start = (n - window) // 2  # centre crop (msclap: a random start)
        return np.ascontiguousarray(waveform[start : start + window], dtype=np.float32), True

    def load_features(self, item: AudioInput) -> tuple[np.ndarray, bool]:
        """``features(load(item))``, reading only the centre window of a long wav/flac."""
        if isinstance(item, (str, Path)):
            with open_audio(check_audio_path(item)) as f:
                centre = read_centre_window(f, describe(item), self.sampling_rate, self.window)
            if centre is not None:
                try:
                    check_waveform(centre[0])
                except AudioError as exc:
                    raise AudioError(f"{describe(item)}: {exc}") from None
                return np.ascontiguousarray(centre[0], dtype=np.float32), True
        return self.features(self.load(item))

    def _autocast(self):
        return autocast(self.device, self.dtype)

    @torch.no_grad()
    def embed_features(self, items: list[tuple[np.ndarray, bool]], pad_to: int | None = None) -> np.ndarray:
        """L2-normalised audio embeddings of ``features`` results; with ``pad_to`` the batch is
        filled to that size with copies of its last clip (fixed shapes: same bits anywhere)."""
        n = len(items)
        if n == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        clips = [f for f, _ in items]
        clips += clips[-1:] * ((pad_to or n) - n)
        batch = torch.from_numpy(np.stack(clips)).to(self.device)
        with self._autocast():
            emb = self.model.get_audio_features(input_features=batch)
        return F.normalize(emb.float(), dim=-1)[:n].cpu().numpy()

    def embed_audio(self, audio: Sequence[AudioInput], batch_size: int = 8) -> np.ndarray:
        """L2-normalised audio embeddings ``(len(audio), dim)``; raises AudioError. ``audio`` is
        a list (any iterable) of items; one bare item is a UsageError (pass ``[item]``)."""

        audio = audio_list(audio)
        parts = [
            self.embed_features([features_of(self, a) for a in audio[i : i + batch_size]], pad_to=batch_size)
            for i in range(0, len(audio), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.embedding_dim), dtype=np.float32)

    # -- text ----------------------------------------------------------------------
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """msclap's token ids of each text, before padding."""
        texts = text_list(texts)
        for text in texts:
            if not text.strip():
                raise UsageError(f"empty text {text!r}: every text needs at least one word")
        texts = [t[:MAX_TEXT_CHARS] for t in texts]  # beyond the token limit anyway
        if self.model.config.text_model == "gpt2":
            texts = [t + " <|endoftext|>" for t in texts]
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        out = []
        for text, seq in zip(texts, ids):
            if len(seq) > self.max_tokens:
                log.warning("text cut to %d tokens (%d given): %.60s...", self.max_tokens, len(seq), text)
                seq = seq[: self.max_tokens]
            out.append(list(seq))
        return out

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` padded (right, pad id 0) to the text length
        (77 or 100), or to the longest text of the call when one is longer."""
        ids = self.token_ids(texts)
        length = max([self.text_len] + [len(s) for s in ids])
        input_ids = torch.zeros((len(ids), length), dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int = TEXT_BATCH) -> np.ndarray:
        """L2-normalised text embeddings ``(len(texts), dim)``, bit-identical whatever other
        texts are passed: a batch holds texts of one padded length and has a fixed size.
        ``texts`` is a list (any iterable); one bare string is a UsageError (pass ``["dog"]``)."""
        texts = text_list(texts)
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        if not texts:
            return out
        padded = [max(self.text_len, len(s)) for s in self.token_ids(texts)]
        order = sorted(range(len(texts)), key=lambda i: (padded[i], i))
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and stop - start < batch_size and padded[order[stop]] == padded[order[start]]:
                stop += 1
            idx = order[start:stop]
            # filled up to batch_size with copies of the last text: every forward has the
            # same shape, so a text's embedding has the same bits whatever else is embedded
            # (a small batch_size keeps that padding cheap: GPT-2 costs per row)
            batch = [texts[j] for j in idx] + [texts[idx[-1]]] * (batch_size - len(idx))
            enc = {k: v.to(self.device) for k, v in self.tokenize(batch).items()}
            with self._autocast():
                emb = self.model.get_text_features(**enc)
            out[idx] = F.normalize(emb.float(), dim=-1)[: len(idx)].cpu().numpy()
            start = stop
        return out


def model_revision(weights: Path, tokenizer: Any) -> str:
    """The revision of an MS CLAP scorer: its weights file *and* its tokenizer (from files
    beside a ``.pth``, a folder, the Hub cache or an object), so that a changed tokenizer
    changes every cache key and is refused by ``--resume`` and ``merge``."""
    h = hashlib.sha256(file_revision(weights).encode() + b"\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: vocab, merges, normalizer, pre-tokenizer, ...
        h.update(backend.to_str().encode("utf-8"))
    else:  # a slow tokenizer: its vocabulary in id order
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode("utf-8"))
    specials = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    h.update(json.dumps(specials, sort_keys=True).encode("utf-8"))
    return "sha256:" + h.hexdigest()[:16]
