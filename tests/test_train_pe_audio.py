"""Fine-tuning a PE-Audio base through ``humanclap train`` (``training/towers.py``:
``PeAudioTowers``) on a tiny random ``PeAudioModel``, then scoring the exported folder with
``--model OUT``; the codec encoder and the logit scale and bias never train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import make_rated_manifest

from humanclap.cli import main as cli_main
from humanclap.data import load_rated
from humanclap.scoring.pe_audio import pe_audio_available

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not pe_audio_available(),
        reason="PE-Audio needs transformers >= 5.0 (transformers.models.pe_audio); this stack lacks it",
    ),
]
COMMON = ["--device", "cpu", "--batch-size", "8", "--epochs", "1", "--lr", "1e-3", "--seed", "3", "--no-progress"]


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    return make_rated_manifest(tmp_path_factory.mktemp("rated"))


@pytest.fixture(scope="module")
def base(tmp_path_factory, rated) -> Path:
    """A tiny PE-Audio whose median cosine on the rated pairs is positive (else every
    CLAPScore is 0): negating the text head's projection flips every cosine."""
    from humanclap.recipes.tiny_pe_audio import build_tiny_pe_audio
    from humanclap.scoring import load_scorer

    folder = build_tiny_pe_audio(tmp_path_factory.mktemp("pe_base"), seed=1)
    scorer = load_scorer(str(folder), device="cpu")
    pairs = load_rated(str(rated)).pairs
    if np.median(scorer.cosine(list(pairs.audio), list(pairs.text))) < 0:
        with torch.no_grad():
            scorer.model.text_audio_head.proj.weight.neg_()
        scorer.model.save_pretrained(folder)
    return folder


def test_cli_trains_pe_audio_and_scores_the_exported_folder(base, rated, tmp_path, capsys):
    from transformers import PeAudioModel

    out = tmp_path / "run"
    assert (
        cli_main(
            [
                "train",
                "--model",
                str(base),
                "--data",
                str(rated),
                "--output-dir",
                str(out),
                "--train-params",
                "all",
                *COMMON,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "a PE-Audio folder" in err, err
    assert json.loads((out / "config.json").read_text())["model_type"] == "pe_audio"
    assert (out / "preprocessor_config.json").is_file() and (out / "tokenizer.json").is_file()
    PeAudioModel.from_pretrained(out)  # transformers loads it as it is
    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    fixed = [k for k in before if ".dac_encoder." in k or ".bottleneck." in k or "logit" in k]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)  # never trained
    for part in ("text_audio_head.", "audio_head.", "text_model.layers.0.", "audio_encoder.layers.0."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part)), part

    # `humanclap score --model OUT` gives what the Python API gives for the exported folder
    from humanclap.scoring import load_scorer

    pairs = load_rated(str(rated)).pairs.head(6)
    manifest = tmp_path / "pairs.csv"
    pairs[["audio", "text"]].to_csv(manifest, index=False)
    scores = tmp_path / "scores.jsonl"
    assert cli_main(["score", str(manifest), "--model", str(out), "-o", str(scores), "--device", "cpu"]) == 0
    got = np.array([json.loads(line)["clapscore"] for line in scores.read_text().splitlines()])
    ref = load_scorer(str(out), device="cpu").score(list(pairs.audio), list(pairs.text))
    assert len(got) == len(pairs) and np.abs(got - ref).max() <= 1e-6
    capsys.readouterr()


def test_lora_defaults_adapt_both_towers_and_merge_into_a_plain_folder(base, rated, tmp_path, capsys):
    out = tmp_path / "lora"
    assert (
        cli_main(
            [
                "train",
                "--model",
                str(base),
                "--data",
                str(rated),
                "--output-dir",
                str(out),
                "--train-params",
                "lora",
                *COMMON,
            ]
        )
        == 0
    )
    after = load_file(str(out / "model.safetensors"))
    assert set(after) == set(load_file(str(base / "model.safetensors")))  # merged: no adapter keys
    before = load_file(str(base / "model.safetensors"))
    assert not torch.equal(
        before["text_model.layers.0.attn.Wqkv.weight"], after["text_model.layers.0.attn.Wqkv.weight"]
    )
    assert not torch.equal(
        before["audio_encoder.layers.0.self_attn.q_proj.weight"],
        after["audio_encoder.layers.0.self_attn.q_proj.weight"],
    )
    capsys.readouterr()


def test_train_logit_scale_is_refused_with_the_reason(base, rated, tmp_path, capsys):
    assert (
        cli_main(
            [
                "train",
                "--model",
                str(base),
                "--data",
                str(rated),
                "--output-dir",
                str(tmp_path / "x"),
                "--train-params",
                "projections",
                "--train-logit-scale",
                *COMMON,
            ]
        )
        == 2
    )
    assert "does not apply to PE-Audio" in capsys.readouterr().err
