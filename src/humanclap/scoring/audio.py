"""Audio loading and deterministic CLAP preprocessing.

Pipeline for every clip: read (soundfile) -> mono (mean of channels) -> resample to the
model's rate (soxr, "HQ") -> log-mel features with the checkpoint's own
``ClapFeatureExtractor`` -> deterministic length handling:

* shorter than the model window (10 s for LAION CLAP): repeat-padded as LAION does
  (the clip is tiled ``floor(window / len)`` times, then zero-padded to the window);
* longer, unfused model: the **centre** ``window`` samples are kept (the stock extractor
  would take a random crop);
* longer, fused model: the fusion input is the whole-clip mel shrunk to the window plus
  three window-length chunks taken at the *middle* of the front, middle and back thirds
  of the possible start positions (the stock extractor draws them at random);
  ``is_longer`` is True exactly for clips longer than the window (the stock extractor
  marks a random clip of the batch as longer when none is, which makes scores depend on
  the batch).

Each clip is featurised on its own, so a clip's features never depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr

from humanclap.errors import AudioError

# An audio item is a file path or an ``(array, sample_rate)`` pair; arrays are
# ``(samples,)`` or ``(samples, channels)`` like soundfile returns them.
AudioInput = Union[str, Path, "tuple[np.ndarray, int]"]


def describe(item: AudioInput) -> str:
    """Short human-readable name of an audio item for messages."""
    if isinstance(item, (str, Path)):
        return str(item)
    return "<in-memory array>"


def read_audio(item: AudioInput) -> tuple[np.ndarray, int]:
    """Read an audio item as float32 ``(samples, channels)`` and its sample rate."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise AudioError(f"{path}: file not found (check the path or --audio-root)")
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
            raise AudioError(f"{path}: unreadable audio ({exc}); expected wav/flac/ogg") from None
        return data, int(rate)
    try:
        data, rate = item
    except (TypeError, ValueError):
        raise AudioError(
            f"audio items must be paths or (array, sample_rate) tuples, got {type(item).__name__}"
        ) from None
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise AudioError(f"{describe(item)}: array must be (samples,) or (samples, channels)")
    return data, int(rate)


def decode_mono(item: AudioInput) -> tuple[np.ndarray, int]:
    """Decode an audio item to a finite float64 mono waveform (mean of the channels) at
    its own sample rate. Raises ``AudioError`` for missing, unreadable or empty files and
    for NaN/inf samples."""
    data, rate = read_audio(item)
    name = describe(item)
    if data.shape[0] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if rate <= 0:
        raise AudioError(f"{name}: invalid sample rate {rate}")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or inf samples; fix or re-export the file")
    return data.mean(axis=1, dtype=np.float64), rate


def load_audio(item: AudioInput, target_rate: int) -> np.ndarray:
    """Load an audio item as a finite float32 mono waveform at ``target_rate``
    (:func:`decode_mono`, then soxr's "HQ" resampler). Raises ``AudioError``."""
    mono, rate = decode_mono(item)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_bytes_hash(item: AudioInput) -> str:
    """Content hash of an audio item (file bytes or array bytes + rate), for caching."""
    import hashlib

    h = hashlib.sha256()
    if isinstance(item, (str, Path)):
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        data, rate = item
        arr = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
        h.update(str((arr.shape, int(rate))).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Preprocessing:
    """Everything that decides the features of a clip (also part of the cache key)."""

    sampling_rate: int
    window_samples: int
    fused: bool
    feature_size: int
    hop_length: int
    fft_window_size: int
    frequency_min: float
    frequency_max: float
    long_clip_rule: str  # "centre-crop" or "fusion-middle-chunks"

    @classmethod
    def from_extractor(cls, extractor, fused: bool) -> "Preprocessing":
        return cls(
            sampling_rate=int(extractor.sampling_rate),
            window_samples=int(extractor.nb_max_samples),
            fused=fused,
            feature_size=int(extractor.feature_size),
            hop_length=int(extractor.hop_length),
            fft_window_size=int(extractor.fft_window_size),
            frequency_min=float(extractor.frequency_min),
            frequency_max=float(extractor.frequency_max),
            long_clip_rule="fusion-middle-chunks" if fused else "centre-crop",
        )


def _deterministic_fusion_mel(extractor, waveform: np.ndarray) -> np.ndarray:
    """Fusion input for a clip longer than the window, without randomness."""
    import torch

    mel = extractor._np_extract_fbank_features(waveform.astype(np.float64), extractor.mel_filters)
    chunk_frames = extractor.nb_max_samples // extractor.hop_length + 1
    total_frames = mel.shape[0]
    if total_frames <= chunk_frames:
        return np.stack([mel[:chunk_frames]] * 4, axis=0)
    ranges = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    starts = [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]
    chunks = [mel[s : s + chunk_frames] for s in starts]
    shrink = torch.nn.functional.interpolate(
        torch.from_numpy(mel)[None, None], size=[chunk_frames, mel.shape[1]],
        mode="bilinear", align_corners=False,
    )[0, 0].numpy()
    return np.stack([shrink, *chunks], axis=0)


def clip_features(waveform: np.ndarray, extractor, fused: bool) -> tuple[np.ndarray, bool]:
    """Features and ``is_longer`` flag of one mono waveform at the extractor's rate."""
    window = int(extractor.nb_max_samples)
    longer = waveform.shape[0] > window
    if longer and fused:
        return _deterministic_fusion_mel(extractor, waveform).astype(np.float32), True
    if longer:
        start = (waveform.shape[0] - window) // 2
        waveform = waveform[start : start + window]
    feats = extractor(
        waveform,
        sampling_rate=extractor.sampling_rate,
        truncation="fusion" if fused else "rand_trunc",
        padding="repeatpad",
        return_tensors="np",
    )["input_features"][0]
    return feats.astype(np.float32), longer


def collate_features(items: list[tuple[np.ndarray, bool]]) -> dict:
    """Stack per-clip features into model inputs (``input_features``, ``is_longer`` tensors)."""
    import torch

    feats = torch.from_numpy(np.stack([f for f, _ in items]))
    is_longer = torch.tensor([[bool(longer)] for _, longer in items])
    return {"input_features": feats, "is_longer": is_longer}
