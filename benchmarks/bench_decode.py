"""Decode-side throughput (decode + resample + features, no model) vs the model's forward.

10-second 16 kHz clips featurised with LAION CLAP's extractor settings (48 kHz, 64 mels,
unfused), through :class:`humanclap.scoring.decode.DecoderPool` with 1 and 2 worker
processes and in-process (``--workers 0``); beside it the forward rate of the full-size
LAION audio tower (random weights, batch 8, fp32) on this machine's device, so one can read
off how many decoder workers keep a GPU busy: workers ~ forward rate / per-worker rate.

    python benchmarks/bench_decode.py [--clips 64] [--workers 1 2] [--device auto]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def write_clips(folder: Path, n: int, seconds: float = 10.0, rate: int = 16000) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        t = np.arange(int(seconds * rate)) / rate
        clip = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, clip.astype(np.float32), rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def decode_rate(paths: list[str], workers: int, featurizer) -> float:
    from humanclap.scoring.decode import DecoderPool

    if workers == 0:
        start = time.perf_counter()
        for p in paths:
            featurizer(p)
        return len(paths) / (time.perf_counter() - start)
    batches = [(b, paths[i : i + 8]) for b, i in enumerate(range(0, len(paths), 8))]
    with DecoderPool(featurizer, workers, max_files=4 * workers + 8) as pool:
        list(pool.run(batches[:1]))  # start the workers (spawn + imports) before timing
        start = time.perf_counter()
        n = sum(len(r) for _, r in pool.run(batches))
    return n / (time.perf_counter() - start)


def forward_rate(device: str, featurizer, path: str, seconds: float) -> tuple[float, str]:
    import torch
    from transformers import ClapConfig, ClapModel

    from humanclap.scoring.clap.scorer import audio_embeddings, resolve_device

    dev = resolve_device(device)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).to(dev).eval()
    feats, _ = featurizer(path)
    x = torch.as_tensor(np.stack([feats] * 8)).to(dev)
    longer = torch.zeros(8, 1, dtype=torch.bool, device=dev)
    with torch.inference_mode():
        audio_embeddings(model, x, longer)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            audio_embeddings(model, x, longer)
            n += 8
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start), str(dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--forward-seconds", type=float, default=10.0)
    args = ap.parse_args()
    from transformers import ClapFeatureExtractor

    from humanclap.scoring.audio import load_clip_features

    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc")
    featurizer = functools.partial(load_clip_features, extractor=extractor, fused=False)
    print(f"cores: {os.cpu_count()}  clips: {args.clips} x 10 s, 16 kHz -> 48 kHz, 64 mels")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips)
        print(f"decode in-process (--workers 0): {decode_rate(paths, 0, featurizer):.1f} clips/s", flush=True)
        for w in args.workers:
            print(f"decode, {w} worker process(es): {decode_rate(paths, w, featurizer):.1f} clips/s", flush=True)
        rate, dev = forward_rate(args.device, featurizer, paths[0], args.forward_seconds)
        print(f"full-size LAION audio forward (random weights, batch 8, fp32) on {dev}: {rate:.1f} clips/s")


if __name__ == "__main__":
    main()
