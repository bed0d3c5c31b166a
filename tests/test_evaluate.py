"""`humanclap evaluate` end to end on real RELATE rows, tiny models and generated audio.

The RELATE folder is built from real rows of the public REL.csv (test split, every
system), with short generated wav files at the paths the rows name. One true subprocess
run covers the entry point; the other CLI checks call ``cli.main`` in-process (importing
torch and transformers' CLAP costs ~10 s of CPU per process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model_with_positive_cosines, tone_wav
from scipy import stats

from humanclap.cli import main as cli_main
from humanclap.data import load_rated
from humanclap.evaluation.evaluate import evaluate_models, short_name, unique_names
from humanclap.evaluation.report import write_report
from humanclap.scoring.clap.scorer import CLAPScorer

RELATE = Path(__file__).resolve().parents[2] / "shared/data/relate"

pytestmark = pytest.mark.skipif(
    not (RELATE / "scores/REL.csv").is_file(), reason="RELATE metadata (../shared/data/relate) not available"
)


def _read_str(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def relate_dir(tmp_path_factory) -> Path:
    """RELATE layout holding ~40 real test-split pairs across all five systems."""
    root = tmp_path_factory.mktemp("relate")
    rel = _read_str(RELATE / "scores/REL.csv")
    test = rel[(rel["in RELATE dataset"] == "test") & (rel["anchor label"] != "True")]
    systems = test["wavname"].str.split("/").str[1]
    n_sys = test.assign(s=systems).drop_duplicates(["wavname", "text"]).groupby("text")["s"].nunique()
    # every text rated on all five systems, then the first others: texts repeat across systems
    texts = sorted(n_sys[n_sys == 5].index) + sorted(n_sys[n_sys < 5].index)[:6]
    keep = rel["text"].isin(texts) & (rel["in RELATE dataset"] == "test")
    (root / "scores").mkdir()
    rel[keep].to_csv(root / "scores/REL.csv", index=False)
    pair_keys = rel[keep][["wavname", "text"]].drop_duplicates()
    for aspect in ("IS", "OS"):
        df = _read_str(RELATE / f"scores/{aspect}.csv")
        df.merge(pair_keys, on=["wavname", "text"]).to_csv(root / f"scores/{aspect}.csv", index=False)
    (root / "listener_attributes").mkdir()
    attrs = _read_str(RELATE / "listener_attributes/REL.csv")
    attrs[attrs["listener_id"].isin(set(rel[keep]["listener_id"]))].to_csv(
        root / "listener_attributes/REL.csv", index=False
    )
    for i, wav in enumerate(sorted(set(pair_keys["wavname"]))):
        tone_wav(root / "RELATE_wave" / wav.lstrip("/"), seed=i)
    return root


def _tiny_model(path: Path, seed: int, relate_dir: Path) -> Path:
    pairs = load_rated(f"relate:{relate_dir}").split("test").pairs.head(10)
    return tiny_model_with_positive_cosines(path, seed, pairs["audio"], pairs["text"])


@pytest.fixture(scope="module")
def models(tmp_path_factory, relate_dir) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("models")
    return _tiny_model(base / "clap-a", 0, relate_dir), _tiny_model(base / "clap-b", 1, relate_dir)


def _check_metrics_match_predictions(out: Path, columns: list[str]) -> dict:
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    report = json.loads((out / "metrics.json").read_text())
    ok = preds[preds["scored"]]
    for col, model in zip(columns, report["models"]):
        assert model["column"] == col
        m = report["metrics"][model["label"]]["overall"]
        p, h = ok[col].to_numpy(float), ok["human"].to_numpy(float)
        assert m["n"] == len(ok)
        assert m["srcc"] == pytest.approx(stats.spearmanr(p, h)[0], abs=1e-6)
        assert m["lcc"] == pytest.approx(stats.pearsonr(p, h)[0], abs=1e-6)
        assert m["ktau"] == pytest.approx(stats.kendalltau(p, h)[0], abs=1e-6)
        assert m["mse"] == pytest.approx(np.mean((p - h) ** 2), abs=1e-7)
        lo, hi = m["srcc_ci"]
        assert lo <= m["srcc"] <= hi
        for system, grp in ok.groupby("system"):
            ms = report["metrics"][model["label"]][f"system:{system}"]
            assert ms["n"] == len(grp)
            assert ms["mse"] == pytest.approx(np.mean((grp[col] - grp["human"]) ** 2), abs=1e-7)
    return report


def test_cli_two_models_with_broken_audio(relate_dir, models, tmp_path):
    """Subprocess run: two models, one missing and one corrupt wav -> exit 1, all written."""
    data = tmp_path / "relate"
    shutil.copytree(relate_dir, data)
    wavs = sorted((data / "RELATE_wave").rglob("*.wav"))
    wavs[0].unlink()
    wavs[1].write_bytes(b"not a wav file")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "humanclap.cli",
        "evaluate",
        "--data",
        f"relate:{data}",
        "--split",
        "test",
        "--output-dir",
        str(out),
        "--model",
        str(models[0]),
        "--model",
        str(models[1]),
        "--device",
        "cpu",
        "--n-boot",
        "50",
        "--seed",
        "3",
    ]
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "SRCC" in proc.stdout and "clap-a" in proc.stdout and "clap-b" in proc.stdout
    assert "Traceback" not in proc.stderr

    for name in (
        "predictions.csv",
        "metrics.json",
        "report.md",
        "histograms.png",
        "per_system_srcc.png",
        "scatter_clap-a.png",
        "scatter_clap-b.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*tmp*")), "temporary files left behind"

    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    n_pairs = len(load_rated(f"relate:{data}").split("test"))
    assert len(preds) == n_pairs
    assert {"wavname", "text", "system", "split", "human", "n_ratings", "clap-a", "clap-b", "error"} <= set(
        preds.columns
    )
    assert set(preds["system"]) == {"audiocaps", "audioldm", "audioldm2", "tango", "tango2"}
    broken = {"/" + str(w.relative_to(data / "RELATE_wave")) for w in wavs[:2]}
    failed = preds[~preds["scored"]]
    assert set(failed["wavname"]) == broken
    assert failed["clap-a"].isna().all() and (failed["error"].str.len() > 0).all()
    assert any("not found" in e for e in failed["error"])
    assert any("unreadable" in e for e in failed["error"])

    report = _check_metrics_match_predictions(out, ["clap-a", "clap-b"])
    assert report["n_failed"] == len(failed) and report["n_scored"] == n_pairs - len(failed)
    assert {f["wavname"] for f in report["failed"]} == broken
    assert report["seed"] == 3 and report["n_boot"] == 50 and "0-1 scale" in report["note"]
    assert [m["revision"].startswith("sha256:") for m in report["models"]] == [True, True]
    paired = report["paired_vs_first"]
    assert paired["reference"] == "clap-a"
    d = paired["by_model"]["clap-b"]["overall"]["srcc"]
    a, b = (report["metrics"][k]["overall"]["srcc"] for k in ("clap-a", "clap-b"))
    assert d["diff"] == pytest.approx(b - a, abs=1e-9) and 0 <= d["p_value"] <= 1
    assert "clap-a" in report["system_level"]

    md = (out / "report.md").read_text()
    assert "MSE on the 0–1 scale" in md and "SRCC↑" in md and "Per system" in md
    assert all(w in md for w in broken)
    assert "histograms.png" in md


def test_each_text_and_audio_embedded_once(relate_dir, models):
    """Python API: one text embedding per unique text, one decode per unique clip, and the
    scores equal the plain per-pair reference ``CLAPScorer.score``."""
    scorer = CLAPScorer.from_pretrained(str(models[0]), device="cpu")
    embedded, loaded = [], []
    embed_text, load = scorer.embed_text, scorer.load_features
    scorer.embed_text = lambda texts, batch_size=64: (embedded.extend(texts), embed_text(texts, batch_size))[1]
    scorer.load_features = lambda item: (loaded.append(item), load(item))[1]

    data = load_rated(f"relate:{relate_dir}").split("test")
    pairs = data.pairs
    assert pairs["text"].nunique() < len(pairs)  # the point of the test: texts repeat
    result = evaluate_models([scorer], data, n_boot=0, progress=False)
    assert sorted(embedded) == sorted(pairs["text"].unique())
    assert sorted(loaded) == sorted(pairs["audio"].unique())
    counts = result.runs[0].counts
    assert counts["texts_embedded"] == pairs["text"].nunique()
    assert counts["audio_decoded"] == counts["audio_embedded"] == pairs["audio"].nunique()

    scorer.embed_text, scorer.load = embed_text, load
    reference = scorer.score(pairs["audio"].tolist(), pairs["text"].tolist())
    np.testing.assert_allclose(result.runs[0].scores, reference, atol=1e-6)
    assert result.n_failed == 0


def test_cli_clean_run_exit_0_and_custom_labels_paper(relate_dir, models, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(
        [
            "evaluate",
            "--data",
            f"relate:{relate_dir}",
            "-o",
            str(out),
            "--model",
            str(models[0]),
            "--label",
            "Tiny A",
            "--device",
            "cpu",
            "--n-boot",
            "20",
            "--no-progress",
            "--no-plots",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Tiny A" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["n_failed"] == 0  # test split by default
    # the XACLE challenge's metrics are for XACLE-layout data only: RELATE's files are as before
    assert "xacle_challenge" not in report and "challenge" not in printed
    assert "challenge" not in (out / "report.md").read_text()
    assert report["models"][0]["column"] == "Tiny_A"

    # the API adds published numbers beside ours
    data = load_rated(f"relate:{relate_dir}").split("test")
    result = evaluate_models(
        [str(models[0])],
        data,
        labels=["Human-CLAP"],
        device="cpu",
        n_boot=0,
        progress=False,
        paper={"Human-CLAP": {"srcc": 0.457, "lcc": 0.481, "ktau": 0.320, "mse": 0.057}, "LAION CLAP": {"srcc": 0.280}},
    )
    write_report(result, tmp_path / "api", plots=False)
    md = (tmp_path / "api/report.md").read_text()
    assert "SRCC↑ (paper)" in md and "0.457" in md and "LAION CLAP (paper only)" in md


def test_bad_spec_and_bad_model_exit_2(relate_dir, models, tmp_path, capsys):
    out = ["-o", str(tmp_path / "o"), "--model", str(models[0])]
    assert cli_main(["evaluate", "--data", f"relate:{tmp_path / 'nowhere'}", *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RELATE folder not found" in err and "Traceback" not in err

    for argv in (
        ["--data", "what:ever", *out],
        ["--data", f"relate:{relate_dir}", "--split", "nosuchsplit", *out],
        [
            "--data",
            f"relate:{relate_dir}",
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(models[0]),
            "--model",
            str(tmp_path / "no-model"),
        ],
        ["--data", f"relate:{relate_dir}", *out, "--label", "a", "--label", "b"],
    ):
        assert cli_main(["evaluate", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("humanclap evaluate: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_xacle_and_manifest_layouts(relate_dir, models, tmp_path):
    pairs = load_rated(f"relate:{relate_dir}").split("test").pairs.head(8)
    rng = np.random.default_rng(0)
    # XACLE: per-listener validation ratings, audio under wav/validation/
    rows = []
    (tmp_path / "xacle/wav/validation").mkdir(parents=True)
    for i, (audio, text) in enumerate(zip(pairs["audio"], pairs["text"])):
        shutil.copy(audio, tmp_path / "xacle/wav/validation" / f"{i:03d}.wav")
        rows += [
            {"wav_file_name": f"{i:03d}.wav", "text": text, "score": int(rng.integers(0, 11)), "listener_id": lid}
            for lid in ("a", "b")
        ]
    (tmp_path / "xacle/meta_data").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "xacle/meta_data/validation.csv", index=False)
    out = tmp_path / "out-xacle"
    assert (
        cli_main(
            [
                "evaluate",
                "--data",
                f"xacle:{tmp_path / 'xacle'}",
                "-o",
                str(out),
                "--model",
                str(models[0]),
                "--device",
                "cpu",
                "--n-boot",
                "10",
                "--no-progress",
                "--no-plots",
            ]
        )
        == 0
    )
    _check_metrics_match_predictions(out, ["clap-a"])
    assert json.loads((out / "metrics.json").read_text())["split"] == "all"

    # manifest: one row per rating on a 1-5 scale, absolute audio paths, named systems
    manifest = pd.DataFrame(
        {
            "audio": pairs["audio"],
            "text": pairs["text"],
            "score": rng.integers(1, 6, len(pairs)),
            "system": ["sysA", "sysB"] * (len(pairs) // 2),
        }
    )
    manifest.to_csv(tmp_path / "ratings.csv", index=False)
    out = tmp_path / "out-man"
    assert (
        cli_main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "ratings.csv"),
                "-o",
                str(out),
                "--model",
                str(models[0]),
                "--model",
                str(models[0]),
                "--device",
                "cpu",
                "--n-boot",
                "10",
                "--score-scale",
                "1-5",
                "--no-progress",
                "--no-plots",
            ]
        )
        == 0
    )
    _check_metrics_match_predictions(out, ["clap-a", "clap-a-2"])
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["human"].between(0, 1).all() and len(preds) == len(pairs)
    np.testing.assert_allclose(preds["clap-a"], preds["clap-a-2"])  # same model, same scores


def test_names():
    assert short_name("sarulab-speech/human-clap-wsce-mae") == "human-clap-wsce-mae"
    assert short_name("/runs/ft/best/") == "best"
    assert unique_names(["a", "a", "text"], reserved=["text"]) == ["a", "a-2", "text-2"]


def test_a_model_that_is_neither_a_spec_nor_a_scorer_is_refused():
    # checked before any data is read or model loaded
    with pytest.raises(ValueError, match="neither a hub id or checkpoint folder nor a loaded scorer"):
        evaluate_models([42], data=None)
