"""Throughput of the in-memory metric against ``humanclap score``'s in-process path.

The same clips (default: 64 ten-second 16 kHz clips, 64 captions), the same tiny model:

* in memory: ``HumanCLAPScore.update(batch, texts, rate)`` on a ``(B, T)`` tensor;
* files:     ``ScoreJob(scorer).run(manifest, out.csv)`` on the clips written as float WAVs
             (a new job each time, so no embedding is reused between repeats).

Both sides run in this process, alternating (which goes first alternates too), ``--repeat``
times each. Reported: the best and the median time of each, the ratio of throughputs
(in-memory / files; > 1: in memory is faster) on both, and a check that both gave the same
bits. The best time is the fairer number on a shared machine (other load only ever adds
time); the median shows the spread. The model is loaded once beforehand (neither side pays
for it).

    python benchmarks/bench_inmemory.py [--clips 64] [--seconds 10] [--rate 16000]
                                        [--fused] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

WORDS = ["dog", "rain", "car", "bell", "bird", "music", "engine", "crowd", "water", "wind", "siren", "door"]


def make_clips(n: int, seconds: float, rate: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    clips = np.stack(
        [0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size) for _ in range(n)]
    ).astype(np.float32)
    texts = [f"a {WORDS[i % 12]} and a {WORDS[(i * 5 + 1) % 12]} number {i}" for i in range(n)]
    return clips, texts


def write_manifest(folder: Path, clips: np.ndarray, texts: list[str], rate: int) -> Path:
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text"])
        for i, (clip, text) in enumerate(zip(clips, texts)):
            sf.write(str(folder / f"clip{i:04d}.wav"), clip, rate, subtype="FLOAT")
            w.writerow([f"clip{i:04d}.wav", text])
    return folder / "manifest.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=16000, help="Hz of the clips (the tiny model's rate: 16000)")
    ap.add_argument("--fused", action="store_true", help="the tiny fused model (reads whole clips)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from humanclap import HumanCLAPScore
    from humanclap.recipes.tiny import build_tiny_clap
    from humanclap.scoring.inmemory import get_scorer
    from humanclap.scoring.job import ScoreJob

    work = Path(tempfile.mkdtemp(prefix="bench_inmemory_"))
    with redirect_stderr(io.StringIO()):
        model = build_tiny_clap(work / "model", fused=args.fused, seed=0)
        scorer = get_scorer(str(model), device="cpu")
    clips, texts = make_clips(args.clips, args.seconds, args.rate)
    manifest = write_manifest(work, clips, texts, args.rate)
    batch = torch.from_numpy(clips)

    def in_memory() -> tuple[float, list[float]]:
        metric = HumanCLAPScore(scorer)
        start = time.perf_counter()
        metric.update(batch, texts, args.rate)
        seconds = time.perf_counter() - start
        return seconds, torch.cat(metric.scores).tolist()

    def from_files(k: int) -> tuple[float, list[float]]:
        out = work / f"out{k}.csv"
        start = time.perf_counter()
        ScoreJob(scorer).run(manifest, out, progress=False)
        seconds = time.perf_counter() - start
        with open(out, newline="") as f:
            return seconds, [float(np.float32(r["clapscore"])) for r in csv.DictReader(f)]

    in_memory(), from_files(-1)  # warm-up: first forward passes, page cache, allocator
    mem_times, file_times = [], []
    same = True
    for k in range(args.repeat):
        if k % 2:
            (tf, sfile), (tm, sm) = from_files(k), in_memory()
        else:
            (tm, sm), (tf, sfile) = in_memory(), from_files(k)
        mem_times.append(tm)
        file_times.append(tf)
        same &= sm == sfile
    n = args.clips
    print(
        f"{n} clips x {args.seconds:g} s at {args.rate} Hz, tiny {'fused' if args.fused else 'unfused'} model, "
        f"{torch.get_num_threads()} threads, {args.repeat} runs each"
    )
    for label, pick in (("best", min), ("median", statistics.median)):
        mem, files = pick(mem_times), pick(file_times)
        print(
            f"  {label:6s} in memory (HumanCLAPScore.update): {mem:7.3f} s {n / mem:7.1f} clips/s | "
            f"files (ScoreJob.run on WAVs): {files:7.3f} s {n / files:7.1f} clips/s | ratio {files / mem:.3f}"
        )
    print(f"  same scores, bit for bit: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
