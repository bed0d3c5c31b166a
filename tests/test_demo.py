"""The offline demo end to end (small size) and the shipped base model's recipe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from humanclap.recipes.demo_base import RECIPE, pretrain_base, shipped_base


def test_shipped_base_matches_its_recipe():
    base = shipped_base()
    recipe = json.loads((base / "recipe.json").read_text())
    assert recipe["model_sha256"] == hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    assert {k: recipe[k] for k in RECIPE} == RECIPE
    from transformers import ClapModel

    model = ClapModel.from_pretrained(base)  # a plain transformers checkpoint
    assert model.config.projection_dim == RECIPE["projection_dim"]


def test_base_recipe_is_deterministic(tmp_path):
    from humanclap.synth.dataset import generate

    generate(tmp_path / "synth", seed=0, size="small")
    digests = []
    for run in ("a", "b"):
        out = pretrain_base(
            tmp_path / "synth", tmp_path / f"work_{run}", tmp_path / f"base_{run}", epochs=1, printer=lambda _: None
        )
        digests.append(json.loads((out / "recipe.json").read_text())["model_sha256"])
    assert digests[0] == digests[1]


@pytest.mark.slow
def test_small_demo_runs_and_human_clap_beats_the_base(tmp_path):
    """The small demo, run once, in-process: the claim is read from the returned DemoResult.

    (The CLI's part, flags -> run_demo and printing, is covered without the work in
    tests/test_cli_errors.py.) Two threads, as the subprocess this replaced was given."""
    import torch

    from humanclap.errors import UsageError
    from humanclap.outputs import LOCK
    from humanclap.recipes.demo import CLAIM_LABEL, run_demo

    lines: list[str] = []

    def interrupted_in_epoch_2(line: str) -> None:  # Ctrl-C during the first fine-tuning
        lines.append(line)
        if "epoch 2/" in line:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_demo(tmp_path, seed=0, size="small", n_boot=200, printer=interrupted_in_epoch_2, progress=False)
        assert not (tmp_path / LOCK).exists()
        # the same command again continues: data reused, the interrupted fine-tuning resumed
        lines.clear()
        demo = run_demo(tmp_path, seed=0, size="small", n_boot=200, printer=lines.append, progress=False)
        assert "synthetic RELATE-style data: reusing" in lines[0]
        assert any("resuming Human-CLAP (MAE)" in line for line in lines)
        assert any("resumed from" in line and "after epoch 2" in line for line in lines)
        # another seed in the same folder: refused at once, naming the seed then and now
        with pytest.raises(UsageError, match="data.seed: 0 then, 1 now"):
            run_demo(tmp_path, seed=1, size="small", n_boot=200, printer=lambda _: None)
        # and the same seed again reuses every finished stage
        again: list[str] = []
        rerun = run_demo(tmp_path, seed=0, size="small", n_boot=200, printer=again.append, progress=False)
        assert sum("reusing" in line for line in again) == 4 and not any("epoch 1/" in x for x in again)
        assert [r["overall"]["srcc"] for r in rerun.rows] == [r["overall"]["srcc"] for r in demo.rows]
    finally:
        torch.set_num_threads(threads)
    rows = {r["model"]: r for r in demo.rows}
    assert list(rows) == ["base CLAP", "Human-CLAP (MAE)", "Human-CLAP (wSCE)", CLAIM_LABEL]
    # the claim: Human-CLAP (wSCE+MAE) beats the base CLAP's SRCC on the held-out test split
    assert rows[CLAIM_LABEL]["overall"]["srcc"] > rows["base CLAP"]["overall"]["srcc"]
    assert rows[CLAIM_LABEL]["srcc_diff_vs_base"] > 0
    printed = "\n".join(lines)
    assert "Human-CLAP (wSCE+MAE)" in printed and "p < 0.05" in printed
    verdict = "holds" if demo.claim_holds else "does NOT hold"  # the table says what was returned
    assert f"p < 0.05': {verdict}" in printed
    # demo_summary.json is the returned result, as written
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["claim_holds"] == demo.claim_holds
    assert {r["model"]: r["overall"]["srcc"] for r in summary["rows"]} == pytest.approx(
        {m: r["overall"]["srcc"] for m, r in rows.items()}
    )
    report = Path(tmp_path / "report" / "report.md").read_text()
    assert "MSE" in report and (tmp_path / "report" / "predictions.csv").is_file()
    # the selection gain of every model (best of N among a text's renderings), printed after
    # the main table, in demo_summary.json, selection_gain.json and report.md
    gain = summary["selection_gain"]
    assert list(gain["models"]) == list(rows) and gain["reference"] == "base CLAP"
    assert gain["n_prompts"] > 0 and gain["candidates_per_prompt"][0] >= 2
    base_gain = gain["models"]["base CLAP"]
    assert base_gain["oracle"]["mean"] >= base_gain["metric"]["mean"] >= 0
    assert base_gain["random"]["ci_low"] is not None  # bootstrap CIs over prompts
    assert json.loads((tmp_path / "report" / "selection_gain.json").read_text()) == gain
    assert "## Selection gain" in report
    assert (
        printed.index("p < 0.05'")
        < printed.index("Selection gain on the test split (seed 0)")
        < printed.index("full report:")
    )
    # the synthesized folder went through the RELATE loader with its own counts
    synth = json.loads((tmp_path / "data" / "synth_summary.json").read_text())
    assert demo.rows[0]["overall"]["n"] == synth["pairs_per_split"]["test"]

    # --extended in the same folder: the four paper rows are reused (the folder's identity is
    # the same), the recipes are trained and added, each also paired against wSCE+MAE
    from humanclap.recipes.demo import EXTENDED

    ext_lines: list[str] = []
    ext = run_demo(tmp_path, seed=0, size="small", n_boot=200, printer=ext_lines.append, progress=False, extended=True)
    assert sum("reusing" in line for line in ext_lines) == 4
    assert [r["model"] for r in ext.rows] == [*rows, *EXTENDED]
    assert [r["overall"]["srcc"] for r in ext.rows[:4]] == [r["overall"]["srcc"] for r in demo.rows]
    claim_srcc = rows[CLAIM_LABEL]["overall"]["srcc"]
    for r in ext.rows[4:]:
        # the paired difference is the plain SRCC difference, with a CI around it and a p
        assert r["srcc_diff_vs_claim"] == pytest.approx(r["overall"]["srcc"] - claim_srcc, abs=1e-12)
        low, high = r["srcc_diff_vs_claim_ci"]
        assert low <= r["srcc_diff_vs_claim"] <= high and 0 <= r["srcc_p_vs_claim"] <= 1
    for label, (folder, settings) in EXTENDED.items():
        trained = json.loads((tmp_path / "models" / folder / "training_config.json").read_text())
        assert {k: trained[k] for k in settings} == settings, label
    assert (tmp_path / "models" / "head_pairwise" / "score_head.safetensors").is_file()
    printed = "\n".join(ext_lines)
    assert printed.index("p < 0.05'") < printed.index("Recipes beyond the paper against") < printed.index("Selection")
    assert json.loads((tmp_path / "demo_summary.json").read_text())["extended"] is True
    # and the plain demo again prints its four rows as before
    plain: list[str] = []
    again = run_demo(tmp_path, seed=0, size="small", n_boot=200, printer=plain.append, progress=False)
    assert [r["overall"]["srcc"] for r in again.rows] == [r["overall"]["srcc"] for r in demo.rows]
    assert "Recipes beyond the paper" not in "\n".join(plain)
