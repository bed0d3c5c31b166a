"""`humanclap stack`: the ridge against a float64 least-squares reference, the deterministic
choice of alpha, every refusal on real files through the CLI, and the whole route on tiny
models: evaluate --split train, stack, evaluate --model STACK_DIR on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model_with_positive_cosines, write_manifest

from humanclap.cli import main as cli_main
from humanclap.evaluation.ridge import ALPHA_GRID, best_alpha, cross_validate, fit_ridge, kfold_indices
from humanclap.outputs import MARKER


# -- the ridge -----------------------------------------------------------------------
def _lstsq_reference(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge as ordinary least squares on augmented data: the rows sqrt(n alpha) I with
    target 0 added to the standardised features, the intercept the target mean."""
    n, p = X.shape
    Z = (X - X.mean(0)) / X.std(0)
    A = np.vstack([Z, np.sqrt(n * alpha) * np.eye(p)])
    b = np.concatenate([y - y.mean(), np.zeros(p)])
    coef = np.linalg.lstsq(A, b, rcond=None)[0]
    return coef, float(y.mean())


@pytest.mark.parametrize("alpha", [1e-4, 0.05, 3.0, 100.0])
def test_ridge_closed_form_matches_lstsq_on_augmented_data(alpha):
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 1, size=(40, 3)) * [1.0, 0.2, 5.0] + [0.0, 0.3, -1.0]
    X[:, 2] += 0.8 * X[:, 0]  # correlated members, as stacked metrics are
    y = np.clip(0.3 * X[:, 0] + 0.1 * X[:, 1] + 0.05 * rng.standard_normal(40), 0, 1)
    fit = fit_ridge(X, y, alpha)
    coef, intercept = _lstsq_reference(X, y, alpha)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-10, atol=1e-13)
    assert fit.intercept == pytest.approx(intercept, abs=1e-15)
    w, b = fit.raw_coef()  # the same model in the members' own units
    np.testing.assert_allclose(X @ w + b, fit.predict(X), rtol=0, atol=1e-12)


def test_a_constant_member_gets_weight_zero():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(size=20), np.zeros(20)])
    fit = fit_ridge(X, X[:, 0] * 0.5, 0.01)
    assert fit.coef[1] == 0.0 and fit.scale[1] == 1.0


