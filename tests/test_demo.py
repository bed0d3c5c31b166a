"""The offline demo end to end (small size) and the shipped base model's recipe."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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
        out = pretrain_base(tmp_path / "synth", tmp_path / f"work_{run}", tmp_path / f"base_{run}",
                            epochs=1, printer=lambda _: None)
        digests.append(json.loads((out / "recipe.json").read_text())["model_sha256"])
    assert digests[0] == digests[1]


@pytest.mark.slow
def test_small_demo_runs_and_human_clap_beats_the_base(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-m", "humanclap.cli", "demo", "--size", "small", "--seed", "0",
                          "--output-dir", str(tmp_path), "--n-boot", "200"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Human-CLAP (wSCE+MAE)" in res.stdout and "p < 0.05" in res.stdout
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    srcc = {r["model"]: r["overall"]["srcc"] for r in summary["rows"]}
    assert srcc["Human-CLAP (wSCE+MAE)"] > srcc["base CLAP"]
    report = Path(tmp_path / "report" / "report.md").read_text()
    assert "MSE" in report and (tmp_path / "report" / "predictions.csv").is_file()
    # the synthesized folder went through the RELATE loader with its own counts
    synth = json.loads((tmp_path / "data" / "synth_summary.json").read_text())
    assert summary["rows"][0]["overall"]["n"] == synth["pairs_per_split"]["test"]
