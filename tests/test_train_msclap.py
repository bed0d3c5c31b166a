"""Fine-tuning an MS CLAP base: 2022 (CNN14 + BERT) and 2023 (HTS-AT + GPT-2) through the
same trainer as ClapModel (``training/towers.py``), on tiny random models of both releases
and the small generated rated set of tests/test_train.py (real wavs + a rated CSV).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_train import make_rated_manifest

from humanclap.cli import main as cli_main
from humanclap.data import load_rated
from humanclap.errors import ConfigError
from humanclap.recipes.tiny_msclap import build_tiny_msclap
from humanclap.scoring import load_scorer
from humanclap.scoring.msclap import MSClapModel, save_pth
from humanclap.training.config import TrainConfig
from humanclap.training.model import trained_parts
from humanclap.training.towers import MSClapTowers
from humanclap.training.trainer import Trainer, train

VERSIONS = ["2022", "2023"]


# tiny models run several times faster single-threaded (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rated(tmp_path_factory) -> Path:
    return make_rated_manifest(tmp_path_factory.mktemp("rated"))


def positive_base(folder: Path, version: str, rated: Path) -> Path:
    """A tiny MS CLAP (folder with tokenizer) whose median cosine on the rated pairs is positive.

    A random tiny model's cosines share one sign; when it is negative every CLAPScore is
    0 and no correlation is defined. Negating the text projection's LayerNorm (its last
    operation) flips every text embedding, hence every cosine, and keeps their spread."""
    build_tiny_msclap(folder, version, seed=1)
    scorer = load_scorer(str(folder), device="cpu")
    pairs = load_rated(str(rated)).pairs
    cos = (scorer.embed_audio(list(pairs.audio)) * scorer.embed_text(list(pairs.text))).sum(-1)
    if np.median(cos) < 0:
        norm = scorer.model.caption_encoder.projection.layer_norm
        with torch.no_grad():
            norm.weight.neg_()
            norm.bias.neg_()
        scorer.model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=VERSIONS)
def base(request, tmp_path_factory, rated) -> Path:
    return positive_base(tmp_path_factory.mktemp(f"msclap{request.param}"), request.param, rated)


def config(model, data: Path, out: Path, **kw) -> TrainConfig:
    base_kw = dict(
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
        progress=False,
    )
    base_kw.update(kw)
    return TrainConfig(**base_kw)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def version_of(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["version"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trains_and_its_folder_scores_exactly_like_the_trainer(base, rated, tmp_path, capsys):
    out = tmp_path / "run"
    # no validation split: every epoch is kept, so the in-memory model is the exported one;
    # the validation pairs are scored as the test split instead
    trainer = Trainer(config(base, rated, out, val_split="", test_split="validation"))
    result = trainer.run()
    losses = [h["train"]["loss"] for h in result.history]
    assert losses[1] < losses[0], result.history
    assert np.isfinite(result.test["srcc"]) and result.best_epoch == 2, result.test
    assert "an MS CLAP folder: load with load_scorer" in result.summary()

    # MS CLAP's own format: config.json (model_type msclap) + model.safetensors + tokenizer
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "msclap" and cfg["version"] == version_of(base)
    assert not (out / "preprocessor_config.json").exists() and (out / "tokenizer_config.json").is_file()
    exported = MSClapModel.from_pretrained(out)
    best = weights(out / "checkpoints" / "best")
    assert set(best) == set(exported.state_dict())
    assert all(torch.equal(exported.state_dict()[k], v) for k, v in best.items())
    final = trainer.parts.tower.clap.state_dict()  # the trainer's model after its last step
    assert all(torch.equal(final[k], v) for k, v in exported.state_dict().items())

    # `humanclap score --model OUT` gives the trainer's own CLAPScores of the same pairs
    val = trainer.parts.data.splits["validation"].pairs
    in_memory = trainer.predict("validation").numpy()
    manifest = tmp_path / "pairs.csv"
    val[["audio", "text"]].to_csv(manifest, index=False)
    before = sha(manifest)
    scores = tmp_path / "scores.jsonl"
    assert cli_main(["score", str(manifest), "--model", str(out), "-o", str(scores), "--device", "cpu"]) == 0
    got = np.array([json.loads(line)["clapscore"] for line in scores.read_text().splitlines()])
    assert len(got) == len(val) and sha(manifest) == before
    assert np.abs(got - in_memory).max() <= 1e-6, np.abs(got - in_memory).max()  # measured: 9e-8

    # `humanclap evaluate --model OUT` too; pair by pair (a rank statistic is no check:
    # the tiny model's scores lie within 1e-3 of each other, where a 1e-8 rounding
    # difference can swap two ranks)
    report = tmp_path / "eval"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(out),
                "--data",
                str(rated),
                "--split",
                "validation",
                "-o",
                str(report),
                "--device",
                "cpu",
                "--n-boot",
                "0",
                "--no-plots",
            ]
        )
        == 0
    )
    pred = pd.read_csv(report / "predictions.csv")
    ours = dict(zip(zip(val.audio, val.text), in_memory))
    diff = max(abs(r.run - ours[(r.audio, r.text)]) for r in pred.itertuples())
    assert len(pred) == len(val) and diff <= 1e-6, diff  # measured: 6e-8
    mse = json.loads((report / "metrics.json").read_text())["metrics"]["run"]["overall"]["mse"]
    assert mse == pytest.approx(result.test["mse"], abs=1e-6)
    capsys.readouterr()


def test_resume_after_a_kill_equals_an_uninterrupted_run(base, rated, tmp_path, caplog):
    cfg = dict(epochs=3, train_params="all", dropout=True)  # dropout: checks the RNG restore
    full = train(config(base, rated, tmp_path / "full", **cfg))
    assert all(np.isfinite(h["val"]["srcc"]) for h in full.history), full.history

    def killed_after_epoch_2(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt  # after the epoch-2 checkpoint was committed

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(config(base, rated, cut, **cfg), printer=killed_after_epoch_2)
    assert json.loads((cut / "checkpoints/last/trainer_state.json").read_text())["epoch"] == 2
    # the half-written run: refused without --resume, nothing touched
    before = {p: sha(p) for p in cut.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a training run .*pass --resume"):
        train(config(base, rated, cut, **cfg))
    assert {p: sha(p) for p in cut.rglob("*") if p.is_file()} == before
    (cut / "checkpoints/.last.tmp-killed").mkdir()  # a checkpoint the kill left half-written
    with caplog.at_level("WARNING"):
        resumed = train(config(base, rated, cut, resume=True, **cfg))
    assert "revision differs" not in caplog.text  # the base's weights hash is the one it started from
    assert not (cut / "checkpoints/.last.tmp-killed").exists()
    assert resumed.weights_digest == full.weights_digest
    a, b = weights(tmp_path / "full"), weights(cut)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    def epochs(folder):
        return [(r["train"], r["val"]) for r in map(json.loads, (folder / "metrics.jsonl").open())]

    assert epochs(tmp_path / "full") == epochs(cut)


def test_cached_towers_give_the_same_model_as_the_uncached_path(base, rated, tmp_path):
    # dropout on (the default): the trained projections' dropout draws the same masks in both
    kw = dict(train_params="projections", epochs=2, lr=3e-3)
    fast = train(config(base, rated, tmp_path / "fast", **kw))
    slow = train(config(base, rated, tmp_path / "slow", cache_encoders=False, **kw))
    assert fast.cached_towers == ["text", "audio"] and slow.cached_towers == []
    a, b = weights(tmp_path / "fast"), weights(tmp_path / "slow")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-6, diff  # measured: 0 on CPU (same kernels, same inputs)
    start = weights(base)
    changed = [k for k in a if not torch.equal(a[k], start[k])]
    assert changed and all(
        k.startswith(("audio_encoder.projection.", "caption_encoder.projection.")) for k in changed
    ), changed


@pytest.mark.parametrize("train_params", ["all", "audio", "text", "projections", "lora"])
def test_every_trained_parameter_gets_a_gradient_and_the_front_end_stays_fixed(base, rated, tmp_path, train_params):
    # What DistributedDataParallel relies on without find_unused_parameters: every trained
    # parameter receives a gradient at every step.
    trainer = Trainer(
        config(base, rated, tmp_path / "run", train_params=train_params, epochs=1, train_logit_scale=True)
    )
    towers = trainer.parts.tower.towers
    assert isinstance(towers, MSClapTowers) and not towers.find_unused_parameters(train_params)
    batch = trainer.start_epoch(1)[0]
    # frozen parts run in eval mode, trained ones (MS CLAP's projections too) in training
    # mode: dropout=True
    parts = trained_parts(trainer.cfg)
    for part in ("text_tower", "audio_tower", "text_projection", "audio_projection"):
        assert getattr(towers, part).training == parts[part], part
    assert all(
        not m.training
        for m in trainer.parts.tower.clap.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    )
    trainer.step(batch)
    named = dict(trainer.parts.trained.named_parameters())
    trained = [n for n, p in named.items() if p.requires_grad]
    assert trained and all(named[n].grad is not None for n in trained), [n for n in trained if named[n].grad is None]
    assert any(n.endswith("logit_scale") for n in trained)
    fixed = [
        n
        for n in named
        if any(
            part in n
            for part in ("spectrogram_extractor", "logmel_extractor", "fc_audioset", "tscam_conv", ".head.", "pooler")
        )
    ]
    assert fixed and not any(named[n].requires_grad for n in fixed)


def test_lora_adapts_each_familys_attention_and_merges_into_a_plain_folder(base, rated, tmp_path, capsys):
    out = tmp_path / "lora"
    train(config(base, rated, out, train_params="lora", epochs=1, lr=1e-2, lora_rank=2))
    saved = weights(out)
    assert not any("lora" in k for k in saved)
    start = weights(base)
    changed = {k for k in saved if not torch.equal(saved[k], start[k])}
    wanted = {
        "2023": ("caption_encoder.base.h.0.attn.c_attn.weight", "attn.qkv.weight"),
        "2022": ("attention.self.query.weight", "audio_encoder.base.fc1.weight"),
    }[version_of(base)]
    assert all(any(k.endswith(w) for k in changed) for w in wanted), sorted(changed)
    MSClapModel.from_pretrained(out)  # a plain MS CLAP folder: no missing/unexpected keys

    # targets that miss a tower: refused, naming what works
    args = [
        "train",
        "--model",
        str(base),
        "--data",
        str(rated),
        "--output-dir",
        str(tmp_path / "bad"),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--train-params",
        "lora",
        "--lora-targets",
        "c_attn",
        "--no-progress",
    ]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    missing = "audio tower" if version_of(base) == "2023" else "text and audio tower"
    assert f"no module of that name in the {missing}" in err and "c_attn,qkv for MS CLAP 2023" in err, err
    assert "Traceback" not in err


def fake_hub_cache(cache: Path, version: str, model: MSClapModel, tokenizer_folder: Path) -> None:
    """Put a tiny model where ``msclap-<version>`` is looked up offline: microsoft/msclap's
    ``CLAP_weights_<version>.pth`` and its tokenizer repo in a Hugging Face cache layout."""

    def snapshot(repo: str) -> Path:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text("0" * 40)
        snap = folder / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        return snap

    save_pth(model, snapshot("microsoft/msclap") / f"CLAP_weights_{version}.pth")
    tok = snapshot(model.config.tokenizer)
    for f in tokenizer_folder.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            shutil.copy(f, tok / f.name)
    (tok / "config.json").write_text(json.dumps({"model_type": model.config.text_model}))


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_trains_msclap_by_name_and_from_a_pth(rated, tmp_path, monkeypatch, capsys, version):
    import huggingface_hub.constants

    base = positive_base(tmp_path / "base", version, rated)
    model = MSClapModel.from_pretrained(base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # transformers 4.x looks tokenizers up in its own copy of the path, taken at import
    import transformers.utils.hub

    monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(tmp_path / "hub"), raising=False)
    fake_hub_cache(tmp_path / "hub", version, model, base)
    pth = tmp_path / "pth" / f"CLAP_weights_{version}.pth"
    pth.parent.mkdir()
    save_pth(model, pth)
    for f in base.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("vocab.txt", "vocab.json", "merges.txt"):
            shutil.copy(f, pth.parent / f.name)
    common = [
        "--data",
        str(rated),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--train-params",
        "projections",
        "--seed",
        "3",
        "--no-progress",
    ]
    by_name = tmp_path / "by_name"
    assert cli_main(["train", "--model", f"msclap-{version}", "--output-dir", str(by_name), *common]) == 0
    err = capsys.readouterr().err
    assert "best epoch: 1 of 1" in err and "an MS CLAP folder" in err, err
    assert (
        json.loads((by_name / "metrics.json").read_text())["base_model"]["model_id"]
        == f"microsoft/msclap/CLAP_weights_{version}.pth"
    )
    before = {f.name: sha(f) for f in pth.parent.iterdir()}
    from_pth = tmp_path / "from_pth"
    assert cli_main(["train", "--model", str(pth), "--output-dir", str(from_pth), *common]) == 0
    assert {f.name: sha(f) for f in pth.parent.iterdir()} == before  # the base is never touched
    # the same base weights, whatever the spec: the same fine-tuned model
    a, b = weights(by_name), weights(from_pth)
    assert all(torch.equal(a[k], b[k]) for k in a)
    scores = tmp_path / "s.jsonl"
    manifest = tmp_path / "one.csv"
    pd.DataFrame({"audio": [load_rated(str(rated)).pairs.audio[0]], "text": ["a dog barks"]}).to_csv(
        manifest, index=False
    )
    assert cli_main(["score", str(manifest), "--model", str(from_pth), "-o", str(scores), "--device", "cpu"]) == 0
    capsys.readouterr()


def test_output_folders_that_are_not_the_runs_own_are_refused(tiny_unfused, rated, tmp_path, capsys):
    base = positive_base(tmp_path / "base", "2023", rated)
    args = [
        "--data",
        str(rated),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--train-params",
        "projections",
        "--no-progress",
    ]

    def refused(model, out, *extra) -> str:
        before = {p: sha(p) for p in Path(out).rglob("*") if p.is_file()}
        assert cli_main(["train", "--model", str(model), "--output-dir", str(out), *args, *extra]) == 2
        assert {p: sha(p) for p in Path(out).rglob("*") if p.is_file()} == before  # untouched
        err = capsys.readouterr().err
        assert err.startswith("humanclap train: error: ") and "Traceback" not in err, err
        return err

    # another model's folder (here a copy of the base), not a run: it would be overwritten
    foreign = tmp_path / "foreign"
    shutil.copytree(base, foreign)
    # (the output contract: a folder that holds no train run of ours is refused, named)
    err = refused(base, foreign)
    assert "not empty and holds no humanclap train run" in err and "config.json" in err
    assert "holds no humanclap train run" in refused(base, foreign, "--resume")
    # the folder of an msclap .pth: its tokenizer files would be replaced
    pth = tmp_path / "pth" / "CLAP_weights_2023.pth"
    shutil.copytree(base, pth.parent)
    save_pth(MSClapModel.from_pretrained(base), pth)
    for name in ("config.json", "model.safetensors"):
        (pth.parent / name).unlink()
    assert "would overwrite the base model" in refused(pth, pth.parent)
    # a ClapModel run continued with an MS CLAP base: not the run that was started
    clap_run = tmp_path / "clap_run"
    assert cli_main(["train", "--model", str(tiny_unfused), "--output-dir", str(clap_run), *args]) == 0
    capsys.readouterr()
    err = refused(base, clap_run, "--resume")
    assert "--resume with settings that differ from the checkpoint's" in err and "'model'" in err
