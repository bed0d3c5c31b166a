"""Microsoft's CLAP (the ``msclap`` package) as a :class:`~humanclap.scoring.protocol.Scorer`.

``msclap`` is never a dependency (it pins transformers<5, numpy<2, torchaudio): it is
imported only when an :class:`MSClapScorer` is built, and ``reproduce`` reports its row
as "not run: pip install msclap" when it cannot be imported.

What ``msclap``'s own ``get_audio_embeddings(paths, resample=True)`` does, and what each
stage here does instead:

* read with torchaudio, resample with ``torchaudio.transforms.Resample`` to the model's
  rate -> :meth:`MSClapScorer.load`: our decoder (the same samples for wav/flac), mean of
  the channels (msclap concatenates the channels of a stereo file end to end, which is
  no waveform), then the same torchaudio resampler;
* a clip shorter than the window (``duration`` seconds) is tiled and cut, a longer one
  cropped at ``random.randrange`` -> :meth:`MSClapScorer.features`: the same tiling; the
  crop start is drawn from ``random.Random(seed)`` for each clip, so a clip always gets
  the same crop (the one msclap draws after ``random.seed(seed)``);
* ``audio_encoder(batch)[0]`` -> :meth:`MSClapScorer.embed_features`, then L2-normalised.

Texts go through msclap's public ``get_text_embeddings``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from humanclap.errors import ModelLoadError
from humanclap.scoring.audio import AudioInput, Preprocessing, decode_mono
from humanclap.scoring.protocol import ModelInfo

LONG_CLIP_RULE = "msclap-random-crop-seeded"


class MSClapScorer:
    """MS CLAP behind the Scorer protocol; scores are max(cos, 0) like every other model.

    ``wrapper``: an already built ``msclap.CLAP`` (or an object with the same ``args``,
    ``clap.audio_encoder`` and ``get_text_embeddings``); by default one is built for
    ``version``, which downloads ``microsoft/msclap`` from the Hub on first use.
    """

    def __init__(self, device: str = "auto", seed: int = 0, version: str = "2023",
                 wrapper: Any = None):
        import torch

        from humanclap.scoring.scorer import resolve_device

        wanted = resolve_device(device)
        if wrapper is None:
            wrapper = _build_wrapper(version, use_cuda=wanted.type == "cuda")
        self.msclap = wrapper
        # msclap places its model on CUDA or leaves it on the CPU; inputs follow the model.
        self.device = next(wrapper.clap.parameters(), torch.empty(0)).device
        self.dtype = "fp32"
        self.seed = seed
        a = wrapper.args
        self.sampling_rate = int(a.sampling_rate)
        self.window = int(a.duration * a.sampling_rate)
        self._dim = int(a.d_proj)
        pre = Preprocessing(self.sampling_rate, self.window, False, int(a.mel_bins), int(a.hop_size),
                            int(a.window_size), float(a.fmin), float(a.fmax), LONG_CLIP_RULE)
        self.info = ModelInfo(f"microsoft/msclap:{version}", _package_version(), "hub", pre)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def load(self, item: AudioInput) -> np.ndarray:
        """Finite float32 mono waveform at msclap's rate (torchaudio's resampler, as msclap)."""
        mono, rate = decode_mono(item)
        if rate != self.sampling_rate:
            import torch
            import torchaudio.transforms as T  # a dependency of msclap itself

            mono = T.Resample(rate, self.sampling_rate)(torch.from_numpy(mono.astype(np.float32))).numpy()
        return np.ascontiguousarray(mono, dtype=np.float32)

    def load_features(self, item: AudioInput) -> tuple[np.ndarray, bool]:
        """``features(load(item))``: msclap's input uses the whole decoded clip."""
        return self.features(self.load(item))

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """The ``window``-sample input of one clip and whether the clip was longer."""
        n, window = int(waveform.shape[0]), self.window
        if n <= window:  # msclap: tile the clip, then cut to the window
            return np.tile(waveform, math.ceil(window / n))[:window].astype(np.float32), False
        start = random.Random(self.seed).randrange(n - window)
        return waveform[start : start + window].astype(np.float32), True

    def embed_features(self, items: list[tuple[np.ndarray, bool]], pad_to: int | None = None) -> np.ndarray:
        """L2-normalised audio embeddings of ``features`` results (fixed batch shape with
        ``pad_to``: the last clip is repeated, its copies dropped)."""
        import torch
        import torch.nn.functional as F

        n = len(items)
        clips = [f for f, _ in items]
        clips += clips[-1:] * ((pad_to or n) - n)
        with torch.no_grad():
            batch = torch.from_numpy(np.stack(clips)).to(self.device)
            emb = self.msclap.clap.audio_encoder(batch)[0]
            return F.normalize(emb.float(), dim=-1)[:n].cpu().numpy()

    def embed_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised text embeddings through msclap's ``get_text_embeddings``."""
        import torch
        import torch.nn.functional as F

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with torch.no_grad():
            parts = [self.msclap.get_text_embeddings(texts[i : i + batch_size]).float().cpu()
                     for i in range(0, len(texts), batch_size)]
            return F.normalize(torch.cat(parts), dim=-1).numpy()


def _build_wrapper(version: str, use_cuda: bool):
    try:
        from msclap import CLAP
    except ImportError as exc:
        raise ModelLoadError(f"MS CLAP needs the msclap package, which could not be imported "
                             f"({exc}); pip install msclap (in its own environment: it pins "
                             "transformers<5)") from None
    try:
        return CLAP(version=version, use_cuda=use_cuda)
    except Exception as exc:  # download, checkpoint or tokenizer failures
        raise ModelLoadError(f"could not load MS CLAP {version} with msclap "
                             f"({type(exc).__name__}: {str(exc)[:200]}); it downloads "
                             "microsoft/msclap from the Hub on first use") from None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"msclap {version('msclap')}"
    except PackageNotFoundError:
        return "msclap (not installed: a wrapper was passed in)"
