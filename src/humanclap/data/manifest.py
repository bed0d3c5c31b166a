"""Your own ratings as a CSV or JSONL manifest.

Columns: ``audio``, ``text``, ``score`` (required); ``listener_id``, ``system``, ``split``,
``natural`` (optional). One row per rating: several rows for the same (audio, text) are
averaged into one pair. Relative ``audio`` paths resolve against ``audio_root``, else the
manifest's own folder.

A JSONL row whose ``audio`` or ``text`` is not a string (a list, object, number, boolean
or null) is kept as a pair that cannot be scored: its ``input_error`` column (present only
then) says why, in the words ``humanclap score`` uses for such a row, and the value is
shown as JSON. ``evaluate`` leaves such a pair out with that error, ``train`` refuses the
data; neither scores the value's Python repr (``"['a', 'dog']"``).

Missing optional columns become: ``listener_id`` "" (unknown listener), ``system`` "",
``split`` "all", ``natural`` NaN.

Score scale: ``score_scale="auto"`` keeps scores whose maximum is <= 1 as they are and
treats anything larger as 0-10 (divided by 10, logged). Pass ``score_scale=(low, high)``
(or ``high`` alone, meaning ``(0, high)``; or a string "1-5" / "10") for another scale:
scores map to ``(score - low) / (high - low)``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from humanclap.data.rated import (
    DatasetError,
    RatedPairs,
    build_rated_pairs,
    check_range,
    exists_column,
    make_pair_id,
    require_columns,
    to_scores,
)
from humanclap.errors import UsageError
from humanclap.io import read_table, resolve_path

log = logging.getLogger(__name__)

REQUIRED = ["audio", "text", "score"]
ScoreScale = str | float | tuple[float, float]
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


def load_manifest(
    path: str | Path, audio_root: str | Path | None = None, score_scale: ScoreScale = "auto"
) -> RatedPairs:
    """Load a ``.csv`` or ``.jsonl`` (``.ndjson``, ``.json``: one object per line) manifest
    of ratings (see the module docstring)."""
    scale = parse_score_scale(score_scale)  # a bad scale fails before any reading
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}. Pass a .csv or .jsonl file with columns {REQUIRED}.")
    df = _read_table(path)
    require_columns(df, REQUIRED, path)
    if df.empty:
        raise DatasetError(f"{path}: no rows. Add one row per rating ({REQUIRED}).")
    for col in ("audio", "text"):
        empty = df[col].str.strip() == ""
        if empty.any():
            raise DatasetError(
                f"{path}: empty {col!r} in data row {int(np.flatnonzero(empty)[0]) + 1}; every row needs one."
            )

    raw = to_scores(df["score"], path, "score")
    low, high = _scale(raw, scale, path)
    check_range(raw, low, high, path, "score")
    keys = ["wavname", "text"]
    rows = pd.DataFrame(
        {
            "wavname": df["audio"],
            "text": df["text"],
            "listener_id": df["listener_id"] if "listener_id" in df else "",
            "score01": (raw - low) / (high - low),
        }
    )

    info = df.rename(columns={"audio": "wavname"}).drop_duplicates(keys)[keys].reset_index(drop=True)
    for col, default in (("system", ""), ("split", "all"), ("natural", "")):
        if col in df:
            info = info.merge(_per_pair(df, col, default, path), on=keys, how="left")
        else:
            info[col] = default
    if df["input_error"].astype(bool).any():
        info = info.merge(_pair_problems(df, keys), on=keys, how="left")
    info["natural"] = info["natural"].map(lambda v: _to_bool(v, path)).astype(object)
    base = Path(audio_root).expanduser().resolve() if audio_root else path.parent
    info["audio"] = [str(resolve_path(a, base).resolve()) for a in info["wavname"]]
    info["audio_exists"] = exists_column(info["audio"])
    info["pair_id"] = [make_pair_id(a.rsplit(".", 1)[0], t) for a, t in zip(info["wavname"], info["text"])]
    n_missing = int((~info["audio_exists"]).sum())
    if n_missing:
        log.warning(
            "manifest %s: %d of %d pairs have no audio file (resolved against %s)",
            path.name,
            n_missing,
            len(info),
            base,
        )
    return build_rated_pairs("manifest", rows, keys, info)


def parse_score_scale(spec: ScoreScale) -> str | tuple[float, float]:
    """ "auto", a number ``high`` (-> (0, high)), "low-high" / (low, high) -> (low, high)."""
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "auto":
            return "auto"
        try:
            if "-" in s.lstrip("-"):
                lo, hi = s.lstrip("-").split("-", 1)
                spec = (float(("-" if s.startswith("-") else "") + lo), float(hi))
            else:
                spec = float(s)
        except ValueError:
            raise DatasetError(
                f"score_scale {spec!r} not understood; use 'auto', a maximum such as '10', or a range such as '1-5'."
            ) from None
    if isinstance(spec, (int, float)):
        spec = (0.0, float(spec))
    low, high = (float(v) for v in spec)
    if not high > low:
        raise DatasetError(f"score_scale {spec!r}: the top must exceed the bottom.")
    return low, high


def _scale(raw: np.ndarray, parsed: str | tuple[float, float], path: Path) -> tuple[float, float]:
    if parsed != "auto":
        return parsed  # type: ignore[return-value]
    if raw.max() > 1:
        log.info(
            "manifest %s: max score %g > 1, so scores are read as 0-10 and divided by "
            "10 (pass score_scale to override)",
            path.name,
            raw.max(),
        )
        return 0.0, 10.0
    return 0.0, 1.0


def _read_table(path: Path) -> pd.DataFrame:
    """The manifest as a DataFrame of strings (:func:`humanclap.io.read_table`).

    Every cell a string ("" where missing), JSON values included, so ids stay as written
    (7 -> "7", never "7.0"); scores are parsed later."""
    try:
        table = read_table(path, "manifest")
    except UsageError as exc:  # the same problem, reported as a dataset error (exit 2 too)
        raise DatasetError(str(exc)) from None
    records = [_record(row) for row in table.rows]
    return pd.DataFrame.from_records(records, columns=[*table.columns, "input_error"]).fillna("")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN")
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def value_problem(key: str, value: Any) -> str:
    """Why a manifest value cannot be a path or a text ("" when it can), worded as
    ``humanclap score`` words it (``scoring.rows.row_problem``; the data layer cannot import
    it, so tests/test_hostile_inputs.py keeps the two equal)."""
    return "" if isinstance(value, str) else f"'{key}' must be a string, got {_json_type(value)}"


def _record(row: dict[str, Any]) -> dict[str, str]:
    """One manifest row as strings, with ``input_error`` for a non-string audio or text;
    such a value is shown as JSON, never as its Python repr."""
    out = {k: "" if v is None else str(v) for k, v in row.items()}
    problems = [value_problem(k, row[k]) for k in ("audio", "text") if k in row]
    out["input_error"] = next((p for p in problems if p), "")
    for key in ("audio", "text"):
        if key in row and not isinstance(row[key], str):
            out[key] = json.dumps(row[key], ensure_ascii=False, default=str)
    return out


def _pair_problems(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The first ``input_error`` of each pair's rows ("" when none has one)."""
    first = df.groupby([df["audio"], df["text"]], sort=False)["input_error"].agg(
        lambda errors: next((e for e in errors if e), "")
    )
    return first.reset_index().rename(columns={"audio": "wavname"})[[*keys, "input_error"]]


def _per_pair(df: pd.DataFrame, col: str, default: str, path: Path) -> pd.DataFrame:
    """The one value of ``col`` per (audio, text) pair (blank cells ignored); an error if
    a pair's rows disagree."""
    values = df[col].str.strip().replace("", np.nan)
    grouped = values.groupby([df["audio"], df["text"]], sort=False)
    n_values = grouped.nunique()
    if (n_values > 1).any():
        audio, text = n_values[n_values > 1].index[0]
        raise DatasetError(
            f"{path}: rows for ({audio!r}, {text!r}) disagree on {col!r}; all ratings of one pair must share it."
        )
    out = grouped.first().fillna(default).rename(col).reset_index()
    return out.rename(columns={"audio": "wavname"})


def _to_bool(value: object, path: Path) -> object:
    s = str(value).strip().lower()
    if s in ("", "nan", "none"):
        return np.nan
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    raise DatasetError(f"{path}: 'natural' value {value!r} is not true/false.")
