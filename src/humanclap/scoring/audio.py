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

Hostile input is an ``AudioError`` for that item, never a crash or a NaN score: paths that
are not readable files (``audio_file.check_audio_path``), malformed ``(array, rate)``
items, clips with 0 samples at the model's rate, NaN/inf samples, samples beyond
``MAX_ABS_SAMPLE``, integer arrays of a dtype with no PCM full scale and, as a backstop, features
that come out non-finite.

Memory: :func:`load_clip_features` reads a file in blocks (``audio_file``): an unfused
model reads only the centre window of a long wav/flac; a fused one holds one mono copy at
the model's rate and computes the whole-clip mel ``MEL_CHUNK_FRAMES`` at a time. A long
unfused file is thus only checked for NaN/inf inside the window it is scored on.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import soxr

from humanclap.errors import AudioError
from humanclap.scoring.audio_file import check_audio_path, open_audio, read_centre_window, read_mono
from humanclap.scoring.clap.fbank import log_mel, window_features

# An audio item is a file path or an ``(array, sample_rate)`` pair; arrays are
# ``(samples,)`` or ``(samples, channels)`` like soundfile returns them, float in [-1, 1]
# or integer PCM (scaled by its dtype: :func:`pcm_to_float`).
AudioInput = Union[str, Path, "tuple[np.ndarray, int]"]

# Largest accepted sample magnitude. Audio is expected in [-1, 1]; float files may go a
# little over (headroom, un-clipped model output) and keep scoring as before, but +40 dB
# over full scale is never real audio: it is integer PCM stored as float (peaks up to
# 32767) or a scaling bug, whose log-mel lies far outside anything CLAP was trained on (at
# ~1e36 it even overflows to inf and the cosine becomes NaN).
MAX_ABS_SAMPLE = 100.0
# Integer PCM dtypes: (offset, full scale) as libsndfile maps them to [-1, 1); uint8 is
# unsigned 8-bit wav, centred on 128.
PCM_SCALES = {
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.uint8): (128.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2.0**31),
}
# An array with more "channels" than this is almost surely (channels, samples), transposed.
MAX_ARRAY_CHANNELS = 64
# Frames of whole-clip mel computed per call in the fusion path: bounds the extractor's
# complex spectrogram (frames x (n_fft/2 + 1)) and its temporaries to ~30 MB whatever the clip's duration.
MEL_CHUNK_FRAMES = 1024


def describe(item: AudioInput) -> str:
    """Short human-readable name of an audio item for messages."""
    if isinstance(item, (str, Path)):
        return str(item)
    return "<in-memory array>"


