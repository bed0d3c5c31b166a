"""XACLE challenge data (text-audio alignment ratings, 0-10 scale; RELATE's successor).

Layout, as the challenge baseline reads it::

    DIR/meta_data/{split}.csv           per listener: wav_file_name,text,score,listener_id
    DIR/meta_data/{split}_average.csv   per pair:     wav_file_name,text,average_score
    DIR/wav/<split>/<wav_file_name>     audio (or DIR/wav/<wav_file_name>)

The dataset's own README names two of these columns differently (``wave_file_name``,
``average_semantic_alignement_score``, its spelling); both namings are accepted and the
loader logs which one it found.

Splits ``train``, ``validation`` and ``test`` are read where present. For each split the
per-listener file is preferred; when only the average file exists, pairs get
``n_ratings == 0`` and ``human_std`` NaN and contribute no ``ratings`` rows (the number of
listeners behind an average is unknown). A split whose files carry no scores (the blind
test set) is skipped with a log message. XACLE names no generating system, so
``system`` is "" and ``natural`` is NaN.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from humanclap.data.rated import (
    PAIR_COLUMNS,
    DatasetError,
    RatedPairs,
    build_rated_pairs,
    check_range,
    exists_column,
    make_pair_id,
    pairs_from_averages,
    read_csv_str,
    require_columns,
    to_scores,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
KEYS = ["wav_file_name", "text"]
# The dataset README's column names -> the challenge baseline's (which this module uses).
COLUMN_ALIASES = {
    "wave_file_name": "wav_file_name",
    "average_semantic_alignement_score": "average_score",
    "average_semantic_alignment_score": "average_score",
}


def read_xacle_csv(path: Path) -> pd.DataFrame:
    """A meta_data CSV with its columns in the baseline's naming (aliases renamed, logged)."""
    df = read_csv_str(path)
    found = {a: c for a, c in COLUMN_ALIASES.items() if a in df.columns}
    clash = [c for c in found.values() if c in df.columns]
    if clash:
        raise DatasetError(f"{path}: has both {sorted(found)} and {clash}; keep one naming")
    if found:
        log.info(
            "XACLE: %s uses the dataset README's column names %s (read as %s)",
            path,
            sorted(found),
            sorted(found.values()),
        )
        df = df.rename(columns=found)
    return df


def load_xacle(root: str | Path, audio_root: str | Path | None = None) -> RatedPairs:
    """Load every rated XACLE split under ``root`` (the folder holding ``meta_data/``).

    ``audio_root`` replaces ``DIR/wav``; pairs whose audio is missing are kept with
    ``audio_exists == False``.
    """
    root = Path(root).expanduser().resolve()
    meta = root / "meta_data"
    if not meta.is_dir():
        raise DatasetError(
            f"XACLE folder {root} has no meta_data/ subfolder. Pass xacle:DIR "
            "where DIR holds meta_data/{train,validation}.csv."
        )
    base = Path(audio_root).expanduser().resolve() if audio_root else root / "wav"

    parts = [p for split in SPLITS if (p := _load_split(meta, split, base)) is not None]
    if not parts:
        raise DatasetError(
            f"{meta}: no rated split found; expected train.csv / "
            "validation.csv (score, listener_id) or *_average.csv "
            "(average_score)."
        )
    pairs = pd.concat([p.pairs[PAIR_COLUMNS] for p in parts], ignore_index=True)
    ratings = pd.concat([p.ratings for p in parts if len(p.ratings)] or [parts[0].ratings], ignore_index=True)
    n_missing = int((~pairs["audio_exists"]).sum())
    if n_missing:
        log.warning("XACLE: %d of %d pairs have no audio file under %s", n_missing, len(pairs), base)
    return RatedPairs("xacle", pairs, ratings)


def _load_split(meta: Path, split: str, base: Path) -> RatedPairs | None:
    listener_path, average_path = meta / f"{split}.csv", meta / f"{split}_average.csv"
    if listener_path.is_file():
        df = read_xacle_csv(listener_path)
        if {"score", "listener_id"} <= set(df.columns):
            require_columns(df, KEYS, listener_path)
            scores = to_scores(df["score"], listener_path, "score")
            check_range(scores, 0, 10, listener_path, "score")
            rows = pd.DataFrame(
                {
                    "wav_file_name": df["wav_file_name"],
                    "text": df["text"],
                    "listener_id": df["listener_id"].astype(str),
                    "score01": scores / 10.0,
                }
            )
            return build_rated_pairs("xacle", rows, KEYS, _pair_info(df, split, base))
        log.info("XACLE: %s has no score/listener_id columns; trying %s", listener_path, average_path.name)
    if average_path.is_file():
        df = read_xacle_csv(average_path)
        if "average_score" in df.columns:
            require_columns(df, KEYS, average_path)
            if df.duplicated(KEYS).any():
                raise DatasetError(
                    f"{average_path}: a (wav_file_name, text) pair appears "
                    "twice; an average file needs one row per pair."
                )
            scores = to_scores(df["average_score"], average_path, "average_score")
            check_range(scores, 0, 10, average_path, "average_score")
            info = _pair_info(df, split, base)
            means = df[KEYS].assign(h=scores / 10.0)
            human = info[KEYS].merge(means, on=KEYS, how="left")["h"]
            return pairs_from_averages("xacle", info, human.to_numpy(dtype=float))
        log.info("XACLE: %s has no average_score column (blind split); skipped", average_path)
    return None


def _pair_info(df: pd.DataFrame, split: str, base: Path) -> pd.DataFrame:
    info = df.drop_duplicates(KEYS)[KEYS].reset_index(drop=True)
    info["wavname"] = info["wav_file_name"]
    info["audio"] = [_audio_path(base, split, w) for w in info["wav_file_name"]]
    info["audio_exists"] = exists_column(info["audio"])
    info["system"] = ""
    info["natural"] = pd.Series(np.nan, index=info.index, dtype=object)
    info["split"] = split
    info["pair_id"] = [
        make_pair_id(f"{split}/{w.strip('/').rsplit('.', 1)[0]}", t)
        for w, t in zip(info["wav_file_name"], info["text"])
    ]
    return info


def _audio_path(base: Path, split: str, name: str) -> str:
    """``base/split/name`` by default; ``base/name`` when only that one exists (the
    baseline joins the wav folder and the name directly)."""
    name = name.lstrip("/")
    in_split, flat = base / split / name, base / name
    return str(flat if (not in_split.is_file() and flat.is_file()) else in_split)
