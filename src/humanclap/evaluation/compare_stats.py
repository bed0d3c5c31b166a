"""Comparing systems on shared prompts: pure functions on a ``(systems, prompts)`` matrix.

Every system is scored on the same prompts, so the prompt is the unit of resampling. One
bootstrap resample matrix (``n_boot`` draws of the prompts, as per-prompt counts) is shared
by every system: a pair's difference is resampled *paired*, on the same prompts. Means of
all systems on all resamples are one matrix product, ``counts @ values.T / n``.

* per system: the mean with a percentile bootstrap CI over prompts (none with one prompt);
* per pair: the paired mean difference, its percentile CI, the two-sided bootstrap
  p-value ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` with ``P*(.) = (count + 1) / (B + 1)``
  (the convention of :func:`humanclap.evaluation.metrics.paired_bootstrap`: never 0, the
  smallest is ``2 / (B + 1)``, exactly 1 for identical systems), Holm-adjusted across all
  pairs (:func:`holm`), and the per-prompt win rate with ties counted as half a win;
* tiers (:func:`assign_tiers`): greedy from the top of the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from humanclap.evaluation.metrics import ktau, srcc

ROUNDING = 1e-12  # relative size below which a resampled difference is floating-point noise
RESAMPLE_CHUNK = 1000  # resamples drawn per step: memory stays chunk x prompts, same draws

TIER_RULE = (
    "Systems are ranked by mean (ties by name). Tier 1 starts at the top system; "
    "going down the ranking, a system joins the current tier while its Holm-adjusted "
    "p-value against the tier's top system is >= alpha (not significantly different, "
    "or undefined); the first system that differs significantly from the tier's top "
    "starts the next tier, and the rule repeats from it. Tiers are contiguous in the "
    "ranking."
)


def chunk_rows(n: int) -> int:
    """Resamples drawn per step for ``n`` items: at most :data:`RESAMPLE_CHUNK`, and few
    enough that one step holds about 4 million counts (memory bounded whatever ``n``). A
    function of ``n`` alone, so the same ``(n, n_boot, seed)`` always gives the same draws."""
    return max(1, min(RESAMPLE_CHUNK, 4_000_000 // n))


def iter_resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of :func:`resample_counts`, :func:`chunk_rows` at a time."""
    if n < 1:
        raise ValueError(f"resample_counts needs at least one item; got n={n}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}.")
    rng = np.random.default_rng(seed)
    step = chunk_rows(n)
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n))
        flat = idx + (np.arange(rows) * n)[:, None]
        yield np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` counts: how often each of ``n`` items is drawn in each bootstrap
    resample (``n`` draws with replacement from ``numpy.random.default_rng(seed)``, drawn
    :func:`chunk_rows` resamples at a time); every row sums to ``n``.

    >>> resample_counts(3, 2, 0).sum(axis=1).tolist()
    [3.0, 3.0]
    """
    return np.concatenate(list(iter_resample_counts(n, n_boot, seed)))


def bootstrap_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(n_boot, systems)``: each system's mean on each resample of ``counts``
    (:func:`resample_counts`); ``values`` is ``(systems, prompts)``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or counts.ndim != 2 or values.shape[1] != counts.shape[1]:
        raise ValueError(
            f"values {values.shape} and counts {counts.shape} must share the prompt "
            "axis: values (systems, prompts), counts (n_boot, prompts)."
        )
    return counts @ values.T / values.shape[1]


def seeded_bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """:func:`bootstrap_means` on ``resample_counts(prompts, n_boot, seed)``, computed chunk by
    chunk: the whole count matrix is never held (100,000 prompts x 10,000 resamples would
    be 8 GB)."""
    values = np.asarray(values, dtype=np.float64)
    return np.concatenate([bootstrap_means(values, c) for c in iter_resample_counts(values.shape[1], n_boot, seed)])


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0 (the resamples) at ``level``: ``(low, high)``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95); got {level}.")
    alpha = (1 - level) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return low, high


def bootstrap_p(diffs: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of resampled differences along axis 0 (see the module
    docstring): ``min(1, 2 min((#d<=0 + 1)/(B+1), (#d>=0 + 1)/(B+1)))``.

    >>> float(bootstrap_p(np.zeros(9)))
    1.0
    >>> round(float(bootstrap_p(np.ones(9))), 3)
    0.2
    """
    d = np.asarray(diffs, dtype=np.float64)
    b = d.shape[0]
    below = (np.sum(d <= 0, axis=0) + 1) / (b + 1)
    above = (np.sum(d >= 0, axis=0) + 1) / (b + 1)
    return np.minimum(1.0, 2 * np.minimum(below, above))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order. ``None`` (an undefined test)
    stays ``None`` and does not count among the ``m`` tests.

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``.

    >>> holm([0.01, 0.04, 0.03, 0.005])
    [0.03, 0.06, 0.06, 0.02]
    """
    defined = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(defined)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(defined, key=lambda t: (t[0], t[1]))):
        if not 0 <= p <= 1:
            raise ValueError(f"p-values must be in [0, 1]; got {p} at index {i}.")
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def win_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """``(wins, ties, losses)`` of system ``a`` against ``b`` over paired prompts (a tie is
    exact equality of the two scores, e.g. both clipped to CLAPScore 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return int(np.sum(a > b)), int(np.sum(a == b)), int(np.sum(a < b))


def win_rate_matrix(values: np.ndarray) -> np.ndarray:
    """``(systems, systems)``: ``W[i, j]`` = share of prompts on which system i scores higher
    than j, a tie counting as half a win (so ``W[i, j] + W[j, i] = 1``; the diagonal is 0.5)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.empty((len(v), len(v)))
    for i in range(len(v)):  # one row at a time: systems x prompts memory, not systems^2
        w[i] = (v[i] > v).mean(axis=1) + 0.5 * (v[i] == v).mean(axis=1)
    return w


def ranking_order(means: Sequence[float], names: Sequence[str]) -> list[int]:
    """Indices of the systems from the highest mean down; equal means by name (means equal
    to 12 significant digits count as equal: the same scores summed in another order may
    differ in the last bit)."""
    return sorted(range(len(names)), key=lambda i: (-float(f"{float(means[i]):.12g}"), str(names[i])))


def assign_tiers(
    order: Sequence[int], adjusted: dict[tuple[int, int], float | None], alpha: float = 0.05
) -> dict[int, int]:
    """Tier (1, 2, ...) of each system by :data:`TIER_RULE`. ``order``: the ranking
    (:func:`ranking_order`); ``adjusted[(i, j)]`` (either order): the Holm-adjusted p of the
    pair, None when undefined (then the two share a tier)."""
    tiers: dict[int, int] = {}
    tier, top = 0, None
    for i in order:
        p = None if top is None else adjusted.get((top, i), adjusted.get((i, top)))
        if top is None or (p is not None and p < alpha):
            tier, top = tier + 1, i
        tiers[i] = tier
    return tiers


def ranking_agreement(metric_means: Sequence[float], human_means: Sequence[float]) -> dict[str, Any]:
    """How well a metric's system ranking agrees with the listeners': system-level SRCC and
    Kendall tau-b (:mod:`humanclap.evaluation.metrics`; None with a note when undefined:
    fewer than 3 systems or a constant input), and the pairwise ranking accuracy: over the
    pairs of systems that listeners do not tie, the share the metric orders the same way,
    a metric tie counting as half."""
    m = np.asarray(metric_means, dtype=np.float64)
    h = np.asarray(human_means, dtype=np.float64)
    out: dict[str, Any] = {"n_systems": len(m), "notes": []}
    for name, fn in (("srcc", srcc), ("ktau", ktau)):
        try:
            out[name] = fn(m, h)
        except ValueError as exc:
            out[name] = None
            out["notes"].append(f"{name}: {exc}")
    credit, pairs = 0.0, 0
    for i in range(len(m)):
        for j in range(i + 1, len(m)):
            dh = np.sign(h[i] - h[j])
            if dh == 0:
                continue
            dm = np.sign(m[i] - m[j])
            pairs += 1
            credit += 1.0 if dm == dh else 0.5 if dm == 0 else 0.0
    out["pairwise_accuracy"] = credit / pairs if pairs else None
    out["pairs_compared"] = pairs
    return out


@dataclass
class SystemComparison:
    """Everything :func:`compare_matrix` finds; lists of systems are in ranking order."""

    names: list[str]
    n_prompts: int
    n_boot: int
    seed: int
    level: float
    alpha: float
    systems: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    win_rates: list[list[float]] = field(default_factory=list)  # ranking order x ranking order
    notes: list[str] = field(default_factory=list)

    @property
    def ranking(self) -> list[str]:
        return [s["system"] for s in self.systems]

    @property
    def tiers(self) -> list[list[str]]:
        out: list[list[str]] = []
        for s in self.systems:
            if len(out) < s["tier"]:
                out.append([])
            out[s["tier"] - 1].append(s["system"])
        return out


def compare_matrix(
    values: np.ndarray,
    names: Sequence[str],
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
) -> SystemComparison:
    """Compare the systems whose scores are the rows of ``values`` (``(systems, prompts)``,
    the same prompts in the same columns): means with CIs, every pair's paired difference,
    bootstrap p (Holm-adjusted), win rates, the ranking and its tiers.

    The resamples are a function of (prompts, ``n_boot``, ``seed``): two matrices of the
    same prompts compared with the same seed (the metric's scores and the listeners'
    ratings) share them. With one prompt no interval or p-value is defined: they are None,
    with a note.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != len(names):
        raise ValueError(
            f"values must be (systems, prompts) with one row per name; got shape {v.shape} for {len(names)} names."
        )
    if v.shape[1] < 1 or not np.all(np.isfinite(v)):
        raise ValueError("values must hold at least one prompt and only finite numbers.")
    s_n, p_n = v.shape
    res = SystemComparison(list(map(str, names)), p_n, n_boot, seed, level, alpha)
    means = v.mean(axis=1)
    boot = None
    if p_n > 1 and n_boot > 0:
        boot = seeded_bootstrap_means(v, n_boot, seed)
    elif p_n == 1:
        res.notes.append(
            "one prompt only: no confidence interval and no p-value (a bootstrap over one prompt has no spread)"
        )
    else:
        res.notes.append("n_boot = 0: no confidence intervals and no p-values")
    scale = max(1.0, float(np.abs(v).max()))
    low = high = None
    if boot is not None:
        low, high = percentile_interval(boot, level)
    order = ranking_order(means, res.names)
    raw: dict[tuple[int, int], float | None] = {}
    pair_rows = []
    for x, i in enumerate(order):
        for j in order[x + 1 :]:
            d = v[i] - v[j]
            row: dict[str, Any] = {
                "a": res.names[i],
                "b": res.names[j],
                "diff": float(d.mean()),
                "ci_low": None,
                "ci_high": None,
                "p": None,
            }
            if boot is not None:
                bd = boot[:, i] - boot[:, j]
                # A resample whose difference is 0 in exact arithmetic comes out as +-1e-17
                # (the two means are rounded apart): count it as the tie it is.
                bd[np.abs(bd) <= ROUNDING * scale] = 0.0
                lo, hi = percentile_interval(bd, level)
                row.update(ci_low=float(lo), ci_high=float(hi), p=float(bootstrap_p(bd)))
            wins, ties, losses = win_counts(v[i], v[j])
            row.update(wins=wins, ties=ties, losses=losses, win_rate=(wins + 0.5 * ties) / p_n)
            raw[(i, j)] = row["p"]
            pair_rows.append(((i, j), row))
    adjusted_list = holm([r["p"] for _, r in pair_rows])
    adjusted = {}
    for (key, row), p_adj in zip(pair_rows, adjusted_list):
        row["p_holm"] = p_adj
        row["significant"] = p_adj is not None and p_adj < alpha
        adjusted[key] = p_adj
        res.pairs.append(row)
    tiers = assign_tiers(order, adjusted, alpha)
    for rank, i in enumerate(order, 1):
        res.systems.append(
            {
                "system": res.names[i],
                "rank": rank,
                "tier": tiers[i],
                "mean": float(means[i]),
                "n_prompts": p_n,
                "ci_low": None if low is None else float(low[i]),
                "ci_high": None if high is None else float(high[i]),
            }
        )
    w = win_rate_matrix(v)
    res.win_rates = [[float(w[i, j]) for j in order] for i in order]
    if boot is not None and len(pair_rows) > 1 and 2 / (n_boot + 1) * len(pair_rows) >= alpha:
        res.notes.append(
            f"with {n_boot} resamples the smallest p is {2 / (n_boot + 1):.2g}; Holm "
            f"over {len(pair_rows)} pairs cannot go below alpha {alpha}: raise --n-boot"
        )
    return res
