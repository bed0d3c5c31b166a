"""Shared fixtures: tiny real ClapModel checkpoints saved to disk and small wav files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# The Hugging Face Hub cannot be reached from the test machines; make any accidental
# access fail fast instead of retrying for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine spinning
# OpenMP threads make them many times slower; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

RELATE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "relate"


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (the test machines share 2 cores; tiny
    models run 5-10x faster single-threaded); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_unfused(tmp_path_factory) -> Path:
    from humanclap.recipes.tiny import build_tiny_clap

    return build_tiny_clap(tmp_path_factory.mktemp("tiny_unfused"), fused=False, seed=0)


@pytest.fixture(scope="session")
def tiny_fused(tmp_path_factory) -> Path:
    from humanclap.recipes.tiny import build_tiny_clap

    return build_tiny_clap(tmp_path_factory.mktemp("tiny_fused"), fused=True, seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_unfused):
    """A loaded tiny unfused scorer, one per test module."""
    from humanclap import CLAPScorer

    return CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")


@pytest.fixture(scope="module")
def fused_scorer(tiny_fused):
    """A loaded tiny fused scorer, one per test module."""
    from humanclap import CLAPScorer

    return CLAPScorer.from_pretrained(str(tiny_fused), device="cpu")


def noise_clip(seconds: float, rate: int = 16000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A reproducible test signal: a tone plus noise, (samples,) or (samples, channels)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    base = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)
    if channels == 1:
        return base.astype(np.float32)
    return np.stack([base * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def tiny_model_with_positive_cosines(path: Path, seed: int, audio: list, texts: list) -> Path:
    """A tiny random CLAP whose median cosine on these pairs is positive.

    A random tiny model's cosines share one sign; when it is negative, CLAPScore =
    max(cos, 0) is a constant 0 and no correlation is defined. Negating the text
    projection's output layer flips every cosine and keeps their spread. The weights are
    drawn from ``seed`` alone (``recipes.tiny.init_weights``), so the model, and whether
    it is flipped, is the same on every transformers version CI tests.
    """
    import torch

    from humanclap.recipes.tiny import build_tiny_clap
    from humanclap.scoring.clap.scorer import CLAPScorer

    build_tiny_clap(path, seed=seed)
    scorer = CLAPScorer.from_pretrained(str(path), device="cpu")
    if np.median(scorer.cosine(list(audio), list(texts))) < 0:
        with torch.no_grad():
            scorer.model.text_projection.linear2.weight.neg_()
            scorer.model.text_projection.linear2.bias.neg_()
        scorer.model.save_pretrained(path)
    return path


def tone_wav(path: Path, seed: int, seconds: float = 0.6, rate: int = 16000) -> None:
    """A short 16-bit wav: a seed-dependent tone plus noise (RELATE-layout test folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * (200 + 40 * (seed % 20)) * t)
    sf.write(path, (0.3 * tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32), rate)


def write_manifest(folder: Path, rows: list[dict], name: str = "m.csv", seed=None) -> Path:
    """A CSV manifest of ``rows`` in ``folder``, with a 0.4 s noise wav written for each
    audio path not there yet; ``seed(i, row)`` picks its noise (default: from the path)."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows):
        if not (folder / r["audio"]).exists():
            s = seed(i, r) if seed else len(r["audio"]) + sum(map(ord, r["audio"]))
            write_wav(folder / r["audio"], noise_clip(0.4, seed=s))
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
