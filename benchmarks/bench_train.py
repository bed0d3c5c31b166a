"""Training speed: full-size CLAP step time, and the frozen-encoder fast path vs the full path.

Architecture: ``transformers.ClapConfig()`` defaults (RoBERTa-base text tower, HTSAT audio
tower, 512-d projections: the shape of laion/clap-htsat-unfused) with random weights,
LAION's 48 kHz / 10 s feature extractor, and synthetic 10 s clips. Nothing is downloaded.

1. seconds per optimizer step, train_params=all, wsce+mae, at --batch-size (default 8);
2. train_params=projections: epoch time of the fast path (frozen towers run once, their
   outputs cached) against the uncached path, which runs both towers at every step. The
   fast path's epoch is timed in full over --pairs pairs (default 3,072: 48 clips x 64
   texts); the uncached epoch is extrapolated from --slow-steps timed steps (its step
   time does not depend on the epoch length), and both are printed with their ratio.

    python benchmarks/bench_train.py [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

WORDS = ["dog", "rain", "engine", "bird", "siren", "crowd", "piano", "water"]
ACTIONS = [
    "barks loudly",
    "falls softly",
    "revs twice",
    "chirps nearby",
    "wails far away",
    "cheers",
    "plays a melody",
    "drips slowly",
]


def build_checkpoint(folder: Path, texts: list[str]) -> Path:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from humanclap.recipes.tiny import train_tokenizer

    torch.manual_seed(0)
    ClapModel(ClapConfig()).save_pretrained(folder, safe_serialization=True)
    train_tokenizer(texts, vocab_size=400).save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=64, frequency_min=50, frequency_max=14000, truncation="rand_trunc"
    ).save_pretrained(folder)
    return folder


def build_data(folder: Path, n_audio: int, n_text: int) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    texts = [
        f"a {w} {a} {i}"
        for i, (w, a) in enumerate(
            (WORDS[k % len(WORDS)], ACTIONS[(k // len(WORDS)) % len(ACTIONS)]) for k in range(n_text)
        )
    ]
    rows = []
    for i in range(n_audio):
        x = 0.1 * rng.standard_normal(16000 * 10).astype(np.float32)
        path = folder / "wav" / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, 16000)
        for text in texts:
            rows.append({"audio": str(path), "text": text, "score": float(rng.uniform()), "split": "train"})
    pd.DataFrame(rows).to_csv(folder / "rated.csv", index=False)
    return folder / "rated.csv", texts


def make_trainer(model: Path, data: Path, out: Path, device: str, batch: int, **kw):
    """A built :class:`~humanclap.training.trainer.Trainer` and its setup time (model and
    data loading, preprocessing, and the one-time tower cache on the fast path)."""
    from humanclap.training.config import TrainConfig
    from humanclap.training.trainer import Trainer

    cfg = TrainConfig(
        model=str(model),
        data=str(data),
        output_dir=str(out),
        device=device,
        batch_size=batch,
        val_split="",
        test_split="",
        loss="wsce+mae",
        epochs=1,
        warmup_ratio=0.0,
        progress=False,
        **kw,
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg, printer=print)
    return trainer, time.perf_counter() - t0


def time_steps(trainer, n: int, device: str) -> list[float]:
    times = []
    for batch in trainer.start_epoch(1)[: n + 1]:  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        trainer.step(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed full-size steps (after one warm-up)")
    ap.add_argument("--audio", type=int, default=48, help="unique clips in the epoch benchmark")
    ap.add_argument("--texts", type=int, default=64, help="texts per clip (pairs = audio x texts)")
    ap.add_argument("--slow-steps", type=int, default=3, help="timed steps of the uncached path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from humanclap.scoring.clap.scorer import quiet_transformers

    quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, texts = build_data(tmp / "data", args.audio, args.texts)
        model = build_checkpoint(tmp / "model", texts)
        n_pairs = args.audio * args.texts
        print(
            f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
            f"ClapConfig() random weights, batch {args.batch_size}"
        )

        trainer, _ = make_trainer(model, data, tmp / "all", args.device, args.batch_size, train_params="all")
        n_params = sum(p.numel() for p in trainer.trained_parameters)
        steps = time_steps(trainer, args.steps, args.device)
        print(
            f"[1] train_params=all ({n_params / 1e6:.1f} M trained parameters): "
            f"{statistics.median(steps):.2f} s/step (median of {len(steps)}: "
            f"{', '.join(f'{s:.2f}' for s in steps)})"
        )
        del trainer

        fast, setup_fast = make_trainer(
            model, data, tmp / "fast", args.device, args.batch_size, train_params="projections", cache_encoders=True
        )
        t0 = time.perf_counter()
        fast.train_epoch(1)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        epoch_fast = time.perf_counter() - t0
        n_steps = fast.steps_per_epoch
        del fast
        slow, setup_slow = make_trainer(
            model, data, tmp / "slow", args.device, args.batch_size, train_params="projections", cache_encoders=False
        )
        slow_step = statistics.median(time_steps(slow, args.slow_steps, args.device))
        epoch_slow = slow_step * n_steps
        print(
            f"[2] train_params=projections, {n_pairs} pairs ({args.audio} clips x {args.texts} texts), "
            f"{n_steps} steps/epoch:"
        )
        print(
            f"    fast path: setup {setup_fast:.1f} s (incl. one-time tower cache; uncached setup "
            f"{setup_slow:.1f} s), epoch {epoch_fast:.2f} s (measured)"
        )
        print(
            f"    uncached : {slow_step:.2f} s/step -> epoch {epoch_slow:.0f} s "
            f"(extrapolated from {args.slow_steps} steps)"
        )
        print(f"    epoch time ratio uncached / fast = {epoch_slow / epoch_fast:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
