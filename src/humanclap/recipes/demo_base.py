"""The demo's base CLAP: the stand-in for LAION CLAP in the offline demo.

A small model of the real ``transformers.ClapModel`` architecture (RoBERTa text tower,
HTSAT audio tower; 64-dim, two stages of two blocks), a byte-level BPE tokenizer trained
on the pretraining captions, and a 16 kHz / 4 s feature extractor (the synthetic clips
are 4 s long). It is pretrained contrastively (plain symmetric InfoNCE: wSCE with every
weight 1) on the synthetic *pretraining* corpus only: like LAION CLAP, it has never seen
a human rating.

The pretrained weights ship in ``humanclap/assets/demo_base`` (about 1 MB) so that the
demo fits in minutes; ``humanclap demo --rebuild-base DIR`` reruns this recipe. On the
same machine, torch version and thread count the rebuild is bit-identical (the sha256 of
``model.safetensors`` is recorded in ``recipe.json``); elsewhere float rounding may differ.
"""

from __future__ import annotations

import csv
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Callable

# The recipe: every number that decides the shipped weights.
RECIPE = {
    "synth_seed": 0,  # pretraining corpus of `humanclap synth --seed 0 --size default`
    "synth_size": "default",  # 3,000 natural (caption, audio) clips whose captions avoid the
    # 1,960 rated ones: changing synth.SIZES changes this corpus
    "vocab_size": 1000,  # BPE vocabulary trained on the pretraining captions
    "hidden_size": 64,
    "projection_dim": 64,
    "audio_depths": [2, 2],
    "init_seed": 0,
    "epochs": 30,
    "batch_size": 64,
    "lr": 2e-3,
    "temperature": 0.07,
    "warmup_ratio": 0.05,
}


def shipped_base() -> Path:
    """Folder of the shipped, pretrained demo base model."""
    return Path(str(resources.files("humanclap") / "assets" / "demo_base"))


def demo_feature_extractor():
    """16 kHz, 4 s window, 64 mel bins, 63 frames (fits the model's 64x64 spectrogram)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=16000,
        hop_length=1024,
        max_length_s=4,
        fft_window_size=2048,
        frequency_min=50,
        frequency_max=8000,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def init_base(out_dir: Path, captions: list[str]) -> Path:
    """Randomly initialised base model + tokenizer + extractor, as a HF folder."""
    import torch
    from transformers import ClapModel

    from humanclap.recipes.tiny import tiny_clap_config, train_tokenizer

    tokenizer = train_tokenizer(captions, vocab_size=RECIPE["vocab_size"])
    torch.manual_seed(RECIPE["init_seed"])
    config = tiny_clap_config(
        vocab_size=len(tokenizer),
        hidden_size=RECIPE["hidden_size"],
        projection_dim=RECIPE["projection_dim"],
        audio_depths=tuple(RECIPE["audio_depths"]),
    )
    ClapModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    demo_feature_extractor().save_pretrained(out_dir)
    return out_dir


def pretrain_base(
    synth_dir: Path, work_dir: Path, out_dir: Path, epochs: int | None = None, printer: Callable[[str], None] = print
) -> Path:
    """Pretrain the base on ``synth_dir``'s pretraining corpus; the result goes to ``out_dir``."""
    from humanclap.training.config import TrainConfig
    from humanclap.training.trainer import train

    work_dir.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(open(synth_dir / "pretrain" / "manifest.csv", encoding="utf-8")))
    manifest = work_dir / "pretrain_rated.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audio", "text", "score", "split"])
        for r in rows:  # every pair is a true pair: weight 1 turns wSCE into plain InfoNCE
            writer.writerow([str(synth_dir / "pretrain" / r["audio"]), r["text"], 1.0, "train"])
    init = init_base(work_dir / "init", [r["text"] for r in rows])
    cfg = TrainConfig(
        model=str(init),
        data=str(manifest),
        output_dir=str(out_dir),
        loss="wsce",
        val_split="",
        test_split=None,
        epochs=epochs or RECIPE["epochs"],
        batch_size=RECIPE["batch_size"],
        lr=RECIPE["lr"],
        temperature=str(RECIPE["temperature"]),
        warmup_ratio=RECIPE["warmup_ratio"],
        patience=0,
        dropout=False,
        device="cpu",
        seed=RECIPE["init_seed"],
        progress=False,
    )
    train(cfg, printer=printer)
    digest = hashlib.sha256((out_dir / "model.safetensors").read_bytes()).hexdigest()
    (out_dir / "recipe.json").write_text(
        json.dumps({**RECIPE, "epochs": cfg.epochs, "model_sha256": digest}, indent=2) + "\n"
    )
    return out_dir


COMMAND = "demo --rebuild-base"  # the command name in the output marker


def rebuild_base(out_dir: str | Path, printer: Callable[[str], None] = print, overwrite: bool = False) -> Path:
    """Rerun the whole recipe of the shipped base into ``out_dir`` (``humanclap demo
    --rebuild-base``): the pretraining corpus of ``synth`` into ``out_dir/synth``, the
    training work in ``out_dir/work`` and the model in ``out_dir/base``, which it returns.
    Compare ``base/recipe.json`` with the shipped one to check the rebuild.

    ``out_dir`` must be new, empty, or hold an earlier rebuild (the output contract,
    :mod:`humanclap.outputs`); an earlier rebuild is replaced only with ``overwrite``
    (which deletes exactly what it wrote). Raises UsageError otherwise."""
    from humanclap.errors import UsageError
    from humanclap.outputs import claim_folder
    from humanclap.synth.dataset import generate

    out = Path(out_dir)
    with claim_folder(out, COMMAND, overwrite=overwrite, what="--rebuild-base") as run:
        if run.previous is not None and run.files:
            raise UsageError(
                f"--rebuild-base {out} holds an earlier rebuild of the base; pass "
                "--overwrite to redo it (only what it wrote is deleted), or choose "
                "a new folder"
            )
        run.set_identity({"settings": dict(RECIPE)})
        run.record("synth", "work", "base")
        generate(out / "synth", seed=RECIPE["synth_seed"], size=RECIPE["synth_size"])
        base = pretrain_base(out / "synth", out / "work", out / "base", printer=printer)
    printer(f"base model written to {base} (compare its recipe.json with the shipped one)")
    return base
