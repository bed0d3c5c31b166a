"""RELATE (Kanamori et al., Interspeech 2025): text-audio relevance ratings, 0-10 scale.

Release layout::

    DIR/scores/REL.csv                  one row per (pair, listener): REL (overall relevance)
    DIR/scores/IS.csv, OS.csv           inclusion / order of sound events (optional here)
    DIR/listener_attributes/REL.csv     questionnaire answers of the REL listeners (optional)
    RELATE_wave/<system>/<train|test>/<id>.wav   audio, DIR/RELATE_wave or ``audio_root``

Decisions (each checked against the real CSVs):

* Screening: rows whose ``in RELATE dataset`` is ``excluded`` are dropped (anchors and
  screened listeners), as the dataset README does. The release also keeps 14 rows
  (3 pairs) with ``anchor label == True`` inside train/validation; they are drop-in
  anchors (mismatched text, scores near 0), so they are dropped too by default
  (``drop_anchors=True``). The README's statistics (2,862 train pairs, 9,963 train
  ratings) count without them.
* ``system`` is the first folder of ``wavname``: ``audio type`` says ``audioldm`` for
  AudioLDM2 and ``tango`` for Tango2. ``natural`` is ``audio type == "natural"``.
* ``split`` is ``in RELATE dataset`` (train / validation / test); the folder in
  ``wavname`` is the AudioCaps split, not RELATE's.
* ``is_score`` / ``os_score`` are per-pair means on 0-1 of IS.csv / OS.csv joined on
  (wavname, text), NaN where the pair has none. Those files carry no screening column,
  so only their anchor rows are dropped: unlike REL they include every listener.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from humanclap.data.rated import (
    DatasetError,
    RatedPairs,
    build_rated_pairs,
    check_range,
    exists_column,
    make_pair_id,
    read_csv_str,
    require_columns,
    require_file,
    to_scores,
)

log = logging.getLogger(__name__)

SYSTEMS = ("audiocaps", "audioldm", "audioldm2", "tango", "tango2")
REL_COLUMNS = ["wavname", "text", "score", "listener_id", "audio type", "anchor label", "in RELATE dataset"]
ASPECT_COLUMNS = ["wavname", "text", "score", "anchor label"]
# Questionnaire (dataset README): answers are option numbers from 1 (leftmost option),
# except the three country questions, which are names.
ATTRIBUTE_NAMES = {
    "question1": "age",
    "question2": "gender",
    "question3": "nationality",
    "question4": "birthplace",
    "question5": "residence",
    "question6": "n_past_tests",
    "question7": "last_test",
    "question8": "repeats",
    "question9": "device",
    "question10": "environment",
    "question11": "difficulty",
    "question12": "audio_expert",
}
_COUNTRY_ATTRIBUTES = {"nationality", "birthplace", "residence"}


def load_relate(root: str | Path, audio_root: str | Path | None = None, drop_anchors: bool = True) -> RatedPairs:
    """Load RELATE's REL ratings (plus IS/OS means and listener attributes if present).

    ``audio_root`` may be the ``RELATE_wave`` folder or its parent; by default
    ``DIR/RELATE_wave`` (or a ``RELATE_wave`` next to DIR) is used. Pairs whose audio is
    missing are kept with ``audio_exists == False``.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"RELATE folder not found: {root}. Pass relate:DIR where DIR holds scores/REL.csv.")
    rel_path = require_file(root / "scores" / "REL.csv", "RELATE scores/REL.csv")
    rel = read_csv_str(rel_path)
    require_columns(rel, REL_COLUMNS, rel_path)

    keep = rel["in RELATE dataset"].str.strip().str.lower() != "excluded"
    n_excluded = int((~keep).sum())
    if drop_anchors:
        anchors = keep & (rel["anchor label"].str.strip().str.lower() == "true")
        keep &= ~anchors
        log.info("RELATE: dropped %d anchor rows left in the splits", int(anchors.sum()))
    log.info("RELATE: dropped %d 'excluded' rows (anchors, screened listeners)", n_excluded)
    rel = rel[keep].reset_index(drop=True)
    if rel.empty:
        raise DatasetError(f"{rel_path}: no rows left after screening; is this the REL file?")

    scores = to_scores(rel["score"], rel_path, "score")
    check_range(scores, 0, 10, rel_path, "score")
    rows = pd.DataFrame(
        {
            "wavname": rel["wavname"],
            "text": rel["text"],
            "listener_id": rel["listener_id"].astype(str),
            "score01": scores / 10.0,
        }
    )

    keys = ["wavname", "text"]
    splits_per_pair = rel.groupby(keys, sort=False)["in RELATE dataset"].nunique()
    if (splits_per_pair > 1).any():
        bad = splits_per_pair[splits_per_pair > 1].index[0]
        raise DatasetError(f"{rel_path}: pair {bad} is in several splits; the file is inconsistent.")
    info = rel.drop_duplicates(keys)[keys + ["audio type", "in RELATE dataset"]]
    info = info.rename(columns={"audio type": "audio_type", "in RELATE dataset": "split"})
    info = info.reset_index(drop=True)
    info["split"] = info["split"].str.strip().str.lower()
    info["system"] = info["wavname"].map(_system_of)
    info["natural"] = info["audio_type"].str.strip().str.lower() == "natural"
    info["pair_id"] = [make_pair_id(w.rsplit(".", 1)[0], t) for w, t in zip(info["wavname"], info["text"])]

    base = _audio_base(root, audio_root)
    info["audio"] = [str(base / w.lstrip("/")) for w in info["wavname"]]
    info["audio_exists"] = exists_column(info["audio"])
    n_missing = int((~info["audio_exists"]).sum())
    if n_missing:
        log.warning("RELATE: %d of %d pairs have no audio file under %s", n_missing, len(info), base)

    for aspect in ("IS", "OS"):
        info[f"{aspect.lower()}_score"] = _aspect_means(root / "scores" / f"{aspect}.csv", info[keys])
    attributes = _listener_attributes(root / "listener_attributes" / "REL.csv")
    return build_rated_pairs("relate", rows, keys, info, attributes)


