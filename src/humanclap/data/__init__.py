"""Rated text-audio datasets, all loaded into :class:`RatedPairs`.

>>> data = load_rated("relate:/data/RELATE", audio_root="/data/RELATE_wave")  # doctest: +SKIP
>>> test = data.split("test")                                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from humanclap.data.manifest import ScoreScale, load_manifest
from humanclap.data.rated import DatasetError, RatedPairs
from humanclap.data.relate import load_relate
from humanclap.data.xacle import load_xacle
from humanclap.io import TABLE_FORMATS

__all__ = ["DatasetError", "RatedPairs", "load_manifest", "load_rated", "load_relate", "load_xacle"]

_SPEC_HELP = (
    "Use relate:DIR (DIR holds scores/REL.csv), xacle:DIR (DIR holds meta_data/) "
    "or the path of a .csv / .jsonl manifest with columns audio,text,score."
)


def load_rated(spec: str | os.PathLike, audio_root: str | None = None, score_scale: ScoreScale = "auto") -> RatedPairs:
    """Load a rated dataset from a spec string.

    ``relate:DIR``, ``xacle:DIR``, or a manifest path ending in ``.csv`` / ``.jsonl``
    (also ``.ndjson``, ``.json``: JSON Lines).
    ``audio_root`` overrides where audio is looked up; ``score_scale`` applies to manifests
    only (see :mod:`humanclap.data.manifest`).
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise DatasetError(f"dataset spec must be a string, got {type(spec).__name__}. {_SPEC_HELP}")
    if not spec.strip():
        raise DatasetError(f"empty dataset spec {spec!r}. {_SPEC_HELP}")
    kind, sep, rest = spec.partition(":")
    if sep and kind.lower() in ("relate", "xacle"):
        if not rest.strip():
            raise DatasetError(f"dataset spec {spec!r} names no folder. {_SPEC_HELP}")
        loader = load_relate if kind.lower() == "relate" else load_xacle
        return loader(rest, audio_root=audio_root)
    path = Path(spec).expanduser()
    if path.suffix.lower() in TABLE_FORMATS:
        return load_manifest(path, audio_root=audio_root, score_scale=score_scale)
    if path.is_dir() and (path / "scores" / "REL.csv").is_file():
        raise DatasetError(f"{spec!r} looks like a RELATE folder; write relate:{spec}.")
    raise DatasetError(f"dataset spec {spec!r} not understood. {_SPEC_HELP}")