def test_cv_folds_and_alpha_are_deterministic():
    folds = kfold_indices(23, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert [f.tolist() for f in folds] == [f.tolist() for f in kfold_indices(23, 5, seed=3)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in kfold_indices(23, 5, seed=4)]

    rng = np.random.default_rng(1)
    X = rng.uniform(size=(60, 3))
    y = np.clip(0.5 * X[:, 0] - 0.2 * X[:, 1] + 0.2 * rng.standard_normal(60) + 0.3, 0, 1)
    a, b = cross_validate(X, y, k=5, seed=0), cross_validate(X, y, k=5, seed=0)
    assert a.rows == b.rows and a.best_alpha == b.best_alpha
    assert [r["alpha"] for r in a.rows] == list(ALPHA_GRID)
    best = max(r["mean_srcc"] for r in a.rows)
    assert a.best_alpha == max(r["alpha"] for r in a.rows if r["mean_srcc"] >= best - 1e-12)
    m = cross_validate(X, y, k=5, seed=0, criterion="mse")
    assert m.best_alpha == min(m.rows, key=lambda r: (r["mean_mse"], -r["alpha"]))["alpha"]
    # ties go to the larger alpha, the simpler model
    assert (
        best_alpha(
            [{"alpha": 0.1, "mean_srcc": 0.5}, {"alpha": 1.0, "mean_srcc": 0.5}, {"alpha": 10.0, "mean_srcc": 0.4}],
            "srcc",
        )
        == 1.0
    )


# -- refusals on real files ----------------------------------------------------------
def _predictions(folder: Path, columns: dict[str, list[float]], pair_ids=None, human=None, split="train") -> Path:
    """A predictions.csv + metrics.json pair as evaluate writes them (hub-id members)."""
    n = len(next(iter(columns.values())))
    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(
        {
            "pair_id": pair_ids or [f"c{i}.wav|{i:08x}" for i in range(n)],
            "audio": [f"c{i}.wav" for i in range(n)],
            "text": ["t"] * n,
            "split": split,
            "human": human if human is not None else np.linspace(0, 1, n),
            **columns,
            "scored": True,
            "error": "",
        }
    )
    df.to_csv(folder / "predictions.csv", index=False)
    models = [
        {"label": c, "column": c, "model_id": f"org/{c}", "revision": f"rev-{c}", "source": "hub"} for c in columns
    ]
    (folder / "metrics.json").write_text(json.dumps({"models": models}))
    return folder / "predictions.csv"


def _stack(argv, capsys) -> tuple[int, str]:
    code = cli_main(["stack", *map(str, argv)])
    return code, capsys.readouterr().err


def test_refusals(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=30), rng.uniform(size=30)
    two = _predictions(tmp_path / "two", {"a": list(a), "b": list(b)})
    out = tmp_path / "st"

    one = _predictions(tmp_path / "one", {"a": list(a)})
    code, err = _stack([one, "-o", out], capsys)
    assert code == 2 and "at least 2 members" in err and "monotone" in err

    ids = [f"c{i}.wav|{i:08x}" for i in range(30)]
    other = _predictions(tmp_path / "other", {"c": list(b)}, pair_ids=ids[::-1])
    code, err = _stack([one, other, "-o", out], capsys)
    assert code == 2 and "different pairs" in err and "different order" in err
    shorter = _predictions(tmp_path / "short", {"c": list(b[:29])}, pair_ids=ids[:29])
    code, err = _stack([one, shorter, "-o", out], capsys)
    assert code == 2 and "different pairs" in err and "30 vs 29" in err
    rerated = _predictions(tmp_path / "rerated", {"c": list(b)}, human=np.linspace(1, 0, 30))
    code, err = _stack([one, rerated, "-o", out], capsys)
    assert code == 2 and "different human scores" in err

    code, err = _stack([two, "--member", "zzz", "-o", out], capsys)
    assert code == 2 and "--member 'zzz'" in err
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa/predictions.csv").write_text((two).read_text())
    code, err = _stack([tmp_path / "nometa/predictions.csv", "-o", out], capsys)
    assert code == 2 and "metrics.json" in err
    gone = _predictions(tmp_path / "gone", {"a": list(a), "b": list(b)})
    pd.read_csv(gone).drop(columns=["b"]).to_csv(gone, index=False)
    code, err = _stack([gone, "-o", out], capsys)
    assert code == 2 and "member 'b'" in err and "missing" in err
    local = _predictions(tmp_path / "local", {"a": list(a), "b": list(b)})
    meta = json.loads((tmp_path / "local/metrics.json").read_text())
    meta["models"][1].update(model_id=str(tmp_path / "no_such_model"), source="local")
    (tmp_path / "local/metrics.json").write_text(json.dumps(meta))
    code, err = _stack([local, "-o", out], capsys)
    assert code == 2 and "no_such_model" in err and "missing" in err

    nan = _predictions(tmp_path / "nan", {"a": list(a), "b": [np.nan, *b[1:]]})
    code, err = _stack([nan, "-o", out], capsys)
    assert code == 2 and "--drop-failed" in err and "1 of 30" in err

    code, err = _stack([two, "--folds", "11", "-o", out], capsys)
    assert code == 2 and "too few for 11-fold" in err and "at least 33" in err
    test = _predictions(tmp_path / "test", {"a": list(a), "b": list(b)}, split="test")
    code, err = _stack([test, "-o", out], capsys)
    assert code == 2 and "--split train" in err
    assert not out.exists()  # nothing written by a refusal

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = _stack([two, "-o", foreign], capsys)
    assert code == 2 and "never writes over" in err

    # the same inputs that were refused, fixed: NaN dropped, then the earlier run is kept
    code, err = _stack([nan, "--drop-failed", "-o", out], capsys)
    assert code == 0, err
    record = json.loads((out / "stack.json").read_text())
    assert record["training_pairs"]["n"] == 29 and record["n_dropped"] == 1
    assert [m["model"] for m in record["members"]] == ["org/a", "org/b"]
    assert json.loads((out / MARKER).read_text())["files"] == ["training_pairs.csv", "stack.json"]
    code, err = _stack([two, "-o", out], capsys)
    assert code == 2 and "--overwrite" in err
    code, err = _stack([two, "-o", out, "--overwrite", "--alpha", "0.5"], capsys)
    assert code == 0, err
    record = json.loads((out / "stack.json").read_text())
    assert record["alpha"] == 0.5 and record["cv"] is None and record["training_pairs"]["n"] == 30


def test_members_from_several_files_and_a_shared_model_used_once(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=20), rng.uniform(size=20)
    first = _predictions(tmp_path / "p1", {"a": list(a), "b": list(b)})
    second = _predictions(tmp_path / "p2", {"a": list(a), "c": list(0.5 * a + 0.5 * b)})
    code, err = _stack([first, second, "-o", tmp_path / "st", "--folds", "4"], capsys)
    assert code == 0, err
    assert "same model" in err
    record = json.loads((tmp_path / "st/stack.json").read_text())
    assert [m["label"] for m in record["members"]] == ["a", "b", "c"]
    assert record["cv"]["k"] == 4 and len(record["cv"]["rows"]) == len(ALPHA_GRID)
    assert record["alpha"] == record["cv"]["best_alpha"]


# -- evaluate --split train, stack, evaluate --model STACK_DIR -----------------------
@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    """A manifest of 30 train and 15 test pairs, and two tiny models with positive cosines."""
    root = tmp_path_factory.mktemp("stackdata")
    rng = np.random.default_rng(0)
    words = ["dog barks", "rain falls", "car engine", "bird sings", "door slams"]
    rows = [
        {
            "audio": f"clips/{i}.wav",
            "text": f"a {words[i % 5]} {i % 4}",
            "score": f"{rng.uniform(0, 10):.1f}",
            "split": "train" if i < 30 else "test",
        }
        for i in range(45)
    ]
    manifest = write_manifest(root / "data", rows)
    audio = [str(root / "data" / r["audio"]) for r in rows[:12]]
    texts = [r["text"] for r in rows[:12]]
    models = [tiny_model_with_positive_cosines(root / f"clap-{s}", s, audio, texts) for s in (0, 1)]
    return manifest, models


def _evaluate(argv, capsys) -> tuple[int, str]:
    code = cli_main(["evaluate", "--device", "cpu", "--n-boot", "50", "--no-plots", *map(str, argv)])
    return code, capsys.readouterr().err


def test_stack_end_to_end(rated, tmp_path, capsys, one_thread):
    manifest, (m0, m1) = rated
    train = tmp_path / "train_eval"
    code, err = _evaluate(["--data", manifest, "--split", "train", "--model", m0, "--model", m1, "-o", train], capsys)
    assert code == 0, err
    stack = tmp_path / "my_stack"
    code, err = _stack([train / "predictions.csv", "-o", stack], capsys)
    assert code == 0, err
    record = json.loads((stack / "stack.json").read_text())
    assert record["format"] == "humanclap-stack" and record["training_pairs"]["n"] == 30
    assert [m["model"] for m in record["members"]] == [str(m0.resolve()), str(m1.resolve())]
    assert record["alpha"] in ALPHA_GRID

    test = tmp_path / "test_eval"
    code, err = _evaluate(["--data", manifest, "--split", "test", "--model", stack, "-o", test], capsys)
    assert code == 0, err
    metrics = json.loads((test / "metrics.json").read_text())
    assert [m["label"] for m in metrics["models"]] == ["clap-0", "clap-1", "my_stack"]
    assert metrics["models"][2]["source"] == "stack"
    assert metrics["models"][2]["revision"].startswith("sha256:")
    assert set(metrics["metrics"]) == {"clap-0", "clap-1", "my_stack"}
    assert "my_stack" in metrics["paired_vs_first"]["by_model"]  # paired test vs the first member
    preds = pd.read_csv(test / "predictions.csv")
    assert len(preds) == 15 and set(preds["split"]) == {"test"}
    X = preds[["clap-0", "clap-1"]].to_numpy(float)
    expected = np.clip(
        record["intercept"]
        + ((X - record["feature_mean"]) / record["feature_scale"]) @ np.asarray(record["coef_standardised"]),
        0,
        1,
    )
    np.testing.assert_allclose(preds["my_stack"].to_numpy(float), expected, rtol=0, atol=1e-6)
    w, b = np.asarray(record["coef_raw"]), record["intercept_raw"]
    np.testing.assert_allclose(preds["my_stack"], np.clip(X @ w + b, 0, 1), rtol=0, atol=1e-6)
    report = (test / "report.md").read_text()
    assert "| my_stack |" in report

    # a member also passed as --model is scored once, in its own place; --label names the stack
    both = tmp_path / "both_eval"
    code, err = _evaluate(
        [
            "--data",
            manifest,
            "--split",
            "test",
            "--model",
            m1,
            "--label",
            "B",
            "--model",
            stack,
            "--label",
            "stacked",
            "-o",
            both,
        ],
        capsys,
    )
    assert code == 0, err
    labels = [m["label"] for m in json.loads((both / "metrics.json").read_text())["models"]]
    assert labels == ["B", "clap-0", "stacked"]
    again = pd.read_csv(both / "predictions.csv")
    np.testing.assert_allclose(again["stacked"], preds["my_stack"], rtol=0, atol=1e-7)

    # evaluating on the pairs the stack was fitted on is refused before any scoring
    code, err = _evaluate(["--data", manifest, "--split", "train", "--model", stack, "-o", tmp_path / "leak"], capsys)
    assert code == 2 and "used to fit the stack" in err and "--split test" in err
    assert not (tmp_path / "leak").exists()

    # a member whose weights changed since the stack was fitted is refused
    record["members"][1]["revision"] = "sha256:000000000000"
    (stack / "stack.json").write_text(json.dumps(record))
    code, err = _evaluate(["--data", manifest, "--split", "test", "--model", stack, "-o", tmp_path / "stale"], capsys)
    assert code == 2 and "fit the stack again" in err and "sha256:000000000000" in err
