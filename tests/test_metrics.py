"""Metrics against scipy, the vectorised bootstrap against a plain loop, and summaries."""

from __future__ import annotations

import doctest
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from humanclap.data import categories as categories
from humanclap.evaluation import metrics as metrics
from humanclap.evaluation.breakdowns import breakdowns
from humanclap.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_distribution,
    evaluate_all,
    ktau,
    lcc,
    mse,
    paired_bootstrap,
    srcc,
    system_level,
)

REFERENCE = {
    "srcc": lambda p, t: stats.spearmanr(p, t)[0],
    "lcc": lambda p, t: stats.pearsonr(p, t)[0],
    "ktau": lambda p, t: stats.kendalltau(p, t, variant="b")[0],
    "mse": lambda p, t: np.mean((np.asarray(p) - np.asarray(t)) ** 2),
}


def _tied_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and human means with many ties, like 0-10 ratings averaged."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 11, size=(n, 3)).mean(axis=1) / 10
    pred = np.round(0.5 * target + rng.normal(0, 0.2, n), 1)
    return pred, target


@pytest.mark.parametrize("name", list(REFERENCE))
@pytest.mark.parametrize("n", [3, 10, 257])
def test_point_estimates_equal_scipy_with_ties(name: str, n: int):
    pred, target = _tied_data(n, seed=n)
    if name != "mse" and (np.ptp(pred) == 0 or np.ptp(target) == 0):
        pytest.skip("constant draw")
    expected = REFERENCE[name](pred, target)
    assert metrics.METRICS[name](pred, target) == pytest.approx(expected, abs=1e-12)
    # The vectorised bootstrap code, evaluated on the identity "resample", too.
    ident = np.arange(n)[None, :]
    value, ok = metrics._BATCHED[metrics.METRICS[name]](pred, target, metrics._Resamples(ident, n))
    assert ok[0] and value[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_vectorised_bootstrap_equals_loop(name: str):
    pred, target = _tied_data(40, seed=1)
    fn = metrics.METRICS[name]
    fast, skipped_fast = bootstrap_distribution(fn, pred, target, n_boot=200, seed=3)
    # A lambda is not recognised as built-in, so this loops over the same resamples.
    slow, skipped_slow = bootstrap_distribution(lambda p, t: fn(p, t), pred, target, n_boot=200, seed=3)
    assert skipped_fast == skipped_slow
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_ktau_scipy_fallback_path(monkeypatch):
    pred, target = _tied_data(30, seed=2)
    matrix, _ = bootstrap_distribution(ktau, pred, target, n_boot=50, seed=0)
    monkeypatch.setattr(metrics, "_KTAU_MATRIX_MAX_N", 10)
    looped, _ = bootstrap_distribution(ktau, pred, target, n_boot=50, seed=0)
    np.testing.assert_allclose(matrix, looped, atol=1e-12)


@pytest.mark.parametrize(
    "pred, target, match",
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "differ in length"),
        ([0.1, np.nan, 0.3], [0.1, 0.2, 0.3], "NaN/inf"),
        ([0.1, np.inf, 0.3], [0.1, 0.2, 0.3], "NaN/inf"),
        ([0.1, 0.2], [0.1, 0.2], "at least 3"),
        ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "pred is constant"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "target is constant"),
        ([[0.1, 0.2, 0.3]], [[0.1, 0.2, 0.3]], "1-D"),
        (["a", "b", "c"], [0.1, 0.2, 0.3], "numeric"),
    ],
)
@pytest.mark.parametrize("fn", [srcc, lcc, ktau])
def test_input_errors(fn, pred, target, match):
    with pytest.raises(ValueError, match=match):
        fn(pred, target)


