"""Fine-tuning end to end on a tiny real ClapModel and a small generated rated set."""

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
from humanclap.training.trainer import train
from humanclap.training.config import CONFIG_DIR, TrainConfig, add_config_arguments, flag

TEXTS = ["a dog barks while a man talks", "rain falls on a roof followed by thunder",
         "a car horn honks then an engine revs", "birds chirp in the distance as wind blows"]


def make_rated_manifest(root: Path, levels: int = 8, clips: int = 3) -> Path:
    """Tones whose pitch sets the human score; every clip rated with two texts, so texts
    are shared by several audios (like RELATE). Clip k=clips-1 of each level validates."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    rows = []
    for level in range(levels):
        freq = 200 * 2 ** (level / 2)
        for k in range(clips):
            x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
            path = write_wav(root / "wav" / f"l{level}_{k}.wav", x.astype(np.float32))
            for j in (level % 4, (level + 1 + k) % 4):
                rows.append({"audio": str(path), "text": TEXTS[j], "score": round(0.1 + 0.1 * level, 3),
                             "split": "validation" if k == clips - 1 else "train"})
    manifest = root / "rated.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(autouse=True)
def one_thread():
    # The test machines share 2 cores; tiny models run 5-10x faster single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    return make_rated_manifest(tmp_path_factory.mktemp("rated"))


def config(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=str(data), output_dir=str(out), device="cpu", batch_size=8,
                lr=1e-3, epochs=2, warmup_ratio=0.0, patience=0, loss="wsce+mae")
    base.update(kw)
    return TrainConfig(**base)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_training_raises_validation_srcc_and_writes_a_standard_folder(tiny_unfused, rated, tmp_path):
    from transformers import ClapModel

    from humanclap import CLAPScorer
    from humanclap.data import load_rated
    from humanclap.evaluation.metrics import srcc

    val = load_rated(str(rated)).split("validation").pairs
    before = srcc(CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
                  .score(list(val.audio), list(val.text)), val.human)
    out = tmp_path / "run"
    result = train(config(tiny_unfused, rated, out, epochs=8, seed=1))
    assert result.best_val["srcc"] > max(0.5, before + 0.3), (before, result.history)
    assert result.test is None and result.epochs_run == 8

    # a plain transformers folder: model, tokenizer, extractor, config and metrics
    model = ClapModel.from_pretrained(out)
    best = weights(out / "checkpoints" / "best")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())
    scorer = CLAPScorer.from_pretrained(str(out), device="cpu")
    assert srcc(scorer.score(list(val.audio), list(val.text)), val.human) == pytest.approx(
        result.best_val["srcc"], abs=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert TrainConfig.load(out / "training_config.json").lr == 1e-3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, 9))
    assert set(lines[0]["train"]) == {"loss", "wsce", "mae"} and "srcc" in lines[0]["val"]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_unfused, rated, tmp_path):
    cfg = dict(epochs=3, train_params="all", dropout=True)  # dropout: checks the RNG restore
    full = train(config(tiny_unfused, rated, tmp_path / "full", **cfg))

    def killed_after_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt  # after the epoch-2 checkpoint was committed

    with pytest.raises(KeyboardInterrupt):
        train(config(tiny_unfused, rated, tmp_path / "cut", **cfg), printer=killed_after_epoch_2)
    state = json.loads((tmp_path / "cut/checkpoints/last/trainer_state.json").read_text())
    assert state["epoch"] == 2
    resumed = train(config(tiny_unfused, rated, tmp_path / "cut", resume=True, **cfg))
    assert resumed.weights_digest == full.weights_digest
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    def epochs(run):
        return [(r["train"], r["val"]) for r in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]

    assert epochs("full") == epochs("cut")


def test_fast_path_gives_the_same_model_as_the_uncached_path(tiny_unfused, rated, tmp_path):
    kw = dict(train_params="projections", epochs=2, lr=3e-3)
    fast = train(config(tiny_unfused, rated, tmp_path / "fast", **kw))
    slow = train(config(tiny_unfused, rated, tmp_path / "slow", cache_encoders=False, **kw))
    assert fast.cached_towers == ["text", "audio"] and slow.cached_towers == []
    a, b = weights(tmp_path / "fast"), weights(tmp_path / "slow")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-6, diff  # measured: 0 on CPU (same kernels, same inputs)
    changed = [k for k in a if not torch.equal(a[k], weights_of_base(tiny_unfused)[k])]
    assert changed and all("projection" in k for k in changed)


def test_runs_sharing_a_feature_memo_preprocess_each_clip_once(tiny_unfused, rated, tmp_path, monkeypatch):
    from humanclap.scoring.scorer import CLAPScorer

    calls = []
    real_features = CLAPScorer.features
    monkeypatch.setattr(CLAPScorer, "features", lambda self, wav: calls.append(1) or real_features(self, wav))
    memo: dict = {}
    train(config(tiny_unfused, rated, tmp_path / "a", epochs=1), feature_memo=memo)
    first = len(calls)
    train(config(tiny_unfused, rated, tmp_path / "b", epochs=1, loss="mae"), feature_memo=memo)
    assert first == len(memo) > 0 and len(calls) == first  # the second run decoded nothing
    train(config(tiny_unfused, rated, tmp_path / "c", epochs=1, loss="mae"))
    a, b = weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)  # memoised features are the same features


def weights_of_base(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_lora_is_merged_into_a_plain_checkpoint(tiny_unfused, rated, tmp_path):
    from transformers import ClapModel

    out = tmp_path / "lora"
    train(config(tiny_unfused, rated, out, train_params="lora", epochs=1, lr=1e-2, lora_rank=2))
    saved = weights(out)
    assert not any("lora" in k for k in saved)
    base = weights_of_base(tiny_unfused)
    changed = {k for k in saved if not torch.equal(saved[k], base[k])}
    assert any(k.endswith("attention.self.query.weight") and k.startswith("text_model") for k in changed)
    assert any(k.endswith("attention.self.query.weight") and k.startswith("audio_model") for k in changed)
    ClapModel.from_pretrained(out)  # loads without missing/unexpected keys


def test_fused_model_trains_on_long_and_short_clips(tiny_fused, tmp_path):
    from transformers import ClapFeatureExtractor, ClapModel

    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):  # 1 s window: clips 0-3 are longer (fusion branch), 4-7 shorter
        seconds = 1.5 if i < 4 else 0.7
        path = write_wav(tmp_path / f"f{i}.wav", (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32))
        for j in (0, 1):
            rows.append({"audio": str(path), "text": TEXTS[(i + j) % 4], "score": (i % 4) / 4,
                         "split": "train" if i % 4 else "validation"})
    pd.DataFrame(rows).to_csv(tmp_path / "fused.csv", index=False)
    out = tmp_path / "fused"
    result = train(config(tiny_fused, tmp_path / "fused.csv", out, epochs=1))
    assert result.best_epoch == 1
    assert ClapModel.from_pretrained(out).config.audio_config.enable_fusion
    assert ClapFeatureExtractor.from_pretrained(out).truncation == "fusion"


def test_nan_stops_training_with_exit_1_and_keeps_the_last_checkpoint(tiny_unfused, rated, tmp_path, capsys):
    out = tmp_path / "nan"
    # one step per epoch; warm-up keeps epochs 1-2 at lr 0 and 1/2 * 1e30 then blows the weights up
    code = cli_main(["train", "--model", str(tiny_unfused), "--data", str(rated), "--output-dir", str(out),
                     "--device", "cpu", "--batch-size", "32", "--epochs", "4", "--warmup-ratio", "0.5",
                     "--lr", "1e30", "--patience", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "diverged" in err and "epoch 3" in err and "checkpoints/last" in err
    state = json.loads((out / "checkpoints/last/trainer_state.json").read_text())
    assert state["epoch"] == 2
    kept = load_file(str(out / "checkpoints/last/trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_cli_usage_errors_exit_2(tiny_unfused, rated, tmp_path, capsys):
    base = ["train", "--model", str(tiny_unfused), "--data", str(rated), "--device", "cpu"]
    assert cli_main(base) == 2  # no --output-dir
    assert cli_main(base + ["--output-dir", str(tmp_path / "a"), "--loss", "wsce+foo"]) == 2
    assert cli_main(base + ["--output-dir", str(tmp_path / "a"), "--config", "nope"]) == 2
    assert cli_main(base + ["--output-dir", str(tmp_path / "a"), "--val-split", "dev"]) == 2
    assert cli_main(base + ["--output-dir", str(tmp_path / "a"), "--batch-size", "64"]) == 2
    assert cli_main(["train", "--epochs", "x"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-4\nlearning_rate: 3\n")
    assert cli_main(base + ["--output-dir", str(tmp_path / "a"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "wsce+foo" in err and "dev" in err


def test_cli_trains_and_refuses_to_overwrite_without_resume(tiny_unfused, rated, tmp_path, capsys):
    args = ["train", "--config", "mae", "--model", str(tiny_unfused), "--data", str(rated),
            "--output-dir", str(tmp_path / "cli"), "--device", "cpu", "--epochs", "1",
            "--batch-size", "8", "--train-params", "projections", "--seed", "3", "--no-progress"]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert "best epoch: 1 of 1" in err and "cached towers: text, audio" in err
    assert TrainConfig.load(tmp_path / "cli/training_config.json").loss == "mae"
    assert cli_main(args) == 2 and "--resume" in capsys.readouterr().err
    assert cli_main(args + ["--resume"]) == 0  # finished run: republished, nothing retrained
    assert cli_main(args + ["--resume", "--lr", "0.5"]) == 2  # not the run that was started
    assert "differ" in capsys.readouterr().err


def test_shipped_configs_and_flags():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert names == sorted(["wsce_mae", "wsce", "mae", "mse", "mse_mae", "wsce_mse", "wsce_mse_mae"])
    for name in names:
        cfg = TrainConfig.load(name)
        assert cfg.loss.replace("+", "_") == name
        cfg.data, cfg.output_dir = "x.csv", "out"
        cfg.validate()
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    options = {a.dest: a for a in parser._actions}
    from dataclasses import fields

    for f in fields(TrainConfig):
        assert f.name in options and flag(f.name) in options[f.name].option_strings
        assert len(f.metadata["help"]) > 20, f.name


def test_config_round_trip(tmp_path):
    cfg = TrainConfig(data="x.csv", output_dir="o", loss="wsce+mse", loss_weights="1,0.5", temperature="0.07",
                      lora_targets=["query"], progress=False)
    for suffix in (".yaml", ".json"):
        cfg.save(tmp_path / f"c{suffix}")
        assert TrainConfig.load(tmp_path / f"c{suffix}") == cfg
    assert cfg.validate().tau() == 0.07
