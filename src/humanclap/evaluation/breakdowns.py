"""Metrics per group of a pairs table: overall, natural vs synthesized, per system, per
caption category, and the system-level summary (a TTA benchmark ranks systems, not clips).

The groups are read from a ``RatedPairs.pairs`` frame (rows aligned with the
predictions); the numbers come from the array functions of
:mod:`humanclap.evaluation.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from humanclap.data.categories import CATEGORIES, categories_of
from humanclap.errors import UsageError
from humanclap.evaluation.metrics import MIN_PAIRS, ArrayLike, as_1d, evaluate_all, ktau, lcc, srcc, system_level

SUBSETS = ("overall", "natural", "synthesized")


def natural_masks(pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(natural, synthesized)`` row masks from the ``natural`` column.

    Only a real boolean counts: a row whose natural-ness is unknown (NaN, "", no column at
    all, as in XACLE) is in neither group, rather than guessed into one."""
    n = len(pairs)
    if "natural" not in pairs:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    nat = pairs["natural"].to_numpy(dtype=object)
    is_true = np.array([v is True or v is np.True_ for v in nat], dtype=bool)
    is_false = np.array([v is False or v is np.False_ for v in nat], dtype=bool)
    return is_true, is_false


def subset_mask(pairs: Any, name: str) -> np.ndarray:
    """Rows of the subset ``name``: "overall" (every row), "natural" or "synthesized"."""
    if name == "overall":
        return np.ones(len(pairs), dtype=bool)
    if name not in SUBSETS:
        raise UsageError(f"unknown subset {name!r}; use one of {', '.join(SUBSETS)}")
    natural, synthesized = natural_masks(pairs)
    return natural if name == "natural" else synthesized


def breakdowns(
    pairs: Any,
    pred: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    target: str = "human",
    min_n: int = MIN_PAIRS,
    categories: bool = True,
) -> dict[str, dict[str, Any]]:
    """:func:`~humanclap.evaluation.metrics.evaluate_all` overall and per group of ``pairs``
    (a RatedPairs.pairs frame, rows aligned with ``pred``): ``overall``, ``natural``,
    ``synthesized`` (where ``natural`` is known), ``system:<name>``, ``category:<name>``
    (caption categories, :mod:`humanclap.data.categories`). Groups with fewer than
    ``min_n`` pairs report only ``n`` and ``skipped``. Pairs whose ``target`` is NaN
    (e.g. ``is_score``) are left out.
    """
    p = as_1d(pred, "pred")
    if len(p) != len(pairs):
        raise UsageError(
            f"breakdowns: {len(p)} predictions for {len(pairs)} pairs; pass one"
            " prediction per row of pairs, in the same order."
        )
    t_all = np.asarray(pairs[target], dtype=np.float64)
    known = np.isfinite(t_all)
    groups: dict[str, np.ndarray] = {"overall": subset_mask(pairs, "overall")}
    natural, synthesized = natural_masks(pairs)
    if (natural | synthesized).any():
        groups["natural"], groups["synthesized"] = natural, synthesized
    if "system" in pairs:
        sys_arr = pairs["system"].fillna("").astype(str).to_numpy()
        for name in sorted(set(sys_arr) - {""}):
            groups[f"system:{name}"] = sys_arr == name
    if categories and "text" in pairs:
        cats = [set(categories_of(str(x))) for x in pairs["text"]]
        for name in CATEGORIES:
            groups[f"category:{name}"] = np.array([name in c for c in cats], dtype=bool)
    out = {}
    for name, mask in groups.items():
        mask = mask & known
        n = int(mask.sum())
        if n < min_n:
            out[name] = {"n": n, "skipped": f"fewer than {min_n} pairs"}
        else:
            out[name] = evaluate_all(p[mask], t_all[mask], n_boot=n_boot, seed=seed, level=level)
    return out


def system_level_summary(pairs: Any, pred: np.ndarray) -> dict[str, Any]:
    """Correlations between per-system mean prediction and mean human score, with the
    means themselves. Pairs without a system name are left out."""
    if "system" not in pairs:
        return {"n_systems": 0, "note": "the data names no systems"}
    systems = pairs["system"].fillna("").astype(str).to_numpy()
    human = pairs["human"].to_numpy(float)
    known = systems != ""
    names = sorted(set(systems[known]))
    out: dict[str, Any] = {
        "n_systems": len(names),
        "means": {
            s: {
                "pred": float(pred[systems == s].mean()),
                "human": float(human[systems == s].mean()),
                "n": int((systems == s).sum()),
            }
            for s in names
        },
    }
    if len(names) < MIN_PAIRS:
        # One note, not three copies of "srcc needs at least 3 pairs": the count that is
        # short here is systems (with at least one scored pair), not pairs.
        out.update(
            srcc=None,
            lcc=None,
            ktau=None,
            notes=[f"fewer than {MIN_PAIRS} systems with scored pairs ({len(names)}): no system-level correlation"],
        )
        return out
    for name, metric in (("srcc", srcc), ("lcc", lcc), ("ktau", ktau)):
        try:
            out[name] = system_level(pred[known], human[known], systems[known], metric=metric)
        except ValueError as exc:
            out[name] = None
            out.setdefault("notes", []).append(str(exc))
    return out
