"""The XACLE challenge's own metrics, reported beside ours for data in the XACLE layout.

What the challenge computes (matched here): ``evaluate.py``, function ``evaluate_all(pred, gt)``
with ``main()``, of the challenge's baseline repository
(github.com/XACLE-Challenge/the_first_XACLE_challenge_baseline_model; the XACLE 2027 baseline's
README runs the same ``python evaluate.py <inference_csv> <ground_truth_csv> <save_dir>`` and
lists the same outputs):

* ``pred`` is the submission's ``pred_score`` and ``gt`` the ``average_score`` of
  ``meta_data/<split>_average.csv``, both on the 0-10 scale, joined on ``wav_file_name``;
  pairs where either is NaN are dropped, and fewer than 2 pairs is an error there.
* SRCC: Pearson correlation of the ranks (ties get their average rank); LCC: Pearson
  correlation; both 0.0 (not NaN) when one side has zero variance.
* KTAU: Kendall's tau-b, 0.0 when its denominator is 0.
* MSE: the mean squared difference, **on the 0-10 scale**; N: the pairs used.

The baselines map their model's -1..1 output to 0-10 with ``pred * 5 + 5`` (``inference.py``);
a CLAPScore lies in [0, 1], so its prediction on the challenge's scale is ``CLAPScore * 10``,
not rounded (the baselines' ``inference.py`` rounds to 2 decimals when it writes its CSV;
``evaluate.py`` itself does not round). The human side is the mean of the listeners' 0-10
ratings, i.e. ``average_score``. SRCC, LCC and KTAU do not depend on the scale, so they equal
ours up to the zero-variance convention; MSE is 100 times ours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

TITLE = "XACLE metrics (0–10 scale, as the challenge computes them)"
SOURCE = (
    "XACLE-Challenge/the_first_XACLE_challenge_baseline_model evaluate.py evaluate_all (the evaluation "
    "the XACLE 2027 baseline's README runs): SRCC, LCC, KTAU (tau-b), MSE and N of pred_score against "
    "average_score on the 0-10 scale; 0.0 where a correlation is undefined"
)
MAPPING = (
    "prediction = CLAPScore x 10 (not rounded), human = the mean 0-10 rating (average_score); "
    "on the pairs every model scored"
)
NAMES = ("SRCC", "LCC", "KTAU", "MSE")  # the challenge's names and order (then N)
SCALE = 10.0


def _pearson_or_zero(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return float(dx @ dy) / float(np.sqrt(sxx * syy))


def challenge_metrics(pred: Any, gt: Any) -> dict[str, float | int | None]:
    """``evaluate_all`` of the challenge on two arrays already on its 0-10 scale: SRCC, LCC,
    KTAU, MSE and N (pairs where either side is NaN dropped; every metric None below 2 pairs,
    where the challenge's script raises).

    >>> m = challenge_metrics([1.0, 2.0, 4.0], [2.0, 2.0, 5.0])
    >>> round(m["MSE"], 4), m["N"]
    (0.6667, 3)
    """
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pred and gt must be 1-D arrays of one length; got shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 2:
        return {**dict.fromkeys(NAMES), "N": n}
    tau = stats.kendalltau(x, y, variant="b").statistic  # tau-b: NaN where the script gives 0.0
    return {
        "SRCC": _pearson_or_zero(stats.rankdata(x), stats.rankdata(y)),  # rankdata: average ranks for ties
        "LCC": _pearson_or_zero(x, y),
        "KTAU": 0.0 if np.isnan(tau) else float(tau),
        "MSE": float(np.mean((x - y) ** 2)),
        "N": n,
    }


def human_0_10(human01: np.ndarray) -> np.ndarray:
    """The mean 0-10 rating from the loader's 0-1 mean (``data.xacle`` divides by 10). Rounded
    to 10 decimals so that it is the mean the challenge's ``average_score`` holds, bit for bit
    (a mean of 4 integer ratings is a multiple of 0.25; x / 10 * 10 can miss it by one ulp,
    and such an ulp would break a tie of SRCC or KTAU)."""
    return np.round(np.asarray(human01, dtype=np.float64) * SCALE, 10)


def xacle_challenge_block(runs: list, human01: np.ndarray, scored: np.ndarray) -> dict[str, Any]:
    """The ``xacle_challenge`` block of metrics.json: the challenge's metrics of every run
    (``ModelRun``: ``label``, ``scores`` per pair) on the pairs every model scored."""
    gt = human_0_10(human01[scored])
    return {
        "title": TITLE,
        "source": SOURCE,
        "mapping": MAPPING,
        "models": {run.label: challenge_metrics(run.scores[scored] * SCALE, gt) for run in runs},
    }
