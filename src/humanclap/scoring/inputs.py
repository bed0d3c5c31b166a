"""Argument checks of the scorers' public methods (``embed_text``, ``embed_audio``,
``cosine``, ``score``), shared by every model family, and of the lists of models and labels
that evaluation takes.

The methods take *lists*: a bare string is itself a sequence (of characters), so
``embed_text("dog")`` used to embed three one-letter texts and ``score([wav], "a dog")``
scored the text "a". One string where a list belongs is refused with the list to pass
instead of being wrapped: wrapping would hide the same slip where it changes a shape
(``score(audio_list, "a dog")`` pairing one text with many clips). Any other iterable (a
generator, a pandas Series, a tuple) is consumed into a list; an empty list gives an
empty result.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from humanclap.defaults import MAX_BATCH_SIZE
from humanclap.errors import UsageError
from humanclap.scoring.protocol import Scorer


def _as_list(values: Any, what: str, kind: str) -> list:
    """Any non-string iterable as a list; anything else is a UsageError."""
    if values is None or not isinstance(values, Iterable):
        raise UsageError(f"{what} must be a list of {kind}, got {type(values).__name__}")
    return list(values)


def text_list(texts: Any, what: str = "texts") -> list[str]:
    """``texts`` as a list of strings, or a :class:`UsageError` saying what to pass."""
    if isinstance(texts, (str, bytes)):
        text = texts.decode("utf-8", "replace") if isinstance(texts, bytes) else texts
        raise UsageError(
            f"{what} must be a list of strings, got a single string; pass a list of "
            f"texts: [{json.dumps(text[:60], ensure_ascii=False)}]"
        )
    out = _as_list(texts, what, "strings")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise UsageError(
                f"{what}[{i}] must be a string, got {type(text).__name__} {text!r:.60}; pass one string per text"
            )
    return out


def _looks_like_one_array_item(audio: Any) -> bool:
    """``(array, sample_rate)`` passed where a list of items belongs."""
    return (
        isinstance(audio, tuple)
        and len(audio) == 2
        and not isinstance(audio[0], (str, os.PathLike))
        and isinstance(audio[1], numbers.Real)
        and not isinstance(audio[1], bool)
    )


def audio_list(audio: Any, what: str = "audio") -> list:
    """``audio`` as a list of audio items, or a :class:`UsageError` saying what to pass.

    The items themselves (paths, ``(array, sample_rate)`` tuples) are checked where they
    are decoded, so a bad item is an ``AudioError`` naming it."""
    if isinstance(audio, (str, bytes, os.PathLike)):
        raise UsageError(
            f"{what} must be a list of audio items, got a single path; pass a list of audio items: [{str(audio)!r}]"
        )
    if _looks_like_one_array_item(audio):
        raise UsageError(
            f"{what} must be a list of audio items, got one (array, sample_rate) tuple; "
            "pass a list of audio items: [(array, sample_rate)]"
        )
    if isinstance(audio, np.ndarray):
        raise UsageError(
            f"{what} must be a list of audio items, not one array of shape {audio.shape}; pass [(array, sample_rate)]"
        )
    return _as_list(audio, what, "audio items (paths or (array, sample_rate) tuples)")


def paired_lists(audio: Any, texts: Any) -> tuple[list, list[str]]:
    """``(audio, texts)`` as lists of equal length (one text per audio item)."""
    audio, texts = audio_list(audio), text_list(texts, "text")
    if len(audio) != len(texts):
        raise UsageError(
            f"audio and text must pair up: {len(audio)} audio items vs {len(texts)} texts; pass one text per audio item"
        )
    return audio, texts


def model_list(models: Any) -> list:
    """``models`` as a list; one bare id or folder is refused (it would be read as a list
    of one-character model names)."""
    if isinstance(models, Scorer):
        raise UsageError("models must be a list, got one scorer; pass a list of models: [scorer]")
    if isinstance(models, (str, os.PathLike)):
        raise UsageError(f"models must be a list, got one model; pass a list of models: [{str(models)!r}]")
    if models is None or not isinstance(models, Iterable):
        raise UsageError(f"models must be a list of model ids, folders or scorers, got {type(models).__name__}")
    return list(models)


def label_list(labels: Any) -> list:
    """``labels`` as a list (one per model); one bare string is refused."""
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise UsageError(
            f"labels must be a list of strings, one per model, got {type(labels).__name__}; "
            f"pass a list of labels: [{str(labels)!r}]"
        )
    return list(labels)


def check_batch_size(batch_size: int) -> None:
    """``--batch-size`` is rows per step: at least 1, at most :data:`MAX_BATCH_SIZE`."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (rows prepared and written per step), got {batch_size}")
    if batch_size > MAX_BATCH_SIZE:
        raise UsageError(
            f"--batch-size must be at most {MAX_BATCH_SIZE} (rows prepared and written "
            f"per step; a forward pass has a fixed internal size), got {batch_size}"
        )


# --workers: decoding is CPU work, so more processes than this only compete for the cores,
# while each costs memory (its imports, its files in flight).
WORKERS_PER_CORE, MIN_WORKERS_BOUND = 4, 8


def max_workers(cores: int | None = None) -> int:
    """The most ``--workers`` a run may ask for: 4 per core, at least 8."""
    return max(MIN_WORKERS_BOUND, WORKERS_PER_CORE * (cores or os.cpu_count() or 1))


def check_workers(workers: int | None, cores: int | None = None) -> None:
    """Refuse a ``--workers`` outside 0..:func:`max_workers` (None: the default)."""
    bound = max_workers(cores)
    if workers is not None and not 0 <= workers <= bound:
        raise UsageError(
            f"--workers must be 0 (decode in the main process) up to {bound} "
            f"({WORKERS_PER_CORE} per core, at least {MIN_WORKERS_BOUND}: this machine "
            f"has {cores or os.cpu_count() or 1} cores), got {workers}"
        )
