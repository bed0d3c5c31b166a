"""Ridge regression in closed form and its k-fold choice of the penalty: pure numpy, the
fitting half of ``humanclap stack`` (:mod:`humanclap.evaluation.stack`).

The model is fitted on *standardised* features (each column minus its mean, divided by its
standard deviation, both from the fitting pairs) with an unpenalised intercept::

    w = argmin (1/n) |y - mean(y) - Z w|^2 + alpha |w|^2  =  (Z^T Z + n alpha I)^-1 Z^T (y - mean(y))

``alpha`` is per pair (the penalty on the *mean* squared error), so one grid suits any
number of pairs. The solve is float64 throughout.

The penalty is picked by k-fold cross-validation: the folds are a permutation of the pairs
drawn from ``numpy.random.default_rng(seed)`` and cut into ``k`` near-equal parts (the same
folds for every alpha, and for the same ``(n, k, seed)`` on every run); each fold's model,
standardisation included, is fitted on the other folds. The criterion is the mean over folds
of the held-out SRCC (what the project optimises; ties of the mean: the larger alpha, the
simpler model) or, with ``criterion="mse"``, the mean held-out MSE (ties: the larger alpha).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from humanclap.evaluation.metrics import MIN_PAIRS, mse, srcc

# Half-decades from 1e-4 to 1e2, per pair, on standardised features: from almost plain
# least squares to a model that keeps only the direction of each member's correlation.
ALPHA_GRID = tuple(float(10.0**e) for e in np.arange(-4.0, 2.01, 0.5))
CRITERIA = ("srcc", "mse")
TIE = 1e-12  # criterion values closer than this are a tie (floating-point noise)


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge model: ``predict(X) = intercept + ((X - mean) / scale) @ coef``."""

    coef: np.ndarray  # per standardised feature
    intercept: float  # mean of the fitting targets (the intercept is not penalised)
    mean: np.ndarray  # per feature, of the fitting rows
    scale: np.ndarray  # per feature standard deviation (1 where a feature was constant)
    alpha: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.intercept + ((X - self.mean) / self.scale) @ self.coef

    def raw_coef(self) -> tuple[np.ndarray, float]:
        """The same model on the unstandardised features: ``(weights, intercept)``."""
        w = self.coef / self.scale
        return w, float(self.intercept - self.mean @ w)


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Z, mean, scale)``: columns centred and scaled to unit (population) standard
    deviation; a constant column keeps scale 1, so its centred values are 0 and its
    coefficient comes out exactly 0."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (X - mean) / scale, mean, scale


def fit_ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> RidgeFit:
    """The closed-form ridge solution on standardised ``X`` (see the module docstring)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise ValueError(f"fit_ridge needs X (n, p) and y (n,) with n >= 1; got {X.shape}, {y.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    Z, mean, scale = standardise(X)
    n, p = Z.shape
    centred = y - y.mean()
    coef = np.linalg.solve(Z.T @ Z + n * alpha * np.eye(p), Z.T @ centred)
    return RidgeFit(coef=coef, intercept=float(y.mean()), mean=mean, scale=scale, alpha=float(alpha))


def kfold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint held-out index sets covering ``range(n)``: a seeded permutation cut
    into near-equal parts (sizes differ by at most one)."""
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= n; got k={k}, n={n}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def _criterion(name: str, pred: np.ndarray, y: np.ndarray) -> float:
    try:
        return srcc(pred, y) if name == "srcc" else mse(pred, y)
    except ValueError:  # a constant held-out fold: undefined there, left out of the mean
        return float("nan")


@dataclass
class CrossValidation:
    """The CV table: one row per alpha, the per-fold values and their mean."""

    criterion: str
    k: int
    seed: int
    rows: list[dict]  # {"alpha", "mean_srcc", "mean_mse", "fold_srcc", "fold_mse"}
    best_alpha: float

    def as_dict(self) -> dict:
        return {
            "criterion": self.criterion,
            "k": self.k,
            "seed": self.seed,
            "best_alpha": self.best_alpha,
            "rows": self.rows,
        }


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    *,
    k: int = 5,
    seed: int = 0,
    criterion: str = "srcc",
    alphas: Sequence[float] = ALPHA_GRID,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> CrossValidation:
    """Held-out SRCC and MSE of every alpha on the same ``k`` folds; the best alpha by
    ``criterion`` (see the module docstring). Held-out predictions are clipped to ``clip``
    as the stacked scorer's are. Each held-out fold needs ``MIN_PAIRS`` pairs."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    folds = kfold_indices(len(y), k, seed)
    if min(len(f) for f in folds) < MIN_PAIRS:
        raise ValueError(
            f"{k}-fold cross-validation of {len(y)} pairs leaves a fold of "
            f"{min(len(f) for f in folds)} pairs; each needs {MIN_PAIRS}"
        )
    rows = []
    for alpha in alphas:
        fold_srcc, fold_mse = [], []
        for held in folds:
            train = np.setdiff1d(np.arange(len(y)), held, assume_unique=True)
            pred = fit_ridge(X[train], y[train], alpha).predict(X[held])
            if clip is not None:
                pred = np.clip(pred, *clip)
            fold_srcc.append(_criterion("srcc", pred, y[held]))
            fold_mse.append(_criterion("mse", pred, y[held]))
        rows.append(
            {
                "alpha": float(alpha),
                "mean_srcc": _nanmean(fold_srcc),
                "mean_mse": _nanmean(fold_mse),
                "fold_srcc": fold_srcc,
                "fold_mse": fold_mse,
            }
        )
    return CrossValidation(criterion, k, seed, rows, best_alpha(rows, criterion))


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr[np.isfinite(arr)].mean()) if np.isfinite(arr).any() else float("nan")


def best_alpha(rows: list[dict], criterion: str) -> float:
    """The alpha with the best mean criterion (SRCC highest, MSE lowest); among values
    within :data:`TIE` of the best, the largest alpha. Undefined means never win."""
    sign = 1.0 if criterion == "srcc" else -1.0
    scored = [(sign * r[f"mean_{criterion}"], r["alpha"]) for r in rows if np.isfinite(r[f"mean_{criterion}"])]
    if not scored:
        raise ValueError(
            f"no alpha has a defined held-out {criterion.upper()} (every fold's predictions or targets are constant)"
        )
    top = max(v for v, _ in scored)
    return max(a for v, a in scored if v >= top - TIE)
