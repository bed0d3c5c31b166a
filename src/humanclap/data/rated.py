"""The one in-memory shape every rated dataset is loaded into: :class:`RatedPairs`.

Loaders (``relate.py``, ``xacle.py``, ``manifest.py``) read their own file layout and hand
their per-listener rows to :func:`build_rated_pairs`, which averages them per pair, so the
aggregation rules (0-1 scale, population std, counts) live in one place.

``pairs`` columns (every dataset)::

    pair_id       str   stable and unique: "<audio key>|<first 8 hex of sha1(text)>"
    wavname       str   the audio id as the dataset writes it ("/tango2/test/123.wav")
    audio         str   absolute path after resolving the audio root
    audio_exists  bool  whether that file exists now (rows are never dropped for it)
    text          str
    system        str   generating system ("audiocaps", "tango2", ...); "" if unknown
    natural       bool or NaN (object column) if unknown
    split         str   "train" / "validation" / "test" / ...
    human         float per-pair mean rating on 0-1
    human_std     float population std (ddof=0) of the pair's ratings on 0-1; 0.0 for a
                        single rating, NaN when only averages are known
    n_ratings     int   ratings behind ``human``; 0 when only averages are known
    input_error   str   only when a manifest row's audio/text was not a string: why the
                        pair cannot be scored ("" for the others; see ``manifest.py``)

``ratings`` columns: ``pair_id``, ``listener_id`` (str), ``score01`` (0-1), plus listener
attribute columns where the dataset has them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from humanclap.errors import DatasetError

PAIR_COLUMNS = [
    "pair_id",
    "wavname",
    "audio",
    "audio_exists",
    "text",
    "system",
    "natural",
    "split",
    "human",
    "human_std",
    "n_ratings",
]
RATING_COLUMNS = ["pair_id", "listener_id", "score01"]


@dataclass
class RatedPairs:
    """Audio-text pairs with human relevance ratings (see the module docstring for columns)."""

    name: str  # "relate", "xacle", "manifest"
    pairs: pd.DataFrame  # one row per (audio, text) pair, index 0..n-1
    ratings: pd.DataFrame  # one row per (pair, listener)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:  # the default would print both DataFrames
        return (
            f"RatedPairs(name={self.name!r}, pairs={len(self.pairs)}, "
            f"ratings={len(self.ratings)}, splits={self.splits})"
        )

    @property
    def splits(self) -> list[str]:
        """Split names present: train, validation, test first, then others as they appear."""
        names = list(pd.unique(self.pairs["split"]))
        order = ["train", "validation", "test"]
        return sorted(names, key=lambda s: (order.index(s) if s in order else 3, names.index(s)))

    def split(self, name: str) -> "RatedPairs":
        """The subset whose ``pairs.split == name``; ratings are filtered to those pairs."""
        if name not in self.splits:
            raise DatasetError(
                f"{self.name}: no split {name!r}; available splits: {self.splits}. Pass one of these names."
            )
        pairs = self.pairs[self.pairs["split"] == name].reset_index(drop=True)
        keep = self.ratings["pair_id"].isin(set(pairs["pair_id"]))
        return RatedPairs(self.name, pairs, self.ratings[keep].reset_index(drop=True))


def make_pair_id(audio_key: str, text: str) -> str:
    """A pair id that is stable across runs and options and unique even when one audio
    file is rated against several texts: the audio key plus a short hash of the text."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{audio_key.lstrip('/')}|{digest}"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}. Check the dataset folder you passed.")
    return path


def require_columns(df: pd.DataFrame, needed: list[str], path: Path | str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. The file needs at least {needed}."
        )


def read_csv_str(path: Path) -> pd.DataFrame:
    """Read a CSV keeping every cell a string: ids like "0000" stay intact and captions
    such as "None" or "NA" are not turned into NaN."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DatasetError(f"{path}: cannot be read as a UTF-8 CSV ({e}).") from e


def to_scores(values: pd.Series, path: Path | str, column: str) -> np.ndarray:
    """Parse a score column to floats, naming the first bad cell if any."""
    scores = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: column {column!r} has a non-numeric or missing value "
            f"{values.iloc[i]!r} (data row {i + 1}). Every rated row needs a number."
        )
    return scores


def check_range(scores: np.ndarray, low: float, high: float, path: Path | str, column: str) -> None:
    if len(scores) and (scores.min() < low or scores.max() > high):
        raise DatasetError(
            f"{path}: column {column!r} ranges {scores.min():g}..{scores.max():g}, outside "
            f"the expected {low:g}..{high:g}. Check the file or the score scale."
        )


def build_rated_pairs(
    name: str,
    rows: pd.DataFrame,
    keys: list[str],
    pair_info: pd.DataFrame,
    attributes: pd.DataFrame | None = None,
) -> RatedPairs:
    """Average per-listener rows into pairs.

    ``rows`` has the ``keys`` columns, ``listener_id`` and ``score01``; ``pair_info`` has
    one row per pair with the ``keys`` and the remaining ``PAIR_COLUMNS`` except the
    aggregates (its order is kept). ``attributes`` (optional) is joined on ``listener_id``.
    """
    grouped = rows.groupby(keys, sort=False)["score01"]
    agg = pd.DataFrame(
        {
            # rounded so that equal rating sets give bit-equal means (0.2, not 0.19999999999999998):
            # ties in the human score must stay ties for SRCC/KTAU
            "human": grouped.mean().round(12),
            "human_std": grouped.std(ddof=0),  # population std: defined (0) for one rating
            "n_ratings": grouped.size(),
        }
    ).reset_index()
    pairs = pair_info.merge(agg, on=keys, how="left", validate="one_to_one")
    pairs["n_ratings"] = pairs["n_ratings"].fillna(0).astype(int)
    extra = [c for c in pairs.columns if c not in PAIR_COLUMNS]
    pairs = pairs[PAIR_COLUMNS + extra].reset_index(drop=True)

    ratings = rows.merge(pair_info[keys + ["pair_id"]], on=keys, how="left")
    ratings = ratings[RATING_COLUMNS].copy()
    ratings["listener_id"] = ratings["listener_id"].astype(str)
    if attributes is not None and len(attributes):
        ratings = ratings.merge(attributes, on="listener_id", how="left")
    return RatedPairs(name, pairs, ratings.reset_index(drop=True))


def pairs_from_averages(name: str, pair_info: pd.DataFrame, human: np.ndarray) -> RatedPairs:
    """For datasets that publish only per-pair means: ``human_std`` NaN, ``n_ratings`` 0
    and an empty ``ratings`` frame, so nobody mistakes them for per-listener data."""
    pairs = pair_info.copy()
    pairs["human"] = human
    pairs["human_std"] = np.nan
    pairs["n_ratings"] = 0
    pairs = pairs[PAIR_COLUMNS].reset_index(drop=True)
    ratings = pd.DataFrame(
        {
            "pair_id": pd.Series(dtype=str),
            "listener_id": pd.Series(dtype=str),
            "score01": pd.Series(dtype=float),
        }
    )
    return RatedPairs(name, pairs, ratings)


def exists_column(paths: pd.Series) -> pd.Series:
    return pd.Series([os.path.isfile(p) for p in paths], index=paths.index, dtype=bool)