def _system_of(wavname: str) -> str:
    parts = wavname.strip("/").split("/")
    return parts[0] if len(parts) > 1 else ""


def _audio_base(root: Path, audio_root: str | Path | None) -> Path:
    """The folder that holds <system>/<train|test>/<id>.wav."""
    if audio_root is not None:
        given = Path(audio_root).expanduser().resolve()
        candidates = [given, given / "RELATE_wave"]
    else:
        candidates = [root / "RELATE_wave", root.parent / "RELATE_wave"]
    for c in candidates:
        if any((c / s).is_dir() for s in SYSTEMS):
            return c
    if audio_root is not None:
        log.warning(
            "RELATE: %s holds none of the system folders %s; pass the RELATE_wave folder as audio_root",
            candidates[0],
            list(SYSTEMS),
        )
    return candidates[0]


def _aspect_means(path: Path, pair_keys: pd.DataFrame) -> pd.Series:
    """Per-pair mean on 0-1 of IS.csv or OS.csv, aligned to ``pair_keys``; NaN if absent."""
    if not path.is_file():
        log.info("RELATE: %s not found; its column will be NaN", path)
        return pd.Series(float("nan"), index=pair_keys.index)
    df = read_csv_str(path)
    require_columns(df, ASPECT_COLUMNS, path)
    df = df[df["anchor label"].str.strip().str.lower() != "true"]
    scores = to_scores(df["score"], path, "score")
    check_range(scores, 0, 10, path, "score")
    means = (
        pd.DataFrame({"wavname": df["wavname"].to_numpy(), "text": df["text"].to_numpy(), "s": scores / 10.0})
        .groupby(["wavname", "text"], sort=False)["s"]
        .mean()
        .rename("mean")
        .reset_index()
    )
    return pair_keys.merge(means, on=["wavname", "text"], how="left")["mean"].set_axis(pair_keys.index)


def _listener_attributes(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        log.info("RELATE: %s not found; ratings carry no listener attributes", path)
        return None
    df = read_csv_str(path)
    require_columns(df, ["listener_id"], path)
    df = df.rename(columns=ATTRIBUTE_NAMES)
    for col in df.columns:
        if col in ATTRIBUTE_NAMES.values() and col not in _COUNTRY_ATTRIBUTES:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    return df.drop_duplicates("listener_id")
