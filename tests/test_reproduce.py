"""`humanclap reproduce` end to end on real RELATE rows (train/validation/test), generated
audio and tiny models standing in for LAION CLAP and the training base (the Hub cannot be
reached here). One run trains the three variants for one epoch; the rerun must reuse them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_model_with_positive_cosines, tone_wav

from humanclap.cli import main as cli_main
from humanclap.recipes.reproduce import PAPER_TABLE, RECIPES, VARIANTS

# offline, the native MS CLAP row says why it was not run and how to pass the weights
MSCLAP_OFFLINE = (
    "not run: microsoft/msclap/CLAP_weights_2023.pth is not in the local Hugging Face "
    "cache and the Hub cannot be reached; pass the msclap .pth (its tokenizer files "
    "beside it) as msclap=/path/to/CLAP_weights_2023.pth"
)

RELATE = Path(__file__).resolve().parents[2] / "shared/data/relate"
# texts per split: enough train pairs for one batch of the configs' 32 (3 pairs per text)
TEXTS_PER_SPLIT = {"train": 13, "validation": 4, "test": 5}

pytestmark = pytest.mark.skipif(
    not (RELATE / "scores/REL.csv").is_file(), reason="RELATE metadata (../shared/data/relate) not available"
)


@pytest.fixture(scope="module")
def relate_dir(tmp_path_factory) -> Path:
    """RELATE layout with real REL.csv rows of a few texts per split, and their wavs."""
    root = tmp_path_factory.mktemp("relate")
    rel = pd.read_csv(RELATE / "scores/REL.csv", dtype=str, keep_default_na=False)
    rel = rel[rel["anchor label"] != "True"]
    keep = []
    for split, n in TEXTS_PER_SPLIT.items():
        rows = rel[rel["in RELATE dataset"] == split]
        keep.append(rows[rows["text"].isin(sorted(rows["text"].unique())[:n])])
    rows = pd.concat(keep)
    (root / "scores").mkdir()
    rows.to_csv(root / "scores/REL.csv", index=False)
    for i, wav in enumerate(sorted(set(rows["wavname"]))):
        tone_wav(root / "RELATE_wave" / wav.lstrip("/"), seed=i)
    return root


def _tiny_model(path: Path, seed: int, relate_dir: Path) -> Path:
    from humanclap.data import load_rated

    pairs = load_rated(f"relate:{relate_dir}").split("test").pairs
    return tiny_model_with_positive_cosines(path, seed, pairs["audio"], pairs["text"])


@pytest.fixture(scope="module")
def models(tmp_path_factory, relate_dir) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("models")
    return _tiny_model(base / "base", 0, relate_dir), _tiny_model(base / "laion", 1, relate_dir)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reproduce_trains_reports_and_resumes(relate_dir, models, tmp_path, capsys):
    base, laion = models
    out = tmp_path / "repro"
    argv = [
        "reproduce",
        "--relate",
        str(relate_dir),
        "-o",
        str(out),
        "--base",
        str(base),
        "--laion",
        str(laion),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--n-boot",
        "20",
        "--no-plots",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    cap = capsys.readouterr()
    assert "[1/6] data" in cap.err and "[6/6] report" in cap.err
    assert cap.err.count("epoch 1/1") == 3  # training's per-epoch lines, one per variant
    table = cap.out
    for label in ("LAION CLAP", "MS CLAP", *(v.label for v in VARIANTS)):
        assert label in table
    assert "not run: microsoft/msclap/CLAP_weights_2023.pth" in table and "0.457" in table

    for v in VARIANTS:
        folder = out / "models" / v.key
        for name in ("config.json", "model.safetensors", "training_config.json", "metrics.json"):
            assert (folder / name).is_file(), (v.key, name)
        assert json.loads((folder / "training_config.json").read_text())["model"] == str(base)

    report = out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    labels = [m["label"] for m in metrics["models"]]
    assert labels == ["LAION CLAP", *(v.label for v in VARIANTS)]  # LAION first, no MS CLAP
    assert metrics["paired_vs_first"]["reference"] == "LAION CLAP"
    assert set(metrics["paired_vs_first"]["by_model"]) == {v.label for v in VARIANTS}
    assert metrics["split"] == "test" and metrics["n_failed"] == 0
    assert metrics["paper"]["Human-CLAP wSCE+MAE"] == PAPER_TABLE["Human-CLAP wSCE+MAE"]
    assert metrics["paper"]["MS CLAP"]["srcc"] == 0.278
    rep = metrics["reproduce"]
    assert rep["mode"] == "trained" and rep["notes"]["MS CLAP"] == MSCLAP_OFFLINE
    assert sorted(rep["trained_now"]) == sorted(v.key for v in VARIANTS) and rep["skipped_complete"] == []
    n_test = metrics["n_pairs"]
    assert n_test == 15 and metrics["metrics"]["LAION CLAP"]["overall"]["n"] == n_test
    srcc = metrics["metrics"]["Human-CLAP wSCE+MAE"]["overall"]
    assert srcc["srcc_ci"] is not None  # CIs on ours
    # the selection gain: the 3 renderings of each of the 5 test texts, LAION CLAP the reference
    gain = metrics["selection_gain"]
    assert gain["n_prompts"] == 5 and gain["candidates_per_prompt"] == [3, 3]
    assert list(gain["models"]) == labels and gain["reference"] == "LAION CLAP"
    assert gain["models"]["Human-CLAP wSCE+MAE"]["metric"]["ci_low"] is not None
    assert json.loads((report / "selection_gain.json").read_text()) == gain
    assert "Selection gain on RELATE test: top-1" in table and "share of gain" in table

    md = (report / "report.md").read_text()
    assert "SRCC↑ (paper)" in md and "0.457" in md and "0.481" in md
    assert "MS CLAP (paper only)" in md and "msclap=/path/to/CLAP_weights_2023.pth" in md
    assert "## Reproduction" in md and "Paired differences against LAION CLAP" in md
    assert "## Selection gain" in md and "| Human-CLAP wSCE+MAE |" in md.split("## Selection gain")[1]
    preds = pd.read_csv(report / "predictions.csv")
    assert len(preds) == n_test and {"LAION_CLAP", "Human-CLAP_wSCE+MAE"} <= set(preds.columns)

    # a rerun reuses the complete models and says so; the weights stay untouched
    before = {v.key: _digest(out / "models" / v.key / "model.safetensors") for v in VARIANTS}
    (report / "scatter_stale.png").write_bytes(b"an earlier run's plot")
    assert cli_main(argv) == 0
    cap = capsys.readouterr()
    assert cap.err.count("skipped training") == 3 and "epoch 1/1" not in cap.err
    assert not (report / "scatter_stale.png").exists()  # the report folder is replaced whole
    assert sorted(p.name for p in out.iterdir()) == [".humanclap-run.json", "models", "report"]
    assert before == {v.key: _digest(out / "models" / v.key / "model.safetensors") for v in VARIANTS}
    rep = json.loads((report / "metrics.json").read_text())["reproduce"]
    assert rep["trained_now"] == [] and len(rep["skipped_complete"]) == 3

    # other training settings with the same folder: refused, not silently reused
    assert cli_main([*argv, "--epochs", "2"]) == 2  # the last --epochs wins
    err = capsys.readouterr().err
    assert "trained with other settings" in err and "epochs" in err and "Traceback" not in err


def test_usage_errors_exit_2(relate_dir, models, tmp_path, capsys):
    out = ["-o", str(tmp_path / "o"), "--laion", str(models[1]), "--device", "cpu"]
    (tmp_path / "empty").mkdir()
    assert cli_main(["reproduce", "--relate", str(tmp_path / "empty"), *out]) == 2
    err = capsys.readouterr().err
    assert "scores/REL.csv" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err

    # the official checkpoints cannot be fetched offline: one line, before any scoring
    assert cli_main(["reproduce", "--relate", str(relate_dir), "--official", *out]) == 2
    err = capsys.readouterr().err
    assert "sarulab-speech/human-clap-wsce-mae" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "report").exists()

    assert cli_main(["reproduce", "--relate", str(relate_dir), "--official", "--epochs", "1", *out]) == 2
    assert "--official" in capsys.readouterr().err

    # the recipes have no released checkpoints: --recipes --official is refused before any work
    assert cli_main(["reproduce", "--relate", str(relate_dir), "--official", "--recipes", *out]) == 2
    err = capsys.readouterr().err
    assert "--recipes" in err and "--official" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "report").exists()


def _row(table: str, label: str) -> list[str]:
    """The cells after ``label`` on its line of the printed table."""
    line = next(ln for ln in table.splitlines() if ln.startswith(label + " "))
    return line[len(label) :].split()


def test_recipes_added_to_a_plain_run_reused_and_refused_on_another_identity(relate_dir, models, tmp_path, capsys):
    base, laion = models
    out = tmp_path / "repro"
    argv = ["reproduce", "--relate", str(relate_dir), "-o", str(out), "--base", str(base), "--laion", str(laion)]
    argv += ["--epochs", "1", "--device", "cpu", "--n-boot", "0", "--no-plots", "--no-progress"]
    assert cli_main(argv) == 0  # a plain run first: --recipes adds to it
    capsys.readouterr()

    assert cli_main([*argv, "--recipes"]) == 0
    cap = capsys.readouterr()
    assert "[1/10] data" in cap.err and "[10/10] report" in cap.err
    assert cap.err.count("skipped training") == 3 and cap.err.count("epoch 1/1") == 4  # only the recipes train
    for v in RECIPES:
        n, srcc, paper_srcc, *_, mse, paper_mse = _row(cap.out, v.label)
        assert n == "15" and (paper_srcc, paper_mse) == ("–", "–") and 0 <= float(mse) < 1, (v.label, srcc)
        folder = out / "models" / v.key
        assert json.loads((folder / "training_config.json").read_text())["model"] == str(base)
    assert _row(cap.out, "Human-CLAP wSCE+MAE")[2] == "0.457"  # the paper's rows keep their numbers
    assert "Recipe rows: beyond the paper" in cap.out
    assert (out / "models/head_pairwise/score_head.safetensors").is_file()
    assert not (out / "models/listnet/score_head.safetensors").exists()

    metrics = json.loads((out / "report/metrics.json").read_text())
    labels = [m["label"] for m in metrics["models"]]
    assert labels == ["LAION CLAP", *(v.label for v in VARIANTS), *(v.label for v in RECIPES)]
    assert not set(metrics["paper"]) & {v.label for v in RECIPES}  # not in the paper
    for v in RECIPES:
        overall = metrics["metrics"][v.label]["overall"]
        assert overall["n"] == 15 and overall["mse"] is not None
    rep = metrics["reproduce"]
    assert rep["recipes"] == [v.key for v in RECIPES] and sorted(rep["trained_now"]) == sorted(v.key for v in RECIPES)
    assert [r["paper"] for r in rep["rows"] if r.get("recipe")] == [None] * 4
    md = (out / "report/report.md").read_text()
    assert "Recipe rows are not in the paper" in md and "| ListNet | 15 |" in md
    assert json.loads((out / ".humanclap-run.json").read_text())["identity"]["settings"]["recipes"] is True

    # rerun: everything reused
    digests = {v.key: _digest(out / "models" / v.key / "model.safetensors") for v in RECIPES}
    assert cli_main([*argv, "--recipes"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count("skipped training") == 7 and "epoch 1/1" not in cap.err

    # a plain run again (its marker as an older humanclap wrote it, without "recipes"): the paper's
    # rows only; the recipe models stay untouched
    marker = json.loads((out / ".humanclap-run.json").read_text())
    del marker["identity"]["settings"]["recipes"]
    (out / ".humanclap-run.json").write_text(json.dumps(marker))
    assert cli_main(argv) == 0
    cap = capsys.readouterr()
    assert "[6/6] report" in cap.err and "Recipe" not in cap.out
    metrics = json.loads((out / "report/metrics.json").read_text())
    assert len(metrics["models"]) == 4 and "recipes" not in metrics["reproduce"]
    assert digests == {v.key: _digest(out / "models" / v.key / "model.safetensors") for v in RECIPES}

    # a recipe folder of another identity (here another recipe's model): refused, naming what differs
    listnet = out / "models/listnet"
    for f in listnet.iterdir():
        if f.is_file():
            f.unlink()
    for f in (out / "models/mse_pairwise").iterdir():
        if f.is_file():
            shutil.copy(f, listnet / f.name)
    assert cli_main([*argv, "--recipes"]) == 2
    err = capsys.readouterr().err
    assert "ListNet model trained with other settings" in err and "'loss'" in err and "Traceback" not in err
