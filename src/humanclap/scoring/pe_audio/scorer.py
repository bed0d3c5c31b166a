"""PE-Audio behind the :class:`~humanclap.scoring.protocol.Scorer` protocol, deterministic.

* Audio: one clip per forward pass at its own length (whole clip up to 30 s, else its
  centre; see :mod:`.preprocessing`), so a clip's embedding has the same bits alone or in
  any batch, and equals ``PeAudioModel`` run on that clip alone.
* Text: the checkpoint's (ModernBERT) tokenizer, cut at ``TEXT_MAX_TOKENS`` with a warning;
  each text padded to the smallest of ``TEXT_BUCKETS`` that holds it, ``TEXT_CHUNK`` texts
  per pass (a short pass filled with copies): fixed shapes, as for CLAP.
* Scores: :meth:`PeAudioScorer.score` is CLAPScore, ``max(cos, 0)`` of the heads' outputs
  (what ``score``/``evaluate`` report for every family); :meth:`PeAudioScorer.match_probability`
  is the model's own sigmoid match probability (see :mod:`.numerics`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from humanclap.defaults import MAX_TEXT_CHARS
from humanclap.scoring.audio import AudioInput, load_audio
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.device import autocast, device_and_dtype, device_numerics
from humanclap.scoring.engine import features_of
from humanclap.scoring.pe_audio import numerics
from humanclap.scoring.pe_audio.loading import load_components
from humanclap.scoring.pe_audio.preprocessing import MAX_SECONDS, clip_input, load_clip_input
from humanclap.scoring.protocol import ModelInfo

log = logging.getLogger(__name__)

# ModernBERT reads 8192 tokens; a caption is a few dozen. 512 bounds a pass and cuts only
# texts that are not captions (with a warning).
TEXT_MAX_TOKENS = 512
TEXT_BUCKETS = (16, 24, 32, 48, 64, 128, 256, TEXT_MAX_TOKENS)
TEXT_CHUNK = 16


class PeAudioScorer:
    """Deterministic CLAPScore (and match probability) with a PE-Audio checkpoint.

    >>> scorer = PeAudioScorer.from_pretrained("facebook/pe-av-large")       # doctest: +SKIP
    >>> scorer.score(["dog.wav"], ["a dog barks"])                            # doctest: +SKIP
    """

    family = "pe_audio"

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
        # Exported with a trained model. (No ``fused`` attribute: decoder worker processes,
        # which build CLAP log-mels, do not apply; decoding stays in-process.)
        self.feature_extractor = feature_extractor
        self.info = info
        self.sampling_rate = int(info.preprocessing.sampling_rate)
        self.hop_length = int(info.preprocessing.hop_length)

    @classmethod
    def from_pretrained(
        cls, spec: str, device: str = "auto", dtype: str = "fp32", revision: str | None = None
    ) -> "PeAudioScorer":
        """Load from a folder (``save_pretrained`` of model, tokenizer and extractor) or a hub id."""
        return cls(*load_components(str(spec), revision), device=device, dtype=dtype)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.audio_head.proj.out_features)

    @property
    def numerics(self) -> dict:
        """What an embedding's bits depend on besides the model, its preprocessing and the dtype."""
        return {
            "device": device_numerics(self.device),
            "torch": torch.__version__,
            "audio_pass": "one clip",
            "max_seconds": MAX_SECONDS,
            "text_chunk": TEXT_CHUNK,
            "text_length": TEXT_MAX_TOKENS,
            "text_buckets": list(TEXT_BUCKETS),
        }

    def _autocast(self):
        return autocast(self.device, self.dtype)

    # -- audio ---------------------------------------------------------------------
    def load(self, item: AudioInput) -> np.ndarray:
        """Decode, downmix and resample (soxr) one audio item to the model's rate."""
        return load_audio(item, self.sampling_rate)

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """The ``(2, n)`` model input of one clip and whether it was longer than 30 s."""
        return clip_input(waveform, self.sampling_rate, self.hop_length)

    def load_features(self, item: AudioInput) -> tuple[np.ndarray, bool]:
        """``features(load(item))``, reading only the centre 30 s of a long wav/flac."""
        return load_clip_input(item, self.sampling_rate, self.hop_length)

    @torch.no_grad()
    def audio_head_outputs(self, items: list[tuple[np.ndarray, bool]]) -> np.ndarray:
        """Unnormalised ``audio_head`` outputs of ``features`` results, one clip per pass."""
        out = np.zeros((len(items), self.embedding_dim), dtype=np.float32)
        for i, (feats, _) in enumerate(items):
            batch = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None].to(self.device)
            with self._autocast():
                out[i] = numerics.audio_heads(self.model, batch)[0].float().cpu().numpy()
        return out

    def embed_features(self, items: list[tuple[np.ndarray, bool]], pad_to: int | None = None) -> np.ndarray:
        """L2-normalised audio embeddings; ``pad_to`` is accepted for the protocol and unused
        (a pass holds one clip, so no clip is padded beside another)."""
        return _normalize(self.audio_head_outputs(items))

    def embed_audio(self, audio: Sequence[AudioInput], batch_size: int = 8) -> np.ndarray:
        """L2-normalised audio embeddings ``(len(audio), dim)``; raises AudioError."""
        return _normalize(self._audio_raw(audio))

    def _audio_raw(self, audio: Sequence[AudioInput]) -> np.ndarray:
        return self.audio_head_outputs([features_of(self, item) for item in audio])

    # -- text ----------------------------------------------------------------------
    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text after the cut at ``TEXT_MAX_TOKENS`` (warns when a text is cut);
        raises ValueError for an empty text."""
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"empty text {text!r}: every text needs at least one word")
        texts = [text[:MAX_TEXT_CHARS] for text in texts]
        full = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        for text, ids in zip(texts, full):
            if len(ids) > TEXT_MAX_TOKENS:
                log.warning("text cut to %d tokens (%d given): %.60s...", TEXT_MAX_TOKENS, len(ids), text)
        return [min(len(ids), TEXT_MAX_TOKENS) for ids in full]

    def _encode(self, texts: Sequence[str], pad_to: int | None) -> dict[str, torch.Tensor]:
        texts = [text[:MAX_TEXT_CHARS] for text in texts]
        enc = self.tokenizer(
            list(texts),
            padding="longest" if pad_to is None else "max_length",
            truncation=True,
            max_length=pad_to or TEXT_MAX_TOKENS,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask padded to the longest text of the call (training: the mask hides
        pads); scoring uses the fixed buckets of :meth:`embed_text`."""
        self.token_counts(texts)
        return self._encode(texts, None)

    @torch.no_grad()
    def text_head_outputs(self, texts: Sequence[str]) -> np.ndarray:
        """Unnormalised ``text_audio_head`` outputs, ``(TEXT_CHUNK, bucket)`` tokens per pass."""
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        buckets = [next(b for b in TEXT_BUCKETS if n <= b) for n in self.token_counts(texts)]
        for bucket in TEXT_BUCKETS:
            members = [i for i, b in enumerate(buckets) if b == bucket]
            for k in range(0, len(members), TEXT_CHUNK):
                idx = members[k : k + TEXT_CHUNK]
                batch = [texts[i] for i in idx]
                batch += batch[-1:] * (TEXT_CHUNK - len(batch))  # fixed shape: copies of the last
                enc = {name: v.to(self.device) for name, v in self._encode(batch, bucket).items()}
                with self._autocast():
                    out[idx] = numerics.text_heads(self.model, **enc)[: len(idx)].float().cpu().numpy()
        return out

    def embed_text(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """L2-normalised text embeddings ``(len(texts), dim)``, the same bits whatever other
        texts are passed; ``batch_size`` is accepted for compatibility and ignored."""
        return _normalize(self.text_head_outputs(texts))

    # -- scores --------------------------------------------------------------------
    def _paired(self, audio: Sequence[AudioInput], text: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if len(audio) != len(text):
            raise ValueError(f"audio and text must pair up: {len(audio)} audio items vs {len(text)} texts")
        unique = list(dict.fromkeys(text))
        index = {s: i for i, s in enumerate(unique)}
        t = self.text_head_outputs(unique)
        return self._audio_raw(audio), t[[index[s] for s in text]]

    def cosine(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Cosine between each audio item and its text (paired, same length)."""
        a, t = self._paired(audio, text)
        return np.einsum("nd,nd->n", _normalize(a), _normalize(t)).astype(np.float32)

    def score(self, audio: Sequence[AudioInput], text: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """CLAPScore = max(cosine, 0) for each (audio, text) pair, as a float32 array."""
        return clapscore(self.cosine(audio, text, batch_size=batch_size))

    def match_logit(self, audio: Sequence[AudioInput], text: Sequence[str]) -> np.ndarray:
        """The model's own logit of each pair: ``scale * (a . t) + bias`` on the heads'
        unnormalised outputs, as ``PeAudioModel.forward`` computes ``logits_audio_text``."""
        a, t = self._paired(audio, text)
        logits = numerics.match_logit(self.model, torch.from_numpy(a), torch.from_numpy(t))
        return logits.numpy().astype(np.float32)

    def match_probability(self, audio: Sequence[AudioInput], text: Sequence[str]) -> np.ndarray:
        """``sigmoid(match_logit)``: the probability of a match the model was trained to give
        (a sigmoid loss), as a float32 array."""
        return torch.sigmoid(torch.from_numpy(self.match_logit(audio, text))).numpy()

    def score_both(self, audio: Sequence[AudioInput], text: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"clapscore": ..., "match_probability": ...}`` of each pair from one set of forwards."""
        a, t = self._paired(audio, text)
        cos = np.einsum("nd,nd->n", _normalize(a), _normalize(t)).astype(np.float32)
        logits = numerics.match_logit(self.model, torch.from_numpy(a), torch.from_numpy(t))
        return {"clapscore": clapscore(cos), "match_probability": torch.sigmoid(logits).numpy()}


def _normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, as ``F.normalize`` does it (float32)."""
    return F.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), dim=-1).numpy()
