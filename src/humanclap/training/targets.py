"""What the training split learns from: per-pair targets on 0-1 derived from the
per-listener ratings (``RatedPairs.ratings``), and listener screening.

Evaluation never uses these: validation and test metrics are always against the raw mean
human score of the held-out pairs (``pairs.human``), as in the paper. Everything here is
computed from the training split's ratings only, and is deterministic.

* ``mean`` (default): the pair's mean rating (``pairs.human``), unchanged; with screening,
  the mean of the ratings of the listeners kept.
* ``listener-z`` (SPO-CLAPScore's per-listener standardisation): each listener *l* with at
  least ``min_ratings`` training ratings and a non-zero spread gets
  ``z = (r - m_l) / s_l`` (their own mean and population std over their training
  ratings), mapped back to the 0-1 scale with the training panel's mean and population
  std over all kept training ratings, ``r' = mu + sigma z``: each listener is re-expressed
  as if they had the panel's typical bias and spread. Listeners with fewer ratings (or
  all equal ones) keep their raw scores ``r' = r``, which are already on that scale (said
  in the log). The target is the pair's mean ``r'``, clipped to [0, 1] (wSCE weights and
  the CLAPScore regressions need that range; the number clipped is reported).
* Screening (``threshold``): a listener's agreement is the SRCC between their ratings and
  the leave-one-out mean of the other listeners' ratings over the shared training pairs
  (pairs that someone else rated too); listeners below the threshold are dropped, in one
  pass (the others' means include every other listener). Listeners with fewer than
  :data:`MIN_SHARED_PAIRS` shared pairs, or an undefined SRCC (constant ratings), cannot
  be judged and are kept. A training pair left without ratings is dropped from training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from humanclap.errors import ConfigError
from humanclap.evaluation.metrics import srcc

log = logging.getLogger(__name__)

MIN_SHARED_PAIRS = 5  # screening: an SRCC over fewer pairs says too little to drop anyone
EVALUATION_NOTE = "validation and test metrics are against the raw mean human score per pair"


@dataclass
class TrainingTargets:
    """Targets of the training pairs (``values``: float, indexed by ``pair_id``; training
    pairs absent from it have no rating left and are not trained on) and a JSON-safe
    record of how they were made (``report``, written to ``metrics.json``)."""

    values: pd.Series
    report: dict = field(default_factory=dict)


def training_targets(
    rated, split: str, kind: str = "mean", screen: float | None = None, min_ratings: int = 5, data_name: str = ""
) -> TrainingTargets:
    """The targets of ``rated``'s ``split`` pairs (see the module docstring).

    Raises ConfigError when ``listener-z`` or screening is asked of data without
    per-listener ratings (no ``listener_id``)."""
    pairs = rated.pairs[rated.pairs["split"] == split]
    report: dict = {"kind": kind, "evaluation": EVALUATION_NOTE}
    if kind == "mean" and screen is None:
        return TrainingTargets(pd.Series(pairs["human"].to_numpy(dtype=float), index=pairs["pair_id"]), report)
    ratings = listener_ratings(rated.ratings, set(pairs["pair_id"]), kind, screen, data_name)
    report.update(train_pairs=len(pairs), train_ratings=len(ratings), listeners=int(ratings["listener_id"].nunique()))
    if screen is not None:
        ratings, report["screening"] = screen_listeners(ratings, screen)
    if kind == "listener-z":
        ratings, z_report = standardise(ratings, min_ratings)
        report.update(z_report)
    values = ratings.groupby("pair_id", sort=False)["score01"].mean().round(12)
    clipped = int(((values < 0) | (values > 1)).sum())
    if kind == "listener-z":
        report["clipped_to_0_1"] = clipped
    values = values.clip(0.0, 1.0)
    values = values.reindex([p for p in pairs["pair_id"] if p in values.index])
    report["pairs_without_ratings"] = len(pairs) - len(values)
    if report["pairs_without_ratings"]:
        log.warning(
            "training targets: %d training pair(s) have no rating left after screening; they are not trained on",
            report["pairs_without_ratings"],
        )
    return TrainingTargets(values.astype(float), report)


def listener_ratings(
    ratings: pd.DataFrame, pair_ids: set, kind: str, screen: float | None, data_name: str = ""
) -> pd.DataFrame:
    """The training pairs' rating rows (``pair_id``, ``listener_id`` str, ``score01``);
    ConfigError when they carry no listener ids."""
    what = "--targets listener-z" if kind == "listener-z" else "--screen-listeners"
    rows = ratings[ratings["pair_id"].isin(pair_ids)][["pair_id", "listener_id", "score01"]]
    rows = rows.assign(listener_id=rows["listener_id"].astype(str))
    unknown = int((rows["listener_id"].str.strip() == "").sum())
    if rows.empty or unknown:
        detail = (
            "it has per-pair averages only"
            if rows.empty
            else f"{unknown} of {len(rows)} training ratings have no listener_id"
        )
        raise ConfigError(
            f"{what} needs per-listener ratings (a listener_id on every rating), but "
            f"{data_name or 'the dataset'}: {detail}. Use --targets mean without "
            "--screen-listeners, or add a listener_id column to the manifest."
        )
    return rows.reset_index(drop=True)


def listener_agreement(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per listener: ``shared_pairs`` (pairs someone else rated too) and ``agreement``, the
    SRCC of their ratings with the leave-one-out mean of the others there (NaN when
    undefined: fewer than 3 pairs or constant ratings)."""
    per = ratings.groupby(["pair_id", "listener_id"], sort=False)["score01"].agg(["sum", "count"])
    per = per.reset_index()
    totals = per.groupby("pair_id", sort=False)[["sum", "count"]].transform("sum")
    others = totals["count"] - per["count"]
    per = per.assign(own=per["sum"] / per["count"], others=(totals["sum"] - per["sum"]) / others.where(others > 0))
    shared = per[others > 0]
    rows = []
    for listener, group in shared.groupby("listener_id", sort=True):
        try:
            value = srcc(group["own"].to_numpy(), group["others"].to_numpy())
        except ValueError:  # fewer than 3 pairs, or constant ratings on both sides
            value = float("nan")
        rows.append((listener, len(group), value))
    out = pd.DataFrame(rows, columns=["listener_id", "shared_pairs", "agreement"])
    alone = sorted(set(ratings["listener_id"]) - set(out["listener_id"]))
    lone = pd.DataFrame({"listener_id": alone, "shared_pairs": 0, "agreement": float("nan")})
    return pd.concat([out, lone], ignore_index=True) if alone else out


