"""Fine-tuning end to end on a tiny real ClapModel and a small generated rated set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_wav
from safetensors.torch import load_file

from humanclap.cli import main as cli_main
from humanclap.errors import ConfigError
from humanclap.training.config import CONFIG_DIR, TrainConfig, add_config_arguments, flag
from humanclap.training.trainer import train

TEXTS = [
    "a dog barks while a man talks",
    "rain falls on a roof followed by thunder",
    "a car horn honks then an engine revs",
    "birds chirp in the distance as wind blows",
]


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
                rows.append(
                    {
                        "audio": str(path),
                        "text": TEXTS[j],
                        "score": round(0.1 + 0.1 * level, 3),
                        "split": "validation" if k == clips - 1 else "train",
                    }
                )
    manifest = root / "rated.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


# tiny models run several times faster single-threaded (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    return make_rated_manifest(tmp_path_factory.mktemp("rated"))


def config(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        device="cpu",
        batch_size=8,
        lr=1e-3,
        epochs=2,
        warmup_ratio=0.0,
        patience=0,
        loss="wsce+mae",
    )
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
    before = srcc(
        CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu").score(list(val.audio), list(val.text)), val.human
    )
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
        result.best_val["srcc"], abs=1e-6
    )
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
    from humanclap.scoring.clap.scorer import CLAPScorer

    calls = []
    real_features = CLAPScorer.load_features
    monkeypatch.setattr(CLAPScorer, "load_features", lambda self, item: calls.append(1) or real_features(self, item))
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
            rows.append(
                {
                    "audio": str(path),
                    "text": TEXTS[(i + j) % 4],
                    "score": (i % 4) / 4,
                    "split": "train" if i % 4 else "validation",
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "fused.csv", index=False)
    out = tmp_path / "fused"
    result = train(config(tiny_fused, tmp_path / "fused.csv", out, epochs=1))
    assert result.best_epoch == 1
    assert ClapModel.from_pretrained(out).config.audio_config.enable_fusion
    assert ClapFeatureExtractor.from_pretrained(out).truncation == "fusion"


def test_nan_stops_training_with_exit_1_and_keeps_the_last_checkpoint(tiny_unfused, rated, tmp_path, capsys):
    out = tmp_path / "nan"
    # one step per epoch; warm-up keeps epochs 1-2 at lr 0 and 1/2 * 1e30 then blows the weights up
    code = cli_main(
        [
            "train",
            "--model",
            str(tiny_unfused),
            "--data",
            str(rated),
            "--output-dir",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--epochs",
            "4",
            "--warmup-ratio",
            "0.5",
            "--lr",
            "1e30",
            "--patience",
            "0",
            "--no-progress",
        ]
    )
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
    args = [
        "train",
        "--config",
        "mae",
        "--model",
        str(tiny_unfused),
        "--data",
        str(rated),
        "--output-dir",
        str(tmp_path / "cli"),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--train-params",
        "projections",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert "best epoch: 1 of 1" in err and "cached towers: text, audio" in err
    assert TrainConfig.load(tmp_path / "cli/training_config.json").loss == "mae"
    assert cli_main(args) == 2 and "--resume" in capsys.readouterr().err
    assert cli_main(args + ["--resume"]) == 0  # finished run: republished, nothing retrained
    assert cli_main(args + ["--resume", "--lr", "0.5"]) == 2  # not the run that was started
    assert "differ" in capsys.readouterr().err


def test_shipped_configs_and_flags():
    from humanclap.recipes.reproduce_models import RECIPE_LABELS

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    paper = ["wsce_mae", "wsce", "mae", "mse", "mse_mae", "wsce_mse", "wsce_mse_mae"]
    assert names == sorted([*paper, *RECIPE_LABELS])  # the recipes: one config each
    for name in names:
        cfg = TrainConfig.load(name)
        if name in paper:  # named after their loss
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
    cfg = TrainConfig(
        data="x.csv",
        output_dir="o",
        loss="wsce+mse",
        loss_weights="1,0.5",
        temperature="0.07",
        lora_targets=["query"],
        progress=False,
    )
    for suffix in (".yaml", ".json"):
        cfg.save(tmp_path / f"c{suffix}")
        assert TrainConfig.load(tmp_path / f"c{suffix}") == cfg
    assert cfg.validate().tau() == 0.07


def test_train_state_keeps_the_checkpoint_keys_and_writes_strict_json(tmp_path):
    from humanclap.training.checkpoints import read_training_state, restore_training_state, save_training_state
    from humanclap.training.optim import build_scheduler
    from humanclap.training.state import TrainState

    # the keys of trainer_state.json from before TrainState: old checkpoints stay readable
    assert list(TrainState().to_dict()) == [
        "epoch",
        "global_step",
        "best_epoch",
        "best_srcc",
        "best_val",
        "best_test",
        "bad_epochs",
        "history",
        "stopped_early",
        "finished",
    ]
    nan = float("nan")
    record = {
        "epoch": 1,
        "step": 2,
        "lr": 0.5,
        "train": {"loss": 1.0, "mae": nan},
        "val": {"srcc": nan, "mse": 0.1},
        "best": True,
        "seconds": 0.1,
    }
    state = TrainState(
        epoch=1,
        global_step=2,
        best_epoch=1,
        best_val={"srcc": nan, "mse": 0.1},
        best_test={"srcc": nan},
        history=[record],
    )
    layer = torch.nn.Linear(2, 2)
    cfg = TrainConfig(data="x.csv", output_dir="o", epochs=2)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    sched = build_scheduler(opt, cfg, steps_per_epoch=2)
    layer(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()
    save_training_state(
        tmp_path, {"w": layer.weight.detach()}, opt, sched, {**state.to_dict(), "config": cfg.to_dict()}
    )

    def no_constants(name):
        raise AssertionError(f"{name} in trainer_state.json: not strict JSON")

    raw = json.loads((tmp_path / "trainer_state.json").read_text(), parse_constant=no_constants)
    assert raw["history"][0]["val"]["srcc"] is None and raw["best_srcc"] is None
    saved = read_training_state(tmp_path)
    opt2 = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=2)
    tensors = restore_training_state(tmp_path, saved, opt2, sched2)
    assert torch.equal(tensors["w"], layer.weight.detach()) and sched2.get_last_lr() == sched.get_last_lr()
    back = TrainState.from_dict(saved)
    # null is read back as the NaN the uninterrupted run holds
    assert math.isnan(back.best_val["srcc"]) and math.isnan(back.best_test["srcc"])
    assert math.isnan(back.history[0]["val"]["srcc"]) and math.isnan(back.history[0]["train"]["mae"])
    assert (back.epoch, back.global_step, back.best_epoch, back.best_srcc) == (1, 2, 1, None)
    with pytest.raises(ConfigError, match="lacks the training state key"):
        TrainState.from_dict({"epoch": 1})
    (tmp_path / "trainer_state.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read the training checkpoint"):
        read_training_state(tmp_path)


def test_early_stopping_bookkeeping():
    from humanclap.training.state import TrainState

    st = TrainState()
    for epoch, srcc in enumerate([0.2, float("nan"), 0.5, 0.4, 0.3], 1):
        improved = st.observe(epoch, {"srcc": srcc}, validating=True)
        st.end_epoch({"epoch": epoch, "best": improved}, patience=2, validating=True, epochs=9)
        assert improved == (epoch in (1, 3))
    assert (st.best_epoch, st.best_srcc, st.bad_epochs, st.stopped_early, st.finished) == (3, 0.5, 2, True, True)
    st = TrainState()  # a NaN first epoch is kept (a model must exist), then beaten by any number
    assert st.observe(1, {"srcc": float("nan")}, True) and st.best_srcc is None
    assert st.observe(2, {"srcc": -0.9}, True) and st.best_srcc == -0.9
    assert TrainState().observe(1, {}, validating=False) and TrainState(best_epoch=1).observe(2, {}, False)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    from humanclap.training.optim import lr_lambda

    f = lr_lambda(total=10, warmup=2, min_ratio=0.1)
    assert [f(0), f(1), f(2)] == [0.0, 0.5, 1.0]
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5) and f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)


def test_trainer_public_steps_match_fine_tune(tiny_unfused, rated, tmp_path):
    from humanclap.training.trainer import Trainer

    kw = dict(train_params="projections", epochs=1, val_split="", test_split="", progress=False)
    trainer = Trainer(config(tiny_unfused, rated, tmp_path / "steps", **kw))
    batches = trainer.start_epoch(1)
    assert len(batches) == trainer.steps_per_epoch > 1 and trainer.state.global_step == 0
    before = [p.detach().clone() for p in trainer.trained_parameters]
    terms = [trainer.step(b) for b in batches]
    assert set(terms[0]) == {"loss", "wsce", "mae"} and trainer.state.global_step == len(batches)
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.trained_parameters))
    # stepping through epoch 1 by hand gives fine_tune's model, bit for bit
    train(config(tiny_unfused, rated, tmp_path / "ref", **kw))
    ref = weights(tmp_path / "ref")
    trained = [(n, p) for n, p in trainer.parts.trained.named_parameters() if p.requires_grad]
    assert trained and all(torch.equal(p.detach(), ref[n]) for n, p in trained)
