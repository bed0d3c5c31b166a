"""PE-Audio's model input of one clip: deterministic, and the same alone or among others.

``PeAudioFeatureExtractor`` takes the raw waveform at the model's rate (48 kHz for Meta's
checkpoints), reflect-pads each clip to a multiple of ``hop_length`` (1920 samples, one
40 ms frame), zero-pads a batch to its longest clip and returns a ``padding_mask``. The model
takes any length. What humanclap does:

* **length rule**: the whole clip, up to ``MAX_SECONDS`` (30 s); a longer clip is cut to its
  **centre** 30 s (memory and time stay bounded: a forward costs about the square of the
  frame count). A long wav/flac is read only there (``read_centre_window``);
* the clip is reflect-padded to a multiple of ``hop_length`` exactly as the extractor does,
  with a padding mask of ones over all of it (the extractor marks the reflected samples as
  real too);
* **no padding beside other clips**: each clip is one forward pass of its own length (see
  :mod:`.numerics`). Zero-padding a short clip to a longer batch-mate is not bit-neutral
  (measured on the tiny test model: 8.2e-8, and ~7e-7 was seen on real sizes), and neither
  is the batch size (8 copies vs 1: 8.9e-8), so a pass holds one clip.

The per-clip input is one float32 array of shape ``(2, n)``: row 0 the padded waveform,
row 1 its padding mask (all ones). Keeping the mask in the array lets training stack clips
of equal length and zero-pad unequal ones with their masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humanclap.errors import AudioError
from humanclap.scoring.audio import AudioInput, Preprocessing, check_waveform, describe, load_audio
from humanclap.scoring.audio_file import check_audio_path, open_audio, read_centre_window

MAX_SECONDS = 30
LONG_CLIP_RULE = f"whole clip up to {MAX_SECONDS} s, else its centre {MAX_SECONDS} s"


def max_samples(sampling_rate: int, hop_length: int) -> int:
    """The longest input in samples: ``MAX_SECONDS``, rounded down to whole frames."""
    return max(hop_length, (MAX_SECONDS * int(sampling_rate)) // hop_length * hop_length)


def preprocessing(sampling_rate: int, hop_length: int) -> Preprocessing:
    """The :class:`Preprocessing` record of a PE-Audio scorer (cache keys, outputs, resume)."""
    return Preprocessing(
        sampling_rate=int(sampling_rate),
        window_samples=max_samples(sampling_rate, hop_length),
        fused=False,
        feature_size=1,
        hop_length=int(hop_length),
        fft_window_size=0,
        frequency_min=0.0,
        frequency_max=float(sampling_rate) / 2,
        long_clip_rule=LONG_CLIP_RULE,
    )


def reflect_pad(waveform: np.ndarray, hop_length: int) -> np.ndarray:
    """``PeAudioFeatureExtractor._reflect_pad``: reflect-pad to a multiple of ``hop_length``."""
    rest = len(waveform) % hop_length
    if rest == 0:
        return waveform
    return np.pad(waveform, (0, hop_length - rest), "reflect")


def clip_input(waveform: np.ndarray, sampling_rate: int, hop_length: int) -> tuple[np.ndarray, bool]:
    """The ``(2, n)`` model input of one mono waveform at the model's rate, and whether the
    clip was longer than ``MAX_SECONDS`` (then its centre was kept)."""
    waveform = np.asarray(waveform)
    check_waveform(waveform)
    cap = max_samples(sampling_rate, hop_length)
    longer = waveform.shape[0] > cap
    if longer:
        start = (waveform.shape[0] - cap) // 2
        waveform = waveform[start : start + cap]
    wave = reflect_pad(np.ascontiguousarray(waveform, dtype=np.float32), hop_length)
    return np.stack([wave, np.ones_like(wave)]), bool(longer)


def load_clip_input(item: AudioInput, sampling_rate: int, hop_length: int) -> tuple[np.ndarray, bool]:
    """``clip_input(load_audio(item))``, reading only the centre ``MAX_SECONDS`` of a long wav/flac."""
    name = describe(item)
    waveform = None
    if isinstance(item, (str, Path)):
        with open_audio(check_audio_path(item)) as f:
            centre = read_centre_window(f, name, sampling_rate, max_samples(sampling_rate, hop_length))
        if centre is not None:
            waveform, longer = centre[0], True
    if waveform is None:
        waveform, longer = load_audio(item, sampling_rate), False
    try:
        feats, cut = clip_input(waveform, sampling_rate, hop_length)
    except AudioError as exc:
        raise AudioError(f"{name}: {exc}") from None
    return feats, bool(longer or cut)
