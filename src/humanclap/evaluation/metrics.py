"""Agreement between predicted relevance and human ratings: SRCC, LCC, KTAU, MSE, with
bootstrap confidence intervals and paired comparisons: pure functions on arrays (the
per-group breakdowns of a pairs table are in :mod:`humanclap.evaluation.breakdowns`).

Point estimates come from ``scipy.stats``. Bootstrap resamples are drawn once as an
``(n_boot, n)`` index matrix from a seeded ``numpy.random.Generator`` and turned into
per-pair counts, so the built-in metrics are evaluated for all resamples at once
(weighted ranks, weighted moments, and Kendall's S = w^T sign-matrix w). Any other metric
function is looped over the very same resamples.

MSE is meant for predictions and targets on the 0-1 scale (CLAPScore and the rescaled
human mean): on RELATE, 0-10 scores would give a number 100x larger than the paper's.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from humanclap.defaults import MAX_N_BOOT
from humanclap.errors import UsageError

log = logging.getLogger(__name__)

ArrayLike = Sequence[float] | np.ndarray
MetricFn = Callable[[ArrayLike, ArrayLike], float]
MIN_PAIRS = 3  # fewer pairs make a correlation meaningless (and tau-b/Spearman degenerate)
_KTAU_MATRIX_MAX_N = 6000  # above this the n x n sign matrix costs more than a loop


def check_count(value: Any, name: str, low: int | None = 0) -> int:
    """``value`` as an int >= ``low`` (None: any int); a bool, a float such as 2.5 or a
    string is a UsageError (``numpy`` would fail on it deep inside, with a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be a whole number (int), got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise UsageError(f"{name} must be >= {low}; got {value}.")
    return int(value)


def check_n_boot(n_boot: Any) -> int:
    """Bootstrap resamples asked for by a user (``--n-boot``): a whole number from 0 (no
    bootstrap) to ``MAX_N_BOOT``; checked at each command's entry, before any output folder
    is made or model loaded (beyond the cap the resamples would not fit in memory)."""
    n_boot = check_count(n_boot, "n_boot", None)
    if n_boot < 0:
        raise UsageError("--n-boot must be 0 or more (0 = no bootstrap CIs)")
    if n_boot > MAX_N_BOOT:
        raise UsageError(
            f"--n-boot {n_boot} is too large: at most {MAX_N_BOOT} resamples (the CIs do not get better beyond that)"
        )
    return n_boot


def check_level(level: Any) -> float:
    """A confidence level strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1 (e.g. 0.95); got {level!r}.")
    return float(level)


def as_1d(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite 1-D float64 array (a torch tensor, a list or any iterator of numbers
    too); a UsageError (a ValueError) naming ``name`` otherwise."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    if isinstance(x, (str, bytes)):  # numpy would read it as a 0-d string array
        raise UsageError(
            f"{name} must be an array of numbers, got the string {x!r:.80}; read the file or column into an array first"
        )
    if isinstance(x, Iterator):  # a generator: numpy would make a 0-d object array of it
        x = list(x)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be numeric; got {type(x).__name__}.") from None
    if arr.ndim != 1:
        raise UsageError(f"{name} must be 1-D (one value per pair); got shape {arr.shape}. Flatten it first.")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise UsageError(
            f"{name} has {int(bad.sum())} NaN/inf value(s) (first at index "
            f"{int(np.flatnonzero(bad)[0])}); drop or fix those pairs first."
        )
    return arr


def _check(pred: ArrayLike, target: ArrayLike, metric: str, correlation: bool = True) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_1d(pred, "pred"), as_1d(target, "target")
    if len(p) != len(t):
        raise UsageError(
            f"{metric}: pred and target differ in length ({len(p)} vs {len(t)}); pass one prediction per rated pair."
        )
    need = MIN_PAIRS if correlation else 1
    if len(p) < need:
        raise UsageError(f"{metric} needs at least {need} pairs; got {len(p)}.")
    if correlation:
        for name, arr in (("pred", p), ("target", t)):
            if arr.min() == arr.max():
                raise UsageError(
                    f"{metric} is undefined: {name} is constant ({arr[0]:g}); a "
                    "correlation needs variation in both inputs."
                )
    return p, t


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank correlation. Ties get their average rank (as ``scipy.stats.spearmanr``).

    >>> round(srcc([0.1, 0.4, 0.35, 0.8], [0.0, 0.5, 0.5, 1.0]), 4)
    0.9487
    """
    p, t = _check(pred, target, "srcc")
    return float(stats.spearmanr(p, t)[0])


def lcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Linear (Pearson) correlation coefficient; ties need no special handling.

    >>> round(lcc([1, 2, 3, 4], [1, 3, 2, 4]), 4)
    0.8
    """
    p, t = _check(pred, target, "lcc")
    return float(stats.pearsonr(p, t)[0])


def ktau(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_pred)(n0 - ties_target)),
    so pairs tied in either input count in neither numerator nor the other's denominator
    (``scipy.stats.kendalltau(variant="b")``). Human means have many ties; tau-b is the
    variant the Human-CLAP paper reports.

    >>> round(ktau([1, 2, 3, 4], [1, 3, 2, 4]), 4)
    0.6667
    """
    p, t = _check(pred, target, "ktau")
    return float(stats.kendalltau(p, t, variant="b")[0])


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean squared error. Use the 0-1 scale for both inputs (see the module docstring).

    >>> mse([0.5, 1.0], [0.0, 1.0])
    0.125
    """
    p, t = _check(pred, target, "mse", correlation=False)
    return float(np.mean((p - t) ** 2))


# ---- bootstrap: every built-in metric over all resamples at once --------------------


class _Resamples:
    """Resample counts ``w`` (n_boot x n) and per-input tie groups, shared by metrics."""

    def __init__(self, idx: np.ndarray, n: int):
        b = idx.shape[0]
        offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
        self.w = np.bincount((idx + offsets).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        self._groups: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def groups(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(group weights per resample (B x G), group index of each item) for ties in x."""
        key = x.tobytes()  # by content: callers pass fresh arrays, ids get reused
        if key not in self._groups:
            order = np.argsort(x, kind="stable")
            xs = x[order]
            new = np.r_[True, xs[1:] != xs[:-1]]
            gid = np.empty(len(x), dtype=np.int64)
            gid[order] = np.cumsum(new) - 1
            gw = np.add.reduceat(self.w[:, order], np.flatnonzero(new), axis=1)
            self._groups[key] = (gw, gid)
        return self._groups[key]

    def varies(self, x: np.ndarray) -> np.ndarray:
        return (self.groups(x)[0] > 0).sum(axis=1) >= 2

    def ranks(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Average rank of each tie group within each resample (as scipy), and sum w r^2."""
        gw, _ = self.groups(x)
        rank = np.cumsum(gw, axis=1) - gw + (gw + 1.0) / 2.0
        return rank, np.einsum("bg,bg,bg->b", gw, rank, rank)


def _boot_srcc(p, t, r: _Resamples):
    # Weighted Pearson of within-resample ranks. The weighted mean rank is (N + 1) / 2
    # in every resample, so only sum w r_p r_t needs the per-item (B x n) pass.
    n_tot = r.w.sum(axis=1)
    (rank_p, sq_p), (rank_t, sq_t) = r.ranks(p), r.ranks(t)
    cross = np.einsum(
        "bi,bi,bi->b", r.w, np.take(rank_p, r.groups(p)[1], axis=1), np.take(rank_t, r.groups(t)[1], axis=1)
    )
    mean_sq = ((n_tot + 1) / 2) ** 2
    cov, vp, vt = cross / n_tot - mean_sq, sq_p / n_tot - mean_sq, sq_t / n_tot - mean_sq
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(cov / np.sqrt(vp * vt), -1.0, 1.0)
    return rho, r.varies(p) & r.varies(t)


def _boot_lcc(p, t, r: _Resamples):
    a, b = p - p.mean(), t - t.mean()  # centring first keeps the moment formula accurate
    w, n_tot = r.w, r.w.sum(axis=1)
    ma, mb = w @ a / n_tot, w @ b / n_tot
    cov = w @ (a * b) / n_tot - ma * mb
    va, vb = w @ (a * a) / n_tot - ma**2, w @ (b * b) / n_tot - mb**2
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(cov / np.sqrt(va * vb), -1.0, 1.0)
    return rho, r.varies(p) & r.varies(t)


def _boot_mse(p, t, r: _Resamples):
    return r.w @ ((p - t) ** 2) / r.w.sum(axis=1), np.ones(len(r.w), dtype=bool)


def _dense_rank(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_inverse=True)[1].astype(np.float32)


def _boot_ktau(p, t, r: _Resamples):
    w = r.w
    n_tot = w.sum(axis=1)
    n0 = n_tot * (n_tot - 1) / 2
    ties = [(g * (g - 1) / 2).sum(axis=1) for g in (r.groups(p)[0], r.groups(t)[0])]
    if len(p) > _KTAU_MATRIX_MAX_N:  # memory/time: fall back to scipy per resample
        s_val = np.empty(len(w))
        for i, row in enumerate(w):
            idx = np.repeat(np.arange(len(p)), row.astype(np.int64))
            den = np.sqrt((n0[i] - ties[0][i]) * (n0[i] - ties[1][i]))
            s_val[i] = stats.kendalltau(p[idx], t[idx])[0] * den if den > 0 else 0.0
    else:
        # S = sum_{i<j} w_i w_j sign(dp) sign(dt) = w^T M w / 2, M built in column blocks
        # from dense ranks. float32 is exact: small integers, and row sums stay < 2^24.
        w32, rp, rt = w.astype(np.float32), _dense_rank(p), _dense_rank(t)
        s_val = np.zeros(len(w))
        step = max(1, (1 << 22) // len(p))
        for j in range(0, len(p), step):
            sl = slice(j, j + step)
            m = np.sign(rp[:, None] - rp[None, sl]) * np.sign(rt[:, None] - rt[None, sl])
            s_val += np.einsum("bj,bj->b", (w32 @ m).astype(np.float64), w[:, sl])
        s_val /= 2
    den = (n0 - ties[0]) * (n0 - ties[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return s_val / np.sqrt(den), den > 0


_BATCHED = {srcc: _boot_srcc, lcc: _boot_lcc, ktau: _boot_ktau, mse: _boot_mse}


def _draw(n: int, n_boot: int, seed: int) -> np.ndarray:
    n_boot, seed = check_count(n_boot, "n_boot", 1), check_count(seed, "seed")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _boot_values(
    metric_fn: MetricFn, p: np.ndarray, t: np.ndarray, idx: np.ndarray, res: _Resamples | None
) -> tuple[np.ndarray, np.ndarray]:
    """(value per resample, usable mask) for one metric on the resamples ``idx``."""
    if metric_fn in _BATCHED:
        return _BATCHED[metric_fn](p, t, res if res is not None else _Resamples(idx, len(p)))
    values, ok = np.full(len(idx), np.nan), np.zeros(len(idx), dtype=bool)
    for i, rows in enumerate(idx):
        try:
            values[i], ok[i] = metric_fn(p[rows], t[rows]), True
        except ValueError:  # degenerate resample (e.g. constant): skipped and counted
            pass
    return values, ok & np.isfinite(values)


def bootstrap_distribution(
    metric_fn: MetricFn, pred: ArrayLike, target: ArrayLike, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Metric values on ``n_boot`` resamples of the pairs, and how many resamples were
    skipped as degenerate (an input constant within the resample)."""
    p, t = _check(pred, target, getattr(metric_fn, "__name__", "metric"), correlation=metric_fn in (srcc, lcc, ktau))
    idx = _draw(len(p), n_boot, seed)
    values, ok = _boot_values(metric_fn, p, t, idx, None)
    return values[ok], int((~ok).sum())


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    level = check_level(level)
    if len(values) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    metric_fn: MetricFn, pred: ArrayLike, target: ArrayLike, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(pred, target)``, resampling pairs.

    Degenerate resamples are skipped (logged); (nan, nan) if all are. Same seed, same
    resamples: intervals of different metrics come from the same draws.
    """
    check_level(level)  # before the resamples are drawn
    values, skipped = bootstrap_distribution(metric_fn, pred, target, n_boot, seed)
    if skipped:
        log.info("bootstrap: skipped %d of %d degenerate resamples", skipped, n_boot)
    return _interval(values, level)


def paired_bootstrap(
    metric_fn: MetricFn,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    target: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    higher_is_better: bool | None = None,
) -> dict[str, Any]:
    """Is system A better than B? Both are scored on the same resamples of the pairs.

    ``diff = metric(a) - metric(b)`` on all pairs, ``low``/``high`` its percentile
    interval, and the two-sided ``p_value = min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` with
    P*(.) = (count + 1) / (resamples + 1), so it is never 0 (smallest 2 / (n_boot + 1)),
    and it is exactly 1.0 for identical predictors (every resampled difference is 0).
    ``higher_is_better`` (default: False for :func:`mse`, True otherwise) only sets
    ``a_better``: for MSE a negative ``diff`` means A is better.
    """
    pa, pb, t = (as_1d(x, n) for x, n in ((pred_a, "pred_a"), (pred_b, "pred_b"), (target, "target")))
    if not len(pa) == len(pb) == len(t):
        raise UsageError(
            f"pred_a, pred_b and target differ in length ({len(pa)}, {len(pb)},"
            f" {len(t)}); score both systems on the same pairs."
        )
    if higher_is_better is None:
        higher_is_better = metric_fn is not mse
    check_count(n_boot, "n_boot", 1), check_count(seed, "seed"), check_level(level)
    diff = float(metric_fn(pa, t) - metric_fn(pb, t))
    idx = _draw(len(t), n_boot, seed)
    res = _Resamples(idx, len(t)) if metric_fn in _BATCHED else None
    va, ok_a = _boot_values(metric_fn, pa, t, idx, res)
    vb, ok_b = _boot_values(metric_fn, pb, t, idx, res)
    ok = ok_a & ok_b
    d = (va - vb)[ok]
    m = len(d)
    p_value = min(1.0, 2 * min((np.sum(d <= 0) + 1) / (m + 1), (np.sum(d >= 0) + 1) / (m + 1)))
    low, high = _interval(d, level)
    return {
        "diff": diff,
        "low": low,
        "high": high,
        "p_value": float(p_value),
        "a_better": bool(diff > 0 if higher_is_better else diff < 0),
        "higher_is_better": higher_is_better,
        "n_boot_used": m,
        "n_boot_skipped": int((~ok).sum()),
    }


# ---- summaries ----------------------------------------------------------------------


def system_level(pred: ArrayLike, target: ArrayLike, systems: Sequence[str], metric: MetricFn = srcc) -> float:
    """``metric`` between per-system means of pred and target (needs >= 3 systems)."""
    p, t = _check(pred, target, "system_level", correlation=False)
    if isinstance(systems, (str, bytes)) or systems is None:
        raise UsageError(
            f"system_level: systems must be one label per pair, got {type(systems).__name__}; "
            "pass a list of system labels"
        )
    s = np.asarray(list(systems), dtype=object)
    if len(s) != len(p):
        raise UsageError(f"system_level: {len(s)} system labels for {len(p)} pairs; pass one label per pair.")
    names, inverse = np.unique(s.astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    return metric(np.bincount(inverse, p) / counts, np.bincount(inverse, t) / counts)


METRICS: dict[str, MetricFn] = {"srcc": srcc, "lcc": lcc, "ktau": ktau, "mse": mse}


def evaluate_all(
    pred: ArrayLike, target: ArrayLike, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """``n``, ``srcc``, ``lcc``, ``ktau``, ``mse`` and ``<name>_ci`` = [low, high] from
    one shared set of ``n_boot`` resamples (``n_boot=0``: no intervals, ``_ci`` None).

    A correlation that is undefined (constant input) is None with a line in ``notes``;
    ``boot_skipped`` counts degenerate resamples per metric.
    """
    p, t = _check(pred, target, "evaluate_all", correlation=False)
    n_boot, seed, level = check_count(n_boot, "n_boot"), check_count(seed, "seed"), check_level(level)
    out: dict[str, Any] = {"n": len(p)}
    notes: list[str] = []
    idx = _draw(len(p), n_boot, seed) if n_boot else None
    res = _Resamples(idx, len(p)) if n_boot else None
    skipped: dict[str, int] = {}
    for name, fn in METRICS.items():
        try:
            out[name] = fn(p, t)
        except ValueError as e:
            out[name], out[f"{name}_ci"] = None, None
            notes.append(str(e))
            continue
        if res is None:
            out[f"{name}_ci"] = None
            continue
        values, ok = _boot_values(fn, p, t, idx, res)
        out[f"{name}_ci"] = list(_interval(values[ok], level))
        skipped[name] = int((~ok).sum())
    out.update(n_boot=n_boot, level=level, boot_skipped=skipped, notes=notes)
    return out
