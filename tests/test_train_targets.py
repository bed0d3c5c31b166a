"""`humanclap train` with listener-z targets, screening and ranking terms, end to end on a
tiny model; the config fields and flags of those settings."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_wav

from humanclap.cli import main as cli_main
from humanclap.errors import ConfigError
from humanclap.training import losses
from humanclap.training.config import CONFIG_DIR, TrainConfig, add_config_arguments, config_from_args

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["a dog barks", "rain on a roof", "a car horn honks", "birds chirp"]
BIAS = {"0001": 0.0, "0002": 0.25, "0003": -0.1}  # personal offsets: z-scoring removes them


def listener_manifest(root: Path) -> Path:
    """6 levels x 4 clips (2 train, 1 validation, 1 test), one text each; listeners 0001-0003
    rate every pair with their own offset, 0009 rates training pairs in reverse (screened),
    0005 rates two pairs only (kept raw)."""
    t = np.arange(8000) / 16000
    rows = []
    for level in range(6):
        for k, split in enumerate(("train", "train", "validation", "test")):
            tone = 0.3 * np.sin(2 * np.pi * 220 * 2 ** (level / 2 + k / 12) * t)
            path = write_wav(root / f"l{level}_{k}.wav", tone.astype(np.float32))
            truth = 0.15 + 0.13 * level + 0.02 * k
            for lid, bias in BIAS.items():
                rows.append((path.name, TEXTS[level % 4], round(float(np.clip(truth + bias, 0, 1)), 3), lid, split))
            if split == "train":
                rows.append((path.name, TEXTS[level % 4], round(1 - truth, 3), "0009", split))
            if split == "train" and level < 2 and k == 0:
                rows.append((path.name, TEXTS[level % 4], 0.6, "0005", split))
    manifest = root / "rated.csv"
    pd.DataFrame(rows, columns=["audio", "text", "score", "listener_id", "split"]).to_csv(manifest, index=False)
    return manifest


def test_train_listener_z_screening_pairwise_evaluates_on_raw_means(tiny_unfused, tmp_path, caplog):
    from humanclap import CLAPScorer
    from humanclap.data import load_rated
    from humanclap.evaluation.metrics import mse, srcc

    manifest = listener_manifest(tmp_path / "data")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        code = cli_main(
            [
                "train",
                "--model",
                str(tiny_unfused),
                "--data",
                str(manifest),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--lr",
                "1e-3",
                "--warmup-ratio",
                "0",
                "--targets",
                "listener-z",
                "--screen-listeners",
                "0.0",
                "--loss",
                "wsce+mae+0.5*pairwise",
            ]
        )
    assert code == 0
    assert "keep their raw scores" in caplog.text and "0005" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    targets = metrics["targets"]
    assert targets["kind"] == "listener-z" and targets["raw_listeners"] == ["0005"]
    assert targets["train_pairs"] == 12 and targets["listeners"] == 5
    dropped = targets["screening"]["dropped"]
    assert [d["listener_id"] for d in dropped] == ["0009"] and dropped[0]["shared_pairs"] == 12
    assert dropped[0]["agreement"] < -0.9 and targets["screening"]["threshold"] == 0.0
    saved = TrainConfig.load(out / "training_config.json")
    assert (saved.targets, saved.screen_listeners, saved.loss) == ("listener-z", 0.0, "wsce+mae+0.5*pairwise")
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"loss", "wsce", "mae", "pairwise"}

    # validation and test metrics are those of the raw mean human scores
    rated = load_rated(str(manifest))
    scorer = CLAPScorer.from_pretrained(str(out), device="cpu")
    for split, key in (("validation", "validation"), ("test", "test")):
        pairs = rated.split(split).pairs
        pred = scorer.score(list(pairs.audio), list(pairs.text))
        assert metrics[key]["srcc"] == pytest.approx(srcc(pred, pairs.human), abs=1e-6)
        assert metrics[key]["mse"] == pytest.approx(mse(pred, pairs.human), abs=1e-6)


def test_listener_z_without_listener_ids_is_a_usage_error(tiny_unfused, tmp_path, capsys):
    manifest = listener_manifest(tmp_path / "data")
    df = pd.read_csv(manifest).drop(columns="listener_id")
    df.to_csv(manifest, index=False)
    code = cli_main(
        [
            "train",
            "--model",
            str(tiny_unfused),
            "--data",
            str(manifest),
            "--output-dir",
            str(tmp_path / "o"),
            "--device",
            "cpu",
            "--targets",
            "listener-z",
            "--batch-size",
            "4",
        ]
    )
    assert code == 2 and "per-listener ratings" in capsys.readouterr().err


def test_new_fields_flags_and_defaults():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_arguments(parser)
    args = parser.parse_args(
        [
            "--data",
            "d",
            "--output-dir",
            "o",
            "--screen-listeners",
            "0.2",
            "--targets",
            "listener-z",
            "--pairwise-margin",
            "0.1",
            "--loss",
            "mae+listnet",
        ]
    )
    cfg = config_from_args(args).validate()
    assert cfg.screen_listeners == 0.2 and isinstance(cfg.screen_listeners, float)
    assert (cfg.targets, cfg.pairwise_margin, cfg.min_listener_ratings) == ("listener-z", 0.1, 5)
    # the defaults are the loss module's constants
    d = TrainConfig()
    assert (d.pairwise_margin, d.pairwise_delta, d.listnet_temperature, d.clipped_mse_tau) == (
        losses.PAIRWISE_MARGIN,
        losses.PAIRWISE_DELTA,
        losses.LISTNET_TEMPERATURE,
        losses.CLIPPED_MSE_TAU,
    )
    assert d.targets == "mean" and d.screen_listeners is None
    # every shipped config stays valid
    for path in CONFIG_DIR.glob("*.yaml"):
        TrainConfig.load(path)


def test_yaml_round_trip_and_refusals(tmp_path):
    cfg = TrainConfig(
        data="d",
        output_dir="o",
        targets="listener-z",
        screen_listeners=0.1,
        loss="wsce+mae+0.5*pairwise",
        clipped_mse_tau=0.2,
    )
    cfg.save(tmp_path / "c.yaml")
    back = TrainConfig.load(tmp_path / "c.yaml").validate()
    assert back.to_dict() == cfg.to_dict()
    bad = [
        dict(targets="z"),
        dict(screen_listeners=1.5),
        dict(min_listener_ratings=1),
        dict(listnet_temperature=0.0),
        dict(pairwise_margin=-0.1),
        dict(clipped_mse_tau=float("inf")),
        dict(loss="wsce+0.5*mae", loss_weights="1,1"),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            TrainConfig(data="d", output_dir="o", **kw).validate()
