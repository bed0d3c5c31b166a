"""Hostile input to ``evaluate`` and ``train``: every condition a user can cause ends in a
clear error (exit 2) or row errors (exit 1) with every file written, never a traceback
(exit 3) and never a number that is not one. Real files in tmp_path, real tiny models, the
CLI in-process; each test checks the exit code, the message and the bytes of input files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from safetensors.torch import load_file

from humanclap.cli import main as cli_main
from humanclap.errors import ConfigError, UsageError

TEXTS = [
    "a dog barks while a man talks",
    "rain falls on a roof followed by thunder",
    "a car horn honks then an engine revs",
    "birds chirp in the distance as wind blows",
]


# tiny models run several times faster single-threaded (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def strict_json(path: Path) -> dict:
    def no_constants(name):
        raise AssertionError(f"{name} in {path.name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


def manifest(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    return [write_wav(root / f"c{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32)) for i in range(3)]


def evaluate(data: Path, out: Path, model: Path, *extra: str) -> int:
    return cli_main(
        [
            "evaluate",
            "--data",
            str(data),
            "-o",
            str(out),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--n-boot",
            "20",
            "--no-progress",
            *extra,
        ]
    )


# -- evaluate: nothing or too little to measure ----------------------------------------------
def test_evaluate_with_no_scorable_pair_writes_every_file_and_exits_1(tiny_unfused, tmp_path, capsys):
    rows = [
        {
            "audio": f"gone{i}.wav",
            "text": TEXTS[i % 4],
            "score": 0.2 * i,
            "system": ["audiocaps", "tango", "audioldm"][i % 3],
            "natural": str(i % 3 == 0).lower(),
        }
        for i in range(5)
    ]
    data = manifest(tmp_path / "missing.csv", rows)
    before = data.read_bytes()
    out = tmp_path / "out"
    code = evaluate(data, out, tiny_unfused, "--model", str(tiny_unfused))
    cap = capsys.readouterr()
    assert code == 1, cap.err
    assert "Traceback" not in cap.err and "internal error" not in cap.err
    assert "no pair could be scored (5 of 5 failed" in cap.err
    assert "no pair could be scored: all 5 pairs failed" in cap.out and "file not found" in cap.out
    assert sorted(p.name for p in out.iterdir() if p.name != ".humanclap-run.json") == [
        "metrics.json",
        "predictions.csv",
        "report.md",
    ]
    m = strict_json(out / "metrics.json")
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    assert len(preds) == 5 and not preds["scored"].any()
    assert all(preds[x["column"]].isna().all() for x in m["models"])
    assert preds["error"].str.contains("file not found").all()
    assert (m["n_pairs"], m["n_scored"], m["n_failed"], len(m["failed"])) == (5, 0, 5, 5)
    assert m["metrics"] is None and m["paired_vs_first"] is None and m["system_level"] is None
    assert m["reason"].startswith("no pair could be scored")
    md = (out / "report.md").read_text()
    assert "**No metric computed**: no pair could be scored" in md and "## Pairs left out (5)" in md
    assert "## Overall" not in md and "SRCC↑" not in md
    assert data.read_bytes() == before


def test_evaluate_with_every_text_empty_marks_each_pair(tiny_unfused, clips, tmp_path):
    from humanclap.data import load_rated
    from humanclap.evaluation.evaluate import evaluate_models
    from humanclap.evaluation.report import write_report

    data = manifest(
        tmp_path / "m.csv", [{"audio": str(c), "text": TEXTS[i], "score": 0.3 * i} for i, c in enumerate(clips)]
    )
    rated = load_rated(str(data))
    rated.pairs["text"] = ["", "   ", None]  # what a loader of another format could hand over
    result = evaluate_models([str(tiny_unfused)], rated, device="cpu", n_boot=10, progress=False)
    assert result.n_scored == 0 and result.errors() == ["empty text"] * 3
    files = write_report(result, tmp_path / "out")
    assert sorted(files) == ["metrics", "predictions", "report"]
    m = strict_json(files["metrics"])
    assert m["metrics"] is None and "no pair could be scored" in m["reason"]
    # through the CLI an empty text is refused at load time, naming the row
    (tmp_path / "empty.csv").write_text(f"audio,text,score\n{clips[0]},,0.5\n")
    assert (
        cli_main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "empty.csv"),
                "-o",
                str(tmp_path / "o2"),
                "--model",
                str(tiny_unfused),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert not (tmp_path / "o2").exists()


def test_evaluate_one_pair_gives_null_metrics_with_a_note_exit_0(tiny_unfused, clips, tmp_path, capsys):
    data = manifest(tmp_path / "one.csv", [{"audio": str(clips[0]), "text": TEXTS[0], "score": 0.5}])
    out = tmp_path / "out"
    assert evaluate(data, out, tiny_unfused) == 0  # every pair was scored: nothing failed
    cap = capsys.readouterr()
    assert "only 1 of 1 pairs could be scored" in cap.out and "Traceback" not in cap.err
    m = strict_json(out / "metrics.json")
    overall = m["metrics"][m["models"][0]["label"]]["overall"]
    assert overall["n"] == 1 and overall["skipped"] == "fewer than 3 pairs"
    assert all(overall[k] is None for k in ("srcc", "lcc", "ktau", "mse", "srcc_ci"))
    assert "need at least 3" in m["reason"]
    assert "**No metric computed**: only 1 of 1" in (out / "report.md").read_text()


def test_evaluate_two_scored_one_failed_pairs_and_systems_exit_1(tiny_unfused, clips, tmp_path, capsys):
    rows = [
        {"audio": str(clips[i]), "text": TEXTS[i], "score": 0.4 * i, "system": s}
        for i, s in enumerate(["audiocaps", "tango"])
    ]
    rows.append({"audio": "gone.wav", "text": TEXTS[3], "score": 0.9, "system": "tango"})
    data = manifest(tmp_path / "two.csv", rows)
    out = tmp_path / "out"
    code = evaluate(data, out, tiny_unfused, "--model", str(tiny_unfused), "--label", "a", "--label", "b")
    cap = capsys.readouterr()
    assert code == 1 and "1 of 3 pairs could not be scored" in cap.err and "Traceback" not in cap.err
    m = strict_json(out / "metrics.json")
    assert m["n_scored"] == 2 and m["metrics"]["b"]["overall"]["srcc"] is None
    paired = m["paired_vs_first"]["by_model"]["b"]["overall"]
    assert paired["srcc"] == {
        "diff": None,
        "low": None,
        "high": None,
        "p_value": None,
        "note": "fewer than 3 scored pairs",
    }
    level = m["system_level"]["a"]
    assert level["n_systems"] == 2 and level["srcc"] is None
    assert level["notes"] == ["fewer than 3 systems with scored pairs (2): no system-level correlation"]


# -- evaluate: bad input, refused before anything is written ---------------------------------
@pytest.mark.parametrize(
    "score, message",
    [
        ("nan", "non-numeric or missing value 'nan'"),
        ("inf", "non-numeric or missing value 'inf'"),
        ("-0.5", "ranges -0.5..0.5, outside the expected 0..1"),
        ("good", "non-numeric or missing value 'good'"),
    ],
)
def test_evaluate_refuses_bad_scores(tiny_unfused, clips, tmp_path, capsys, score, message):
    data = tmp_path / "bad.csv"
    data.write_text(f"audio,text,score\n{clips[0]},{TEXTS[0]},0.5\n{clips[1]},{TEXTS[1]},{score}\n")
    before = data.read_bytes()
    assert evaluate(data, tmp_path / "out", tiny_unfused) == 2
    err = capsys.readouterr().err
    assert err.startswith("humanclap evaluate: error: ") and message in err and "'score'" in err
    assert not (tmp_path / "out").exists() and data.read_bytes() == before


def test_evaluate_refuses_output_paths_that_cannot_be_or_would_clobber_the_input(tiny_unfused, clips, tmp_path, capsys):
    rows = [{"audio": str(c), "text": TEXTS[i], "score": 0.3 * i} for i, c in enumerate(clips)]
    data = manifest(tmp_path / "m.csv", rows)
    before = data.read_bytes()
    assert evaluate(data, data, tiny_unfused) == 2  # the output "folder" is the manifest itself
    assert "is a file, not a folder" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert evaluate(data, blocker / "sub", tiny_unfused) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert blocker.read_text() == "keep me" and data.read_bytes() == before
    # a manifest called predictions.csv in the output folder would be overwritten
    out = tmp_path / "out"
    out.mkdir()
    own = manifest(out / "predictions.csv", rows)
    own_bytes = own.read_bytes()
    assert evaluate(own, out, tiny_unfused) == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and "--output-dir" in err
    assert own.read_bytes() == own_bytes and sorted(p.name for p in out.iterdir()) == ["predictions.csv"]


def test_evaluate_labels_with_slash_and_pipe_and_refused_labels(tiny_unfused, clips, tmp_path, capsys):
    rows = [{"audio": str(c), "text": TEXTS[i], "score": 0.3 * i} for i, c in enumerate(clips)]
    data = manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    code = evaluate(data, out, tiny_unfused, "--model", str(tiny_unfused), "--label", "runs/ft|best", "--label", "../x")
    assert code == 0, capsys.readouterr().err
    m = strict_json(out / "metrics.json")
    assert [(x["label"], x["column"]) for x in m["models"]] == [("runs/ft|best", "ft_best"), ("../x", "x")]
    assert set(m["metrics"]) == {"runs/ft|best", "../x"}
    assert {p.name for p in out.glob("*.png")} >= {"scatter_ft_best.png", "scatter_x.png"}
    assert all(p.parent == out for p in out.rglob("*"))  # nothing written outside the folder
    md = (out / "report.md").read_text()
    assert "| runs/ft\\|best | ft_best |" in md  # the pipe is escaped, the table holds
    capsys.readouterr()
    for bad in ("", "   ", "two\nlines"):
        assert evaluate(data, tmp_path / "o2", tiny_unfused, "--label", bad) == 2
        assert "--label" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_evaluate_refuses_negative_seed_and_missing_split(tiny_unfused, clips, tmp_path, capsys):
    rows = [{"audio": str(c), "text": TEXTS[i], "score": 0.3 * i} for i, c in enumerate(clips)]
    data = manifest(tmp_path / "m.csv", rows)
    assert evaluate(data, tmp_path / "o", tiny_unfused, "--seed", "-1") == 2
    assert "--seed must be 0 or more" in capsys.readouterr().err
    assert evaluate(data, tmp_path / "o", tiny_unfused, "--split", "validation") == 2
    assert "no split 'validation'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_models_argument_errors_are_usage_errors(tiny_unfused, clips, tmp_path):
    from humanclap.data import load_rated
    from humanclap.evaluation.evaluate import evaluate_models, score_pairs

    data = load_rated(
        str(
            manifest(
                tmp_path / "m.csv", [{"audio": str(c), "text": TEXTS[i], "score": 0.3 * i} for i, c in enumerate(clips)]
            )
        )
    )
    for kwargs, message in (
        ({"models": []}, "no model given"),
        ({"labels": ["a", "b"]}, "2 labels for 1 models"),
        ({"labels": [""]}, "empty --label"),
        ({"n_boot": -1}, "n-boot must be 0 or more"),
        ({"seed": -2}, "seed must be >= 0"),
        ({"models": [42]}, "neither a hub id"),
    ):
        args = {"models": [str(tiny_unfused)], **kwargs}
        with pytest.raises(UsageError, match=message) as info:
            evaluate_models(args.pop("models"), data, **args)
        assert isinstance(info.value, ValueError)  # callers catching ValueError still do
    with pytest.raises(UsageError, match="must pair up"):
        score_pairs(None, ["a.wav"], [], batch_size=1)


# -- train -----------------------------------------------------------------------------------
def rated_manifest(root: Path) -> Path:
    """Tones whose pitch sets the score; clip 2 of each level validates (8 train pairs)."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    rows = []
    for level in range(4):
        for k in range(3):
            x = 0.3 * np.sin(2 * np.pi * 200 * 2 ** (level / 2) * t) + 0.02 * rng.standard_normal(t.size)
            path = write_wav(root / "wav" / f"l{level}_{k}.wav", x.astype(np.float32))
            for j in (level, (level + 1 + k) % 4):
                rows.append(
                    {
                        "audio": str(path),
                        "text": TEXTS[j],
                        "score": round(0.1 + 0.2 * level, 3),
                        "split": "validation" if k == 2 else "train",
                    }
                )
    return manifest(root / "rated.csv", rows)


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    return rated_manifest(tmp_path_factory.mktemp("rated"))


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--train-params",
        "projections",
        "--patience",
        "0",
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--train-split", "validation"], "--val-split 'validation' is also --train-split"),
        (["--train-split", "test", "--val-split", ""], "--test-split 'test' is also --train-split"),
        (["--train-split", "all", "--val-split", "", "--test-split", "all"], "--test-split 'all' is also"),
    ],
)
def test_train_refuses_to_validate_or_test_on_the_training_split(tiny_unfused, rated, tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    assert cli_main(train_args(tiny_unfused, rated, out, *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("humanclap train: error: ") and named in err and "never trains on" in err
    assert not out.exists()  # refused before anything was loaded or written
    from humanclap.training.config import TrainConfig

    with pytest.raises(ConfigError, match="is also --train-split"):
        TrainConfig(data="x.csv", output_dir="o", train_split="validation").validate()


def test_train_refuses_an_output_dir_that_is_a_file_or_holds_the_data(tiny_unfused, rated, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "sub"):
        assert cli_main(train_args(tiny_unfused, rated, out)) == 2
        err = capsys.readouterr().err
        assert "output folder" in err or "is a file" in err
        assert "Traceback" not in err
    assert blocker.read_text() == "keep me"
    out = tmp_path / "run"
    out.mkdir()
    data = out / "metrics.jsonl"  # the run appends one line per epoch to this name
    data.write_text("".join(json.dumps(r) + "\n" for r in pd.read_csv(rated).to_dict("records")))
    before = data.read_bytes()
    assert cli_main(train_args(tiny_unfused, data, out)) == 2
    assert "would overwrite the training data" in capsys.readouterr().err
    assert data.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize(
    "score, message", [("nan", "'nan'"), ("-inf", "'-inf'"), ("bad", "'bad'"), ("-3", "ranges -3..")]
)
def test_train_refuses_bad_scores(tiny_unfused, rated, tmp_path, capsys, score, message):
    df = pd.read_csv(rated)
    df["score"] = df["score"].astype(object)
    df.loc[3, "score"] = score
    data = manifest(tmp_path / "bad.csv", df.to_dict("records"))
    assert cli_main(train_args(tiny_unfused, data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "'score'" in err and message in err and "Traceback" not in err


def test_train_with_too_few_pairs_is_a_config_error(tiny_unfused, tmp_path, capsys):
    data = rated_manifest(tmp_path)
    one = manifest(tmp_path / "one.csv", [{**pd.read_csv(data).iloc[0].to_dict(), "split": "train"}])
    assert cli_main(train_args(tiny_unfused, one, tmp_path / "run", "--val-split", "")) == 2
    assert "fewer than one batch" in capsys.readouterr().err


@pytest.fixture(scope="module")
def negative_model(tmp_path_factory, rated) -> Path:
    """A tiny CLAP whose cosine is negative on every pair of ``rated``: CLAPScore is 0
    everywhere, so the validation SRCC is undefined on every epoch."""
    from humanclap.recipes.tiny import build_tiny_clap
    from humanclap.scoring.clap.scorer import CLAPScorer

    path = tmp_path_factory.mktemp("negative")
    build_tiny_clap(path, seed=0)
    scorer = CLAPScorer.from_pretrained(str(path), device="cpu")
    df = pd.read_csv(rated)
    # The sign is set, not drawn: opposite output biases on the two projection heads, large
    # beside the input-dependent part, point every audio embedding away from every text
    # embedding, whatever the random weights (which differed between transformers versions).
    direction = torch.randn(scorer.model.config.projection_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scorer.model.text_projection.linear2.bias.copy_(direction)
        scorer.model.audio_projection.linear2.bias.copy_(-direction)
    scorer.model.save_pretrained(path)
    scorer = CLAPScorer.from_pretrained(str(path), device="cpu")
    assert np.max(scorer.cosine(list(df.audio), list(df.text))) < -0.1  # the test's premise
    return path


def test_undefined_validation_srcc_keeps_the_last_epoch_and_says_so(negative_model, rated, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    # MAE on clipped scores has no gradient here; weight decay alone makes epochs differ
    code = cli_main(
        train_args(negative_model, rated, out, "--epochs", "3", "--patience", "1", "--loss", "mae", "--lr", "1e-2")
    )
    err = capsys.readouterr().err
    assert code == 0, err
    warned = caplog.text + err
    assert "undefined on every epoch" in warned and "LAST epoch (3) is kept" in warned
    assert "kept epoch: 3 of 3, the last epoch (validation SRCC undefined on every epoch)" in err
    assert "best epoch" not in err and "*best*" not in err and "(stopped early)" not in err
    m = strict_json(out / "metrics.json")
    assert m["selected_by"] == "last epoch (validation SRCC undefined on every epoch)"
    assert m["best_epoch"] == 3 and m["epochs_run"] == 3 and m["validation"]["srcc"] is None
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in records] == [False, False, False]
    assert all(r["val"]["srcc"] is None for r in records)
    # the published model is the last epoch's: its trained tensors are the resume state's
    published = load_file(str(out / "model.safetensors"))
    last = load_file(str(out / "checkpoints/last/trainable.safetensors"))
    base = load_file(str(negative_model / "model.safetensors"))
    assert last and all(torch.equal(published[k], v) for k, v in last.items())
    assert any(not torch.equal(base[k], v) for k, v in last.items())


def test_normal_run_records_selection_by_srcc(rated, tmp_path, capsys):
    from conftest import tiny_model_with_positive_cosines

    df = pd.read_csv(rated)
    model = tiny_model_with_positive_cosines(tmp_path / "m", 1, list(df.audio), list(df.text))
    assert cli_main(train_args(model, rated, tmp_path / "run", "--epochs", "2")) == 0
    err = capsys.readouterr().err
    assert "best epoch:" in err and "undefined on every epoch" not in err
    m = strict_json(tmp_path / "run" / "metrics.json")
    assert m["selected_by"] == "best validation SRCC" and m["validation"]["srcc"] is not None
    assert cli_main(train_args(model, rated, tmp_path / "noval", "--val-split", "")) == 0
    assert strict_json(tmp_path / "noval/metrics.json")["selected_by"] == "last epoch (no validation split)"


def test_train_state_selection_rules():
    from humanclap.training.state import UNDEFINED_SELECTION, TrainState

    nan = float("nan")
    st = TrainState()  # no defined SRCC yet: each epoch is kept, early stopping waits
    for epoch in (1, 2, 3):
        assert st.observe(epoch, {"srcc": nan}, validating=True)
        st.end_epoch({"epoch": epoch}, patience=1, validating=True, epochs=9)
    assert (st.best_epoch, st.best_srcc, st.bad_epochs, st.stopped_early) == (3, None, 0, False)
    assert st.selected_by(True) == UNDEFINED_SELECTION
    assert st.observe(4, {"srcc": 0.1}, True) and st.selected_by(True) == "best validation SRCC"
    assert not st.observe(5, {"srcc": nan}, True)  # undefined never beats a number
    assert (st.best_epoch, st.best_srcc, st.bad_epochs) == (4, 0.1, 1)
    back = TrainState.from_dict(json.loads(json.dumps(st.to_dict())))  # as a resume reads it
    assert (back.best_epoch, back.best_srcc, back.selected_by(True)) == (4, 0.1, "best validation SRCC")
    assert TrainState().selected_by(True) == "no epoch finished"
    assert TrainState(best_epoch=2).selected_by(False) == "last epoch (no validation split)"