def screen_listeners(
    ratings: pd.DataFrame, threshold: float, min_shared: int = MIN_SHARED_PAIRS
) -> tuple[pd.DataFrame, dict]:
    """Drop the listeners whose agreement is below ``threshold`` (see the module docstring);
    the kept rows and a record of who was dropped and why."""
    agree = listener_agreement(ratings)
    judged = agree[(agree["shared_pairs"] >= min_shared) & agree["agreement"].notna()]
    dropped = judged[judged["agreement"] < threshold]
    keep = ~ratings["listener_id"].isin(set(dropped["listener_id"]))
    report = {
        "threshold": threshold,
        "agreement": "SRCC with the leave-one-out mean of the other listeners on shared training pairs",
        "min_shared_pairs": min_shared,
        "judged": len(judged),
        "not_judged": len(agree) - len(judged),
        "dropped": [
            {
                "listener_id": str(r.listener_id),
                "agreement": round(float(r.agreement), 6),
                "shared_pairs": int(r.shared_pairs),
            }
            for r in dropped.itertuples()
        ],
        "ratings_dropped": int((~keep).sum()),
    }
    log.info(
        "listener screening: %d of %d listeners judged (>= %d shared pairs), %d dropped (SRCC < %g): %s",
        len(judged),
        len(agree),
        min_shared,
        len(dropped),
        threshold,
        ", ".join(f"{d['listener_id']} ({d['agreement']:.3f}, {d['shared_pairs']} pairs)" for d in report["dropped"])
        or "none",
    )
    return ratings[keep].reset_index(drop=True), report


def standardise(ratings: pd.DataFrame, min_ratings: int) -> tuple[pd.DataFrame, dict]:
    """Replace each rating by ``mu + sigma z`` (listener-z, see the module docstring); rows
    of listeners with fewer than ``min_ratings`` ratings or zero spread stay raw."""
    scores = ratings["score01"].to_numpy(dtype=float)
    mu, sigma = float(scores.mean()), float(scores.std())
    by = ratings.groupby("listener_id", sort=False)["score01"]
    mean, std, count = by.transform("mean"), by.transform(lambda s: s.std(ddof=0)), by.transform("size")
    usable = (count >= min_ratings) & (std > 0)
    z = (ratings["score01"] - mean) / std.where(usable, 1.0)
    mapped = np.where(usable, mu + sigma * z, ratings["score01"])
    raw = sorted(set(ratings.loc[~usable, "listener_id"]))
    if raw:
        log.info(
            "listener-z: %d of %d listeners keep their raw scores (fewer than %d training "
            "ratings, or all ratings equal): %s",
            len(raw),
            ratings["listener_id"].nunique(),
            min_ratings,
            ", ".join(raw[:20]) + (" ..." if len(raw) > 20 else ""),
        )
    report = {
        "min_listener_ratings": min_ratings,
        "z_scored_listeners": int(ratings.loc[usable, "listener_id"].nunique()),
        "raw_listeners": raw,
        "panel_mean": round(mu, 6),
        "panel_std": round(sigma, 6),
    }
    return ratings.assign(score01=mapped), report
