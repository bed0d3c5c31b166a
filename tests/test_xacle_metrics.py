"""The XACLE challenge's own metrics (0-10 scale) beside ours, for data in the XACLE layout:
the functions against independent computations, then `humanclap evaluate` end to end on a
synthetic XACLE folder (per-listener integer ratings, a split with averages only) with tiny
models; data in any other layout gets no such block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model_with_positive_cosines, tone_wav
from scipy import stats

from humanclap.cli import main as cli_main
from humanclap.evaluation.xacle_metrics import TITLE, challenge_metrics, human_0_10

WORDS = ("dog barks", "rain falls", "a car passes", "birds sing", "a door creaks", "people talk", "wind blows")


def test_challenge_metrics_against_scipy_and_numpy():
    rng = np.random.default_rng(0)
    pred, gt = rng.uniform(0, 10, 40), rng.integers(0, 41, 40) / 4  # averages of 4 ratings: ties
    m = challenge_metrics(pred, gt)
    assert m["N"] == 40
    assert m["SRCC"] == pytest.approx(stats.spearmanr(pred, gt).statistic, abs=1e-12)
    assert m["LCC"] == pytest.approx(stats.pearsonr(pred, gt).statistic, abs=1e-12)
    assert m["KTAU"] == pytest.approx(stats.kendalltau(pred, gt).statistic, abs=1e-12)
    assert m["MSE"] == pytest.approx(np.mean((pred - gt) ** 2), rel=1e-12)


def test_challenge_conventions_nan_dropped_zero_variance_zero_too_few_none():
    m = challenge_metrics([1.0, np.nan, 3.0, 5.0], [2.0, 4.0, np.nan, 6.0])
    assert m["N"] == 2 and m["MSE"] == pytest.approx(1.0) and m["LCC"] == pytest.approx(1.0)
    const = challenge_metrics([5.0, 5.0, 5.0], [1.0, 2.0, 3.0])  # the script gives 0.0, not NaN
    assert (const["SRCC"], const["LCC"], const["KTAU"]) == (0.0, 0.0, 0.0) and const["MSE"] == pytest.approx(29 / 3)
    assert challenge_metrics([1.0], [2.0]) == {"SRCC": None, "LCC": None, "KTAU": None, "MSE": None, "N": 1}
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        challenge_metrics([1.0, 2.0], [1.0])


def test_human_0_10_gives_back_the_average_bit_for_bit():
    ratings = np.random.default_rng(1).integers(0, 11, (500, 4))
    loader_means = (ratings / 10.0).mean(axis=1).round(12)  # what data.xacle / build_rated_pairs keep
    assert np.array_equal(human_0_10(loader_means), ratings.mean(axis=1))
    averages = np.arange(0, 41) / 4  # an average file's values, divided by 10 by the loader
    assert np.array_equal(human_0_10(averages / 10.0), averages)


@pytest.fixture(scope="module")
def xacle_dir(tmp_path_factory) -> Path:
    """validation: 4 integer 0-10 ratings per pair; test: an average file only."""
    root = tmp_path_factory.mktemp("xacle")
    rng = np.random.default_rng(3)
    rows, averages = [], []
    for i in range(14):
        name, text = f"{i:05d}.wav", f"{WORDS[i % len(WORDS)]} {i}"
        if i < 10:
            tone_wav(root / "wav/validation" / name, seed=i)
            rows += [
                {"wav_file_name": name, "text": text, "score": int(s), "listener_id": f"L{k}"}
                for k, s in enumerate(rng.integers(0, 11, 4))
            ]
        else:
            tone_wav(root / "wav/test" / name, seed=i)
            averages.append({"wav_file_name": name, "text": text, "average_score": rng.integers(0, 41) / 4})
    (root / "meta_data").mkdir()
    pd.DataFrame(rows).to_csv(root / "meta_data/validation.csv", index=False)
    pd.DataFrame(averages).to_csv(root / "meta_data/test_average.csv", index=False)
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, xacle_dir) -> list[Path]:
    base = tmp_path_factory.mktemp("models")
    audio = sorted(str(p) for p in (xacle_dir / "wav").rglob("*.wav"))
    texts = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(len(audio))]
    return [tiny_model_with_positive_cosines(base / f"clap-{s}", s, audio, texts) for s in (0, 1)]


def _evaluate(data: str, out: Path, models: list[Path], split: str, capsys) -> tuple[dict, str, str]:
    argv = ["evaluate", "--data", data, "-o", str(out), "--split", split, "--device", "cpu"]
    argv += [a for m in models for a in ("--model", str(m))] + ["--n-boot", "0", "--no-plots", "--no-progress"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    return json.loads((out / "metrics.json").read_text()), (out / "report.md").read_text(), printed


def _raw_means(xacle_dir: Path, split: str) -> pd.Series:
    """The mean 0-10 rating per wav, from the CSV files as written (not through humanclap)."""
    if split == "validation":
        return pd.read_csv(xacle_dir / "meta_data/validation.csv").groupby("wav_file_name")["score"].mean()
    return pd.read_csv(xacle_dir / "meta_data/test_average.csv").set_index("wav_file_name")["average_score"]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_evaluate_reports_the_challenge_metrics_on_xacle(xacle_dir, tiny_models, tmp_path, capsys, split):
    metrics, report, printed = _evaluate(f"xacle:{xacle_dir}", tmp_path / "out", tiny_models, split, capsys)
    block = metrics["xacle_challenge"]
    assert block["title"] == TITLE and "evaluate.py" in block["source"]
    preds = pd.read_csv(tmp_path / "out/predictions.csv").set_index("wavname")
    gt = _raw_means(xacle_dir, split).reindex(preds.index).to_numpy(float)
    assert len(gt) == (10 if split == "validation" else 4) and not np.isnan(gt).any()
    for model in metrics["models"]:
        label, pred = model["label"], preds[model["column"]].to_numpy(float) * 10
        got = block["models"][label]
        assert got["N"] == len(gt)
        assert got["MSE"] == pytest.approx(np.mean((pred - gt) ** 2), rel=1e-9)
        assert got["SRCC"] == pytest.approx(stats.spearmanr(pred, gt).statistic, abs=1e-9)
        assert got["KTAU"] == pytest.approx(stats.kendalltau(pred, gt).statistic, abs=1e-9)
        ours = metrics["metrics"][label]["overall"]["mse"]  # ours stays on the 0-1 scale
        assert got["MSE"] == pytest.approx(100 * ours, rel=1e-6) and ours < 1
    assert f"## {TITLE}" in report and "| model | N | SRCC | LCC | KTAU | MSE (0–10) |" in report
    assert TITLE in printed and "CLAPScore x 10" in printed


def test_other_layouts_get_no_challenge_block(xacle_dir, tiny_models, tmp_path, capsys):
    """The same pairs as a manifest (scores 0-10): ours only, files as before."""
    rows = pd.read_csv(xacle_dir / "meta_data/validation.csv")
    rows["audio"] = [str(xacle_dir / "wav/validation" / w) for w in rows["wav_file_name"]]
    rows[["audio", "text", "score", "listener_id"]].to_csv(tmp_path / "m.csv", index=False)
    metrics, report, printed = _evaluate(str(tmp_path / "m.csv"), tmp_path / "out", tiny_models[:1], "all", capsys)
    assert "xacle_challenge" not in metrics and "challenge" not in report and "challenge" not in printed