def _sample_rate(rate, name: str) -> int:
    """A sample rate as a positive int; anything else is an AudioError."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise AudioError(f"{name}: sample rate must be a number of Hz (e.g. 16000), got {type(rate).__name__} {rate!r}")
    if not np.isfinite(rate) or rate <= 0 or int(rate) != rate:
        raise AudioError(f"{name}: invalid sample rate {rate!r}; it must be a positive whole number of Hz")
    return int(rate)


def pcm_to_float(arr: np.ndarray, name: str) -> np.ndarray:
    """Integer PCM samples as float32 in [-1, 1), scaled by their dtype's full scale as
    soundfile scales an integer wav (int16 / 32768, int32 / 2**31, uint8: (x - 128) / 128).

    Read as raw floats, a quiet int16 clip (peaks of ~100 counts) would pass every range
    check and score as near-silence. Integer types without a PCM convention (int64, the
    dtype of a Python list of ints; uint16, ...) are refused rather than guessed."""
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    if arr.dtype in PCM_SCALES:
        offset, scale = PCM_SCALES[arr.dtype]
        # float64 first: int32 has more significant bits than float32 holds
        return ((arr.astype(np.float64) - offset) / scale).astype(np.float32)
    raise AudioError(
        f"{name}: integer samples of dtype {arr.dtype} have no defined full scale; pass "
        "int16, int32 or uint8 PCM, or samples scaled to [-1, 1] as a float32 array"
    )


def _numeric_array(data, name: str) -> np.ndarray:
    """``data`` as a real-valued numpy array (integer or float dtype); else an AudioError."""
    try:
        arr = np.asarray(data)
        if arr.dtype.kind == "O":  # a list of numbers that numpy kept as objects
            arr = arr.astype(np.float64)
        if arr.dtype.kind not in "iuf":  # bool, complex, strings, dates
            raise TypeError
        return arr
    except (TypeError, ValueError):
        kind = str(getattr(data, "dtype", type(data).__name__))
        raise AudioError(
            f"{name}: samples must be real numbers (integer PCM or float), got {kind}; pass a numeric numpy array"
        ) from None


def _array_item(item) -> tuple[np.ndarray, int]:
    """An ``(array, sample_rate)`` item checked and converted to float32 ``(samples, channels)``."""
    try:
        data, rate = item
    except (TypeError, ValueError):
        raise AudioError(
            f"audio items must be paths or (array, sample_rate) tuples, got {type(item).__name__}"
        ) from None
    name = describe(item)
    rate = _sample_rate(rate, name)
    arr = pcm_to_float(_numeric_array(data, name), name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise AudioError(f"{name}: array must be (samples,) or (samples, channels), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise AudioError(f"{name}: array has 0 channels (shape {arr.shape}); pass (samples,) or (samples, channels)")
    if arr.shape[1] > MAX_ARRAY_CHANNELS:
        raise AudioError(
            f"{name}: array of shape {arr.shape} has {arr.shape[1]} channels: it looks like "
            "(channels, samples); pass (samples, channels), e.g. array.T"
        )
    return arr, rate


def read_audio(item: AudioInput) -> tuple[np.ndarray, int]:
    """Read an audio item whole as float32 ``(samples, channels)`` and its sample rate.

    Holds every channel of the whole file: to score, use :func:`load_clip_features`.
    """
    if isinstance(item, (str, Path)):
        path = check_audio_path(item)
        with open_audio(path) as f:
            try:
                data = f.read(dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(f"{path}: unreadable audio ({exc}); expected wav/flac/ogg") from None
            return data, int(f.samplerate)
    return _array_item(item)


def _too_short(name: str, frames: int, rate: int, target_rate: int) -> AudioError:
    need = -(-rate // (2 * target_rate))  # soxr rounds frames * target / rate half up
    return AudioError(
        f"{name}: too short: {frames} samples at {rate} Hz = 0 samples at the model's rate "
        f"({target_rate} Hz); pass a clip of at least {need} samples at {rate} Hz"
    )


def _file_mono(f, name: str, target_rate: int) -> np.ndarray:
    """The whole open file as float32 mono at ``target_rate``; empty or too short: AudioError."""
    rate, frames = int(f.samplerate), f.frames
    mono = read_mono(f, name, target_rate)
    if frames == 0 or (mono.shape[0] == 0 and rate == target_rate):
        raise AudioError(f"{name}: empty audio (0 samples)")
    if mono.shape[0] == 0:
        raise _too_short(name, frames, rate, target_rate)
    return mono


def load_audio(item: AudioInput, target_rate: int) -> np.ndarray:
    """Load an audio item as a finite float32 mono waveform at ``target_rate``.

    Files are read in blocks and downmixed as they are read (one mono copy in memory).
    Raises ``AudioError`` for missing, unreadable, empty or too short items and for NaN/inf
    samples.
    """
    name = describe(item)
    if isinstance(item, (str, Path)):
        with open_audio(check_audio_path(item)) as f:
            return _file_mono(f, name, target_rate)
    data, rate = _array_item(item)
    if data.shape[0] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or inf samples; fix or re-export the file")
    mono = data.mean(axis=1, dtype=np.float64)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    if mono.shape[0] == 0:
        raise _too_short(name, data.shape[0], rate, target_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_mono(item: AudioInput) -> tuple[np.ndarray, int]:
    """An audio item as finite float32 mono at its *own* sample rate, and that rate (for
    model families that resample with their own resampler). Read in blocks like
    :func:`load_audio`; raises ``AudioError``."""
    name = describe(item)
    if isinstance(item, (str, Path)):
        with open_audio(check_audio_path(item)) as f:
            return _file_mono(f, name, int(f.samplerate)), int(f.samplerate)
    data, rate = _array_item(item)
    if data.shape[0] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or inf samples; fix or re-export the file")
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float64), dtype=np.float32), rate


def load_clip_features(item: AudioInput, extractor, fused: bool) -> tuple[np.ndarray, bool]:
    """Features and ``is_longer`` of one audio item: :func:`load_audio` + :func:`clip_features`
    with memory bounded by what the model uses.

    An unfused model reads only the centre window of a long wav/flac (plus a resampler
    margin); a fused one holds one mono copy at the model's rate. The features equal the
    whole-file path's: exactly without resampling, to soxr's float32 rounding with it.
    Every failure is an AudioError naming the item.
    """
    name, rate = describe(item), int(extractor.sampling_rate)
    longer = False
    if isinstance(item, (str, Path)):
        with open_audio(check_audio_path(item)) as f:
            centre = None if fused else read_centre_window(f, name, rate, int(extractor.nb_max_samples))
            waveform, longer = (centre[0], True) if centre is not None else (_file_mono(f, name, rate), False)
    else:
        waveform = load_audio(item, rate)
    try:
        feats, is_longer = clip_features(waveform, extractor, fused)
    except AudioError as exc:
        raise AudioError(f"{name}: {exc}") from None
    # the centre window alone is window-long: the clip it was cut from is the longer one
    return feats, bool(longer or is_longer)


def audio_bytes_hash(item: AudioInput) -> str:
    """Content hash of an audio item (file bytes or array bytes + rate), for caching."""

    h = hashlib.sha256()
    if isinstance(item, (str, Path)):
        path = check_audio_path(item)
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise AudioError(f"{path}: cannot read the file ({exc.strerror}); check it and its permissions") from None
    else:
        data, rate = item
        # integer PCM hashes as its scaled samples: the same key as the float array it equals
        arr = np.ascontiguousarray(pcm_to_float(_numeric_array(data, describe(item)), describe(item)))
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


def whole_clip_mel(extractor, waveform: np.ndarray) -> np.ndarray:
    """The extractor's fusion log-mel ``(frames, mels)`` of a whole clip, ``MEL_CHUNK_FRAMES`` at a time.

    The stock call builds the complex spectrogram of the whole clip (1.4 GB for 10 minutes
    at 48 kHz); here each call covers a run of frames plus enough samples on each side that
    no kept frame touches a segment edge, so every frame sees exactly the samples (and, at
    the clip's own ends, the reflect padding) of the one-call result.
    """
    hop, half = int(extractor.hop_length), int(extractor.fft_window_size) // 2
    n = waveform.shape[0]
    total = 1 + n // hop  # frames of the centred STFT
    if total <= MEL_CHUNK_FRAMES:
        return log_mel(extractor, waveform.astype(np.float64), extractor.mel_filters)
    context = -(-half // hop)  # frames whose window reaches back over a segment start
    out = None
    for f0 in range(0, total, MEL_CHUNK_FRAMES):
        f1 = min(total, f0 + MEL_CHUNK_FRAMES)
        first = max(0, f0 - context)  # segment start, in frames (its samples start at first * hop)
        stop = n if f1 == total else min(n, (f1 - 1) * hop + half)
        seg = waveform[first * hop : stop].astype(np.float64)
        mel = log_mel(extractor, seg, extractor.mel_filters)
        if out is None:
            out = np.empty((total, mel.shape[1]), dtype=mel.dtype)
        out[f0:f1] = mel[f0 - first : f1 - first]
    return out


def _deterministic_fusion_mel(extractor, waveform: np.ndarray) -> np.ndarray:
    """Fusion input for a clip longer than the window, without randomness."""
    # lazy: keeps torch out of `import humanclap.scoring.audio`
    import torch

    mel = whole_clip_mel(extractor, waveform)
    chunk_frames = extractor.nb_max_samples // extractor.hop_length + 1
    total_frames = mel.shape[0]
    if total_frames <= chunk_frames:
        return np.stack([mel[:chunk_frames]] * 4, axis=0)
    ranges = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    starts = [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]
    chunks = [mel[s : s + chunk_frames] for s in starts]
    shrink = torch.nn.functional.interpolate(
        torch.from_numpy(mel)[None, None],
        size=[chunk_frames, mel.shape[1]],
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    return np.stack([shrink, *chunks], axis=0)


def check_waveform(waveform: np.ndarray) -> None:
    """Raise AudioError unless ``waveform`` is a non-empty finite 1-D signal within ``MAX_ABS_SAMPLE``."""
    if waveform.ndim != 1:
        raise AudioError(f"waveform must be mono (samples,), got shape {waveform.shape}")
    if waveform.shape[0] == 0:
        raise AudioError("empty waveform (0 samples at the model's rate); pass a longer clip")
    # min/max need no temporary copy of a long clip, and NaN/inf propagate through them
    lo, hi = float(waveform.min()), float(waveform.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise AudioError("contains NaN or inf samples; fix or re-export the file")
    peak = max(-lo, hi)
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"samples out of range: max |x| = {peak:.3g}, expected [-1, 1] (refused above "
            f"{MAX_ABS_SAMPLE:g}); integer PCM stored as float peaks near 32767: divide it "
            "by 32768, or rescale the audio to [-1, 1]"
        )


def _features(waveform: np.ndarray, extractor, fused: bool, window: int, longer: bool) -> np.ndarray:
    """Deterministic features of a checked waveform (the length rules of the module docstring)."""
    if longer and fused:
        return _deterministic_fusion_mel(extractor, waveform).astype(np.float32)
    if longer:
        start = (waveform.shape[0] - window) // 2
        waveform = waveform[start : start + window]
    # the extractor's own call (truncation "fusion"/"rand_trunc", padding "repeatpad"), with
    # all frames at once instead of one FFT per frame: the same bits (tests/test_fbank.py)
    return window_features(extractor, waveform, fused)


def clip_features(waveform: np.ndarray, extractor, fused: bool) -> tuple[np.ndarray, bool]:
    """Features and ``is_longer`` flag of one mono waveform at the extractor's rate.

    Raises AudioError for an empty, non-finite or out-of-range waveform and whenever the
    features come out non-finite, so no NaN ever reaches a score.
    """
    waveform = np.asarray(waveform)
    check_waveform(waveform)
    window = int(extractor.nb_max_samples)
    longer = waveform.shape[0] > window
    # overflow shows up as inf/NaN features, checked below; numpy's warnings would only add noise
    with np.errstate(over="ignore", invalid="ignore"):
        feats = _features(waveform, extractor, fused, window, longer)
    if not np.isfinite(feats).all():
        peak = float(np.max(np.abs(waveform)))
        raise AudioError(
            f"log-mel features are not finite (max |x| = {peak:.3g}, expected samples in "
            "[-1, 1]); rescale the audio to [-1, 1]"
        )
    return feats, longer


def collate_features(items: list[tuple[np.ndarray, bool]]) -> dict:
    """Stack per-clip features into model inputs (``input_features``, ``is_longer`` tensors)."""
    # lazy: keeps torch out of `import humanclap.scoring.audio`
    import torch

    feats = torch.from_numpy(np.stack([f for f, _ in items]))
    is_longer = torch.tensor([[bool(longer)] for _, longer in items])
    return {"input_features": feats, "is_longer": is_longer}
