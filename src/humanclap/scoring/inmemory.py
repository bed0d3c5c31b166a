"""CLAPScore of waveforms held in memory: a training loop's metric, no files written.

:func:`clap_score` takes a batch of waveforms (a ``(B, T)`` tensor or array with
``lengths``, or a list of 1-D ones) at any sample rate, on any device, and their texts, and
returns a ``(B,)`` float32 tensor of CLAPScores, **bit-identical** to what ``humanclap score``
writes for the same samples stored as float WAV files at the same rate
(``tests/test_inmemory.py``):

* each clip goes through the very readers the file path uses (:func:`read_mono`,
  :func:`read_centre_window`: block-wise mono mix in float64, streaming soxr "HQ"), fed by
  :class:`ArrayFile`, an in-memory stand-in for ``soundfile.SoundFile``; then the scorer's
  own ``features``; so resampling, the long-clip window and the resampler's edge margin are
  the file path's, not a re-implementation;
* the embeddings and cosines come from the scoring engine
  (:class:`~humanclap.scoring.engine.EmbeddingEngine`) as in ``humanclap score``: fixed
  forward shapes, so a clip's score does not depend on its batch-mates.

Input rules (each violation is a :class:`~humanclap.errors.HumanclapError` subclass):

* float samples are taken as float32, as a float WAV stores them (float64 and half
  precision are rounded to float32); integer PCM is scaled like soundfile scales it
  (int8 / 2^7, uint8 (x - 128) / 2^7, int16 / 2^15, int32 / 2^31); int64 is refused
  (no PCM format has it: convert to float in [-1, 1]);
* ``text`` is a list of ``B`` non-empty strings; a bare string is accepted for ``B == 1``
  only (with ``B > 1`` it is almost surely a mistake, e.g. one caption for every clip:
  pass ``[caption] * B``);
* an empty batch, 3-D audio, a 1-D tensor for the whole batch, ``lengths`` out of
  ``1..T`` or with a list of clips, and mismatched ``B`` are refused.

Loaded scorers are cached per (model spec, device, dtype) for the life of the process
(:func:`get_scorer`), so calling :func:`clap_score` every validation step loads the model
once; :func:`clear_scorer_cache` drops them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from humanclap.defaults import DEFAULT_MODEL
from humanclap.errors import AudioError, UsageError
from humanclap.scoring.audio_file import read_centre_window, read_mono
from humanclap.scoring.citation import scorer_protocol
from humanclap.scoring.engine import EmbeddingEngine
from humanclap.scoring.loader import load_scorer

__all__ = [
    "ArrayFile",
    "as_clips",
    "as_texts",
    "clap_score",
    "clear_scorer_cache",
    "clip_features",
    "get_scorer",
    "protocol",
    "scorer_for",
]

# Integer PCM -> float as libsndfile reads it: (offset, scale); x_float = (x - offset) / scale.
PCM_SCALE = {
    np.dtype(np.int8): (0, 2.0**7),
    np.dtype(np.uint8): (128, 2.0**7),
    np.dtype(np.int16): (0, 2.0**15),
    np.dtype(np.int32): (0, 2.0**31),
}

# Clips featurised, then embedded, per step of clap_score: bounds the features held at once
# (a multiple of AUDIO_CHUNK, so no forward pass is split differently; bits never depend on it).
CLIPS_PER_STEP = 64

_SCORERS: dict[tuple[str, str, str], Any] = {}
_SCORERS_LOCK = threading.Lock()


class ArrayFile:
    """A mono or multichannel float32 array behind the part of ``soundfile.SoundFile`` that
    :mod:`humanclap.scoring.audio_file` reads (``samplerate``, ``frames``, ``format``,
    ``seekable``, ``seek``, ``tell``, ``read``): an exact-seek WAV, held in memory.

    >>> f = ArrayFile(np.zeros((4, 1), np.float32), 16000)
    >>> f.read(3, dtype="float32", always_2d=True).shape, f.tell()
    ((3, 1), 3)
    """

    format = "WAV"

    def __init__(self, data: np.ndarray, samplerate: int):
        self._data = data if data.ndim == 2 else data[:, None]
        self.samplerate = int(samplerate)
        self.frames = int(self._data.shape[0])
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def seek(self, frame: int) -> int:
        self._pos = min(max(int(frame), 0), self.frames)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        stop = self.frames if frames < 0 else min(self.frames, self._pos + int(frames))
        block = self._data[self._pos : stop]
        self._pos = stop
        return block.astype(dtype, copy=False)


def _to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, any dtype) or array-like as a numpy array, no copy when possible."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        # lazy: keeps torch out of `import humanclap.scoring.inmemory`
        import torch

        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()  # numpy has no bfloat16; float16 -> float32 is exact
        return x.cpu().numpy()
    return np.asarray(x)


def _as_float32(x: np.ndarray, name: str) -> np.ndarray:
    """Samples as float32 the way a float WAV holds them; integer PCM scaled like soundfile."""
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
            out = x.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            first = int(np.flatnonzero(~np.isfinite(out))[0])
            raise AudioError(
                f"{name}: contains NaN or inf samples (the first at sample {first}); check what produced the audio"
            )
        return out
    if x.dtype in PCM_SCALE:
        offset, scale = PCM_SCALE[x.dtype]
        return ((x.astype(np.float32) - np.float32(offset)) / np.float32(scale)).astype(np.float32)
    if x.dtype.kind in "iu":
        raise AudioError(
            f"{name}: integer samples of dtype {x.dtype} are not PCM (int8, uint8, int16 or "
            "int32); convert the audio to float in [-1, 1] (e.g. x / 32768 for 16-bit)"
        )
    raise AudioError(f"{name}: samples must be real numbers (float or integer PCM), got dtype {x.dtype}")


def as_clips(audio: Any, lengths: Any = None) -> list[np.ndarray]:
    """The clips of a batch as 1-D float32 arrays (see the module docstring for the rules).

    >>> [c.shape for c in as_clips(np.zeros((2, 5)), lengths=[3, 5])]
    [(3,), (5,)]
    """
    if isinstance(audio, (list, tuple)):
        if lengths is not None:
            raise UsageError(
                "lengths applies to a (B, T) batch; a list of clips carries its own lengths: "
                "drop lengths or pass the clips already cut"
            )
        if not audio:
            raise UsageError("empty batch: pass at least one clip")
        clips = []
        for i, clip in enumerate(audio):
            arr = _to_numpy(clip)
            if arr.ndim != 1:
                raise AudioError(
                    f"audio[{i}]: each clip of a list must be 1-D (samples,), got shape "
                    f"{tuple(arr.shape)}; mix channels down first (e.g. clip.mean(0))"
                )
            clips.append(_as_float32(arr, f"audio[{i}]"))
        return clips
    arr = _to_numpy(audio)
    if arr.ndim == 1:
        raise UsageError(
            f"audio of shape {tuple(arr.shape)} is one clip, not a batch: pass a (B, T) batch "
            "(clip[None] for one clip) or a list of 1-D clips"
        )
    if arr.ndim != 2:
        raise UsageError(
            f"audio must be a (B, T) batch or a list of 1-D clips, got shape {tuple(arr.shape)}; "
            "mix channels down first (e.g. audio.mean(1) for (B, C, T))"
        )
    if arr.shape[0] == 0:
        raise UsageError("empty batch: pass at least one clip")
    batch, total = arr.shape
    if lengths is None:
        cuts = [total] * batch
    else:
        lens = _to_numpy(lengths)
        if lens.ndim != 1 or lens.shape[0] != batch:
            raise UsageError(
                f"lengths must hold one length per clip: {batch} clips, lengths of shape {tuple(lens.shape)}"
            )
        if lens.dtype.kind not in "iu" and not (lens.dtype.kind == "f" and np.all(lens == np.round(lens))):
            raise UsageError(f"lengths must be whole numbers of samples, got {lens.tolist()}")
        cuts = [int(n) for n in lens]
        bad = [(i, n) for i, n in enumerate(cuts) if not 1 <= n <= total]
        if bad:
            i, n = bad[0]
            raise UsageError(
                f"lengths[{i}] = {n} is out of range: each length must be 1..{total} (the batch's "
                f"T); {len(bad)} of {batch} lengths are"
            )
    return [_as_float32(arr[i, : cuts[i]], f"audio[{i}]") for i in range(batch)]


def as_texts(text: Any, batch: int) -> list[str]:
    """``text`` as ``batch`` non-empty strings (a bare string only when ``batch == 1``)."""
    if isinstance(text, str):
        if batch != 1:
            raise UsageError(
                f"text is one string but audio holds {batch} clips: pass a list of {batch} texts "
                f"(the same caption for all: [text] * {batch})"
            )
        text = [text]
    if not isinstance(text, Sequence) and not hasattr(text, "__iter__"):
        raise UsageError(f"text must be a list of strings, got {type(text).__name__}")
    texts = list(text)
    if len(texts) != batch:
        raise UsageError(f"audio and text must pair up: {batch} clips but {len(texts)} texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UsageError(f"text[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise UsageError(f"text[{i}] is empty: every text needs at least one word")
    return texts


def clip_features(scorer: Any, clip: np.ndarray, sample_rate: int, name: str) -> tuple[Any, bool]:
    """Model features and ``is_longer`` of one float32 clip, exactly as ``scorer.load_features``
    computes them for a float WAV of the same samples at ``sample_rate``.

    The clip is read through the file readers (:class:`ArrayFile`): the centre window for a
    family whose long-clip rule is a centre crop (what the scorers read from a long wav),
    else the whole clip; then ``scorer.features``.
    """
    pre = scorer.info.preprocessing
    f = ArrayFile(clip, sample_rate)
    centre = None
    if pre.long_clip_rule == "centre-crop":
        centre = read_centre_window(f, name, scorer.sampling_rate, int(pre.window_samples))
    if centre is not None:
        waveform, longer = centre[0], True
    else:
        waveform, longer = read_mono(f, name, scorer.sampling_rate), False
        if waveform.shape[0] == 0:
            raise AudioError(
                f"{name}: too short: {clip.shape[0]} samples at {sample_rate} Hz are 0 samples at "
                f"the model's rate ({scorer.sampling_rate} Hz); pass a longer clip"
            )
    try:
        feats, is_longer = scorer.features(waveform)
    except AudioError as exc:
        raise AudioError(f"{name}: {exc}") from None
    return feats, bool(longer or is_longer)


def _check_rate(sample_rate: Any) -> int:
    """A sample rate as a positive int (16000 and 16000.0 alike); anything else: UsageError."""
    ok = isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool)
    if not ok or not np.isfinite(sample_rate) or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise UsageError(f"sample_rate must be a positive whole number of Hz (e.g. 16000), got {sample_rate!r}")
    return int(sample_rate)


def is_scorer(model: Any) -> bool:
    """Whether ``model`` is a loaded scorer rather than a model spec."""
    return hasattr(model, "info") and hasattr(model, "embed_features")


def get_scorer(model: Any = DEFAULT_MODEL, device: Any = None, dtype: str | None = None) -> Any:
    """A scorer for ``model``: a loaded scorer is returned as it is; a spec (hub id, folder,
    ``msclap-2023``, ``.pth``) is loaded with :func:`~humanclap.scoring.loader.load_scorer`
    once per (spec, device, dtype) and cached. ``device`` None: ``"auto"``; ``dtype`` None:
    ``"fp32"``. A device or dtype that contradicts a loaded scorer is a UsageError."""
    if is_scorer(model):
        if dtype is not None and dtype != model.dtype:
            raise UsageError(
                f"model is a scorer loaded in {model.dtype}, not {dtype}: load it in {dtype} or leave dtype unset"
            )
        if device is not None:
            # lazy: keeps torch out of `import humanclap.scoring.inmemory`
            from humanclap.scoring.device import resolve_device

            want = resolve_device(device) if isinstance(device, str) else device
            if str(want) != str(model.device):
                raise UsageError(
                    f"model is a scorer loaded on {model.device}, not on {want}: load it on "
                    f"{want} or leave device unset"
                )
        return model
    if not isinstance(model, (str, Path)):
        raise UsageError(
            f"model must be a model spec (hub id, folder, msclap-2023, .pth) or a loaded scorer "
            f"(humanclap.load_scorer), got {type(model).__name__}"
        )
    # lazy: keeps torch out of `import humanclap.scoring.inmemory`
    from humanclap.scoring.device import resolve_device

    resolved = resolve_device("auto" if device is None else str(device))
    dtype = dtype or "fp32"
    # a local path by its real location: "ckpt", "./ckpt" and its absolute path load once
    name = str(Path(model).resolve()) if Path(model).exists() else str(model)
    key = (name, str(resolved), str(dtype))
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = load_scorer(str(model), device=str(resolved), dtype=dtype)
        return _SCORERS[key]


def clear_scorer_cache() -> None:
    """Forget the scorers :func:`get_scorer` loaded (frees their memory once unused)."""
    with _SCORERS_LOCK:
        _SCORERS.clear()


def audio_device(audio: Any) -> Any:
    """The torch device of a tensor batch (or of a list's first tensor); None for arrays."""
    first = audio[0] if isinstance(audio, (list, tuple)) and audio else audio
    return first.device if hasattr(first, "detach") and hasattr(first, "device") else None


def scorer_for(model: Any, audio: Any, device: Any = None, dtype: str | None = None) -> Any:
    """:func:`get_scorer` for a batch: ``device`` None runs a model spec on the batch's
    accelerator when it is on one (each DDP rank on its own GPU), else on ``auto``."""
    if device is None and not is_scorer(model):
        dev = audio_device(audio)
        device = None if dev is None or dev.type == "cpu" else dev
    return get_scorer(model, device, dtype)


def clap_score(
    audio: Any,
    text: Any,
    sample_rate: int,
    model: Any = DEFAULT_MODEL,
    lengths: Any = None,
    return_cosine: bool = False,
    *,
    device: Any = None,
    dtype: str | None = None,
) -> Any:
    """CLAPScore = max(cos, 0) of each (clip, text) pair, as a ``(B,)`` float32 tensor.

    ``audio``: a ``(B, T)`` tensor/array (``lengths``: the valid samples of each row) or a
    list of 1-D tensors/arrays, at ``sample_rate`` Hz (any rate: resampled like files).
    ``text``: ``B`` strings. ``model``: a model spec or a loaded scorer (specs are loaded
    once per (spec, device, dtype)). ``device``: where the model runs (None: the audio's
    accelerator if it is on one, else ``auto``); ``dtype``: ``fp32`` (default), ``bf16``,
    ``fp16`` (GPU). The result lies on the audio's device (a
    tensor input) or the CPU; ``return_cosine``: also the raw cosines, ``(scores, cosines)``.
    No gradients, no files. Raises :class:`~humanclap.errors.UsageError` /
    :class:`~humanclap.errors.AudioError` for bad input (see the module docstring).

    >>> import torch, humanclap
    >>> wave = torch.randn(2, 16000) * 0.1
    >>> humanclap.clap_score(wave, ["a dog barks", "rain"], 16000)  # doctest: +SKIP
    tensor([0.1234, 0.0567])
    """
    # lazy: keeps torch out of `import humanclap.scoring.inmemory`
    import torch

    rate = _check_rate(sample_rate)
    with torch.inference_mode():
        clips = as_clips(audio, lengths)
        texts = as_texts(text, len(clips))
        scorer = scorer_for(model, audio, device, dtype)
        scored, cosines = scores_of(scorer, clips, texts, rate)
    # built outside inference mode: plain tensors a training loop may combine with anything
    # (inference tensors refuse in-place updates and being saved for backward)
    cos = torch.tensor(cosines, dtype=torch.float32, device=audio_device(audio))
    scores = torch.tensor(scored, dtype=torch.float32, device=cos.device)
    return (scores, cos) if return_cosine else scores


def cosines_of(scorer: Any, clips: list[np.ndarray], texts: list[str], sample_rate: int) -> list[float]:
    """Cosine of each (clip, text) pair through the scoring engine (see :func:`scores_of`)."""
    return scores_of(scorer, clips, texts, sample_rate)[1]


def scores_of(
    scorer: Any, clips: list[np.ndarray], texts: list[str], sample_rate: int
) -> tuple[list[float], list[float]]:
    """``(clapscores, cosines)`` of each (clip, text) pair through the scoring engine (the
    CLI's own bits and score, a score head's included): texts embedded once each, clips
    featurised and embedded ``CLIPS_PER_STEP`` at a time."""
    engine = EmbeddingEngine(scorer)
    engine.embed_texts(texts)
    keys = [f"audio[{i}]" for i in range(len(clips))]
    for start in range(0, len(clips), CLIPS_PER_STEP):
        step = range(start, min(start + CLIPS_PER_STEP, len(clips)))
        engine.embed_prepared({keys[i]: (*clip_features(scorer, clips[i], sample_rate, keys[i]), "") for i in step})
    scores, cosines = [], []
    for key, t in zip(keys, texts):
        score, cosine, error = engine.score(key, t)
        if error:
            raise AudioError(f"{key}: {error}")
        scores.append(score)
        cosines.append(cosine)
    return scores, cosines


def protocol(model: Any = DEFAULT_MODEL, device: Any = None, dtype: str | None = None, raw_cosine: bool = False) -> str:
    """The one-line description of the metric a paper can paste (see
    :func:`~humanclap.scoring.citation.scorer_protocol`), for a model spec or scorer.

    >>> humanclap.protocol("laion/clap-htsat-unfused")  # doctest: +SKIP
    'CLAPScore = max(cos, 0); model laion/clap-htsat-unfused (hub, revision 8fa0f1c) fp32; ...'
    """
    return scorer_protocol(get_scorer(model, device, dtype), raw_cosine=raw_cosine)