def test_mse_needs_one_pair_and_no_variation():
    assert mse([0.5], [0.25]) == 0.0625
    assert mse([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        mse([0.1, 0.2], [0.1])


def test_bootstrap_ci_contains_estimate_and_narrows():
    widths = []
    for n in (60, 600):
        pred, target = _tied_data(n, seed=5)
        for fn in (srcc, lcc, ktau, mse):
            low, high = bootstrap_ci(fn, pred, target, n_boot=400, seed=0)
            assert low <= fn(pred, target) <= high
        low, high = bootstrap_ci(srcc, pred, target, n_boot=400, seed=0)
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]  # ~ 1/sqrt(10) in theory
    assert bootstrap_ci(srcc, pred, target, seed=1) == bootstrap_ci(srcc, pred, target, seed=1)


def test_degenerate_resamples_are_skipped_and_counted():
    pred, target = [0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 1.0]
    values, skipped = bootstrap_distribution(srcc, pred, target, n_boot=500, seed=0)
    # P(no draw of the last pair) = (3/4)^4 ~ 0.32 of resamples have a constant target.
    assert 100 < skipped < 220 and len(values) == 500 - skipped
    assert np.isfinite(values).all()
    with pytest.raises(ValueError, match="constant"):
        bootstrap_ci(srcc, [0.1, 0.2, 0.3], [1, 1, 1])

    def never_defined(p, t):
        raise ValueError("undefined")

    low, high = bootstrap_ci(never_defined, [0.1, 0.2, 0.3], [0.3, 0.1, 0.2], n_boot=5)
    assert np.isnan(low) and np.isnan(high)  # every resample skipped


def test_paired_bootstrap():
    pred, target = _tied_data(300, seed=7)
    same = paired_bootstrap(srcc, pred, pred.copy(), target, n_boot=300, seed=0)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    assert same["low"] == same["high"] == 0.0
    noisy = pred + np.random.default_rng(0).normal(0, 1.0, len(pred))
    better = paired_bootstrap(srcc, pred, noisy, target, n_boot=300, seed=0)
    assert better["diff"] > 0 and better["a_better"]
    assert better["p_value"] == pytest.approx(2 / 301)  # the smallest reportable p
    assert better["low"] > 0
    # MSE: lower is better, so A (closer to the target) has a negative diff and wins.
    err = paired_bootstrap(mse, target + 0.01, target + 0.3, target, n_boot=200, seed=0)
    assert err["diff"] < 0 and err["a_better"] and not err["higher_is_better"]
    assert err["p_value"] < 0.05


def test_system_level():
    systems = np.repeat(["a", "b", "c", "d"], 5)
    target = np.repeat([0.2, 0.4, 0.6, 0.8], 5) + np.tile(np.linspace(-0.1, 0.1, 5), 4)
    pred = np.repeat([0.1, 0.3, 0.2, 0.9], 5)
    assert system_level(pred, target, systems) == pytest.approx(0.8)
    assert system_level(pred, target, systems, metric=lcc) == pytest.approx(
        stats.pearsonr([0.1, 0.3, 0.2, 0.9], [0.2, 0.4, 0.6, 0.8])[0]
    )
    with pytest.raises(ValueError, match="at least 3"):
        system_level(pred[:10], target[:10], systems[:10])


def test_evaluate_all_keys_and_constant_group():
    pred, target = _tied_data(100, seed=9)
    out = evaluate_all(pred, target, n_boot=200, seed=0)
    for name in ("srcc", "lcc", "ktau", "mse"):
        assert out[name] == pytest.approx(REFERENCE[name](pred, target), abs=1e-12)
        low, high = out[f"{name}_ci"]
        assert low <= out[name] <= high
    assert out["n"] == 100 and out["notes"] == []
    flat = evaluate_all(pred, np.full(100, 0.5), n_boot=50)
    assert flat["srcc"] is None and flat["srcc_ci"] is None and flat["mse"] is not None
    assert any("constant" in note for note in flat["notes"])
    assert evaluate_all(pred, target, n_boot=0)["srcc_ci"] is None


def test_breakdowns():
    texts = ["A dog barks", "A man speaks", "Rain falls", "A car engine idles", "Birds chirp", "A woman talks"]
    systems = ["audiocaps", "tango2", "tango2", "audiocaps", "tango2", "audioldm"]
    rng = np.random.default_rng(0)
    n = 60
    pairs = pd.DataFrame(
        {
            "text": [texts[i % 6] for i in range(n)],
            "system": [systems[i % 6] for i in range(n)],
            "natural": [systems[i % 6] == "audiocaps" for i in range(n)],
            "human": rng.random(n),
        }
    )
    pred = pairs["human"].to_numpy() + rng.normal(0, 0.1, n)
    out = breakdowns(pairs, pred, n_boot=100, seed=0)
    assert out["overall"] == evaluate_all(pred, pairs["human"], n_boot=100, seed=0)
    assert out["natural"]["n"] == 20 and out["synthesized"]["n"] == 40
    assert {k for k in out if k.startswith("system:")} == {"system:audiocaps", "system:audioldm", "system:tango2"}
    assert out["category:animals"]["n"] == 20 and out["category:human"]["n"] == 20
    assert out["category:music"] == {"n": 0, "skipped": "fewer than 3 pairs"}
    small = breakdowns(pairs.iloc[:8], pred[:8], n_boot=20)
    assert small["system:audioldm"] == {"n": 1, "skipped": "fewer than 3 pairs"}
    with pytest.raises(ValueError, match="predictions for"):
        breakdowns(pairs, pred[:-1], n_boot=10)
    # Unknown natural-ness (e.g. XACLE): no natural/synthesized groups at all.
    out = breakdowns(pairs.assign(natural=np.nan), pred, n_boot=10, categories=False)
    assert "natural" not in out and "category:human" not in out


def test_bootstrap_speed_relate_sized():
    pred, target = _tied_data(2600, seed=11)
    start = time.perf_counter()
    out = evaluate_all(pred, target, n_boot=1000, seed=0)
    elapsed = time.perf_counter() - start
    assert all(out[f"{k}_ci"] is not None for k in ("srcc", "lcc", "ktau", "mse"))
    assert elapsed < 10, f"1000 resamples x 2600 pairs x 4 metrics took {elapsed:.1f}s"


def test_categories_on_real_captions():
    cases = {
        "A man talks as an engine idles loudly": ["human", "vehicles"],
        "A muffled steam engine running as a crowd of people talk followed by muffled steam hissing": [
            "human",
            "vehicles",
        ],
        "Wind blows hard and waves crash": ["nature", "impacts"],
        "Compressed air spraying followed by a power tool buzzing": ["tools_machines"],
        "A beep goes off and a gun is being fired several times": ["alarms_signals", "impacts"],
        "A bus engine accelerating followed by a bus horn honking while plastic clacks": [
            "vehicles",
            "alarms_signals",
            "impacts",
        ],
        "A baby is crying and a person sneezes then another person speaks": ["human"],
        "A band plays horn and string instruments while waves crash nearby": [
            "nature",
            "music",
            "alarms_signals",
            "impacts",
        ],
        "Continuous white noise": [],
    }
    for text, expected in cases.items():
        assert categories.categories_of(text) == expected, text


def test_doctests():
    for module in (metrics, categories):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0
