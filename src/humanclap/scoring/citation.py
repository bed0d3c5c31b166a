"""The metric's protocol as one line a paper can paste: what was computed, with what.

A CLAPScore is only comparable across papers when the model (id *and* revision), the
score definition (clamped or raw cosine), the sample rate, the window and the rules for
short and long clips are the same. :func:`protocol_line` builds that line from a
:class:`~humanclap.scoring.protocol.ModelInfo` (or its ``as_dict()`` form, as stored in
``OUT.meta.json``), so every output that reports scores (the in-memory metric, and later
score summaries, evaluate and compare reports) says it the same way.

>>> from humanclap.scoring.audio import Preprocessing
>>> from humanclap.scoring.protocol import ModelInfo
>>> pre = Preprocessing(48000, 480000, False, 64, 480, 1024, 50.0, 14000.0, "centre-crop")
>>> line = protocol_line(ModelInfo("laion/clap-htsat-unfused", "8fa0f1c", "hub", pre), family="laion",
...                      version="0.1.0")
>>> print(line)  # doctest: +NORMALIZE_WHITESPACE
CLAPScore = max(cos, 0) (humanclap 0.1.0); model laion/clap-htsat-unfused (hub, revision 8fa0f1c);
audio: mono (mean of channels), resampled to 48000 Hz (soxr HQ), window 10 s (480000 samples);
shorter clips repeat-padded (tiled whole times, then zero-padded); longer clips centre-cropped to
the window
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from humanclap import __version__
from humanclap.scoring.families import family_of_scorer, family_of_spec
from humanclap.scoring.protocol import ModelInfo

__all__ = ["LONG_CLIP_RULES", "SHORT_CLIP_RULES", "protocol_line", "scorer_protocol"]

# Preprocessing.long_clip_rule -> words
LONG_CLIP_RULES = {
    "centre-crop": "longer clips centre-cropped to the window",
    "fusion-middle-chunks": (
        "longer clips fused (the whole clip's mel shrunk to the window, plus three "
        "window-long chunks from the middle of the front, middle and back thirds)"
    ),
}
# model family -> how a clip shorter than the window is filled (the family's own rule)
SHORT_CLIP_RULES = {
    "laion": "shorter clips repeat-padded (tiled whole times, then zero-padded)",
    "msclap": "shorter clips tiled and cut to the window",
    "pe_audio": "shorter clips taken whole (reflect-padded to a whole frame, never to the window)",
}


def _family_of(model_id: str) -> str:
    try:
        return family_of_spec(model_id).name
    except OSError:
        return "laion"


def protocol_line(
    info: ModelInfo | dict,
    *,
    raw_cosine: bool = False,
    dtype: str | None = None,
    family: str | None = None,
    version: str | None = None,
    score: str | None = None,
) -> str:
    """One line naming the score, the model (id, source, revision, dtype) and the audio
    protocol (rate, window, short- and long-clip rules) of ``info``.

    ``family``: ``"laion"`` (every transformers CLAP) or ``"msclap"``; None: guessed from the
    model id (``.pth``, ``msclap-*``, or a folder that still exists). ``version``: humanclap's
    (None: this one). ``dtype`` is named when given (``fp32`` and ``bf16`` differ in the last
    digits). ``score``: what the score is when it is not CLAPScore (a score head's definition)."""
    d = info.as_dict() if isinstance(info, ModelInfo) else dict(info)
    pre = d["preprocessing"] if isinstance(d["preprocessing"], dict) else asdict(d["preprocessing"])
    if version is None:
        version = __version__
    family = family or _family_of(str(d["model_id"]))
    rate, window = int(pre["sampling_rate"]), int(pre["window_samples"])
    score = "raw cosine (not clamped at 0)" if raw_cosine else (score or "CLAPScore = max(cos, 0)")
    model = f"model {d['model_id']} ({d['source']}, revision {d['revision']}" + (f", {dtype})" if dtype else ")")
    rule = str(pre["long_clip_rule"])
    parts = [
        f"{score} (humanclap {version})",
        model,
        f"audio: mono (mean of channels), resampled to {rate} Hz (soxr HQ), window {window / rate:g} s "
        f"({window} samples)",
        SHORT_CLIP_RULES.get(family, f"shorter clips: {family} rule"),
        LONG_CLIP_RULES.get(rule, f"longer clips: {rule}"),
    ]
    return "; ".join(parts)


def scorer_protocol(scorer: Any, raw_cosine: bool = False) -> str:
    """:func:`protocol_line` of a loaded scorer (its family and dtype known for sure)."""

    found = family_of_scorer(scorer)
    family = found.name if found is not None else "laion"
    return protocol_line(
        scorer.info,
        raw_cosine=raw_cosine,
        dtype=getattr(scorer, "dtype", None),
        family=family,
        score=getattr(scorer, "score_definition", None),
    )
