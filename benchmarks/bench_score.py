"""Throughput, precision and memory of `humanclap score` against the naive loop.

Full-size LAION CLAP architecture (default ``ClapConfig``: RoBERTa-base + HTSAT-tiny,
random weights, so the compute is the real one), 64 ten-second 16 kHz clips with 64
prompts. Both sides run as whole processes in this same run:

* ours:  ``humanclap score manifest.csv --model CKPT -o out.csv`` (fp32, then bf16)
* naive: what third-party code does: ``ClapProcessor`` + ``ClapModel`` one pair at a time.

Also measured: the share of our run spent outside the model's forward (in-process, with
timers around ``get_audio_features``/``get_text_features``), and the peak RSS of
``humanclap score`` on 200 and 2,000 short clips (tiny model: the model's size does not
change how our bookkeeping grows with rows).

    python benchmarks/bench_score.py [--clips 64] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

NAIVE_LOOP = r"""
import csv, sys, time, numpy as np, soundfile as sf, soxr, torch
from transformers import ClapModel, ClapProcessor
ckpt, manifest, out = sys.argv[1:4]
model = ClapModel.from_pretrained(ckpt).eval()
processor = ClapProcessor.from_pretrained(ckpt)
rows = list(csv.DictReader(open(manifest)))
cos = []
with torch.no_grad():
    for r in rows:
        wav, rate = sf.read(r["audio"], dtype="float32")
        wav = soxr.resample(wav, rate, 48000)
        inputs = processor(text=[r["text"]], audio=[wav], sampling_rate=48000, return_tensors="pt", padding=True)
        o = model(**inputs)
        cos.append(float(torch.nn.functional.cosine_similarity(o.text_embeds, o.audio_embeds)[0]))
np.save(out, np.array(cos))
"""


def build_full_size_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from humanclap.recipes.tiny import DEFAULT_CORPUS, train_tokenizer

    torch.manual_seed(0)
    model = ClapModel(ClapConfig())  # the LAION clap-htsat-unfused architecture
    model.save_pretrained(folder)
    train_tokenizer(DEFAULT_CORPUS * 10, vocab_size=1000).save_pretrained(folder)
    ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc").save_pretrained(folder)
    return folder


def write_clips(folder: Path, n: int, seconds: float, rate: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    words = ["dog", "rain", "car", "bell", "bird", "music", "engine", "crowd", "water", "wind", "siren", "door"]
    rows = []
    for i in range(n):
        t = np.arange(int(seconds * rate)) / rate
        clip = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, clip.astype(np.float32), rate, subtype="PCM_16")
        rows.append({"audio": str(path), "text": f"a {words[i % 12]} and a {words[(i * 5 + 1) % 12]} number {i}"})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def run_process(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stderr of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss // 1024, err


def read_cosines(path: Path) -> np.ndarray:
    return np.array([float(r["cosine"]) for r in csv.DictReader(open(path))])


def forward_share(ckpt: Path, manifest: Path) -> float:
    """Fraction of an in-process `ScoreJob` run spent inside the model's forward passes."""
    from humanclap.scoring.clap.scorer import CLAPScorer
    from humanclap.scoring.job import ScoreJob

    scorer = CLAPScorer.from_pretrained(str(ckpt), device="cpu")
    spent = [0.0]
    for name in ("get_audio_features", "get_text_features"):
        original = getattr(scorer.model, name)

        def timed(*a, _f=original, **k):
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t

        setattr(scorer.model, name, timed)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ScoreJob(scorer, batch_size=8).run(manifest, Path(tmp) / "o.csv", progress=False)
        total = time.perf_counter() - start
    return 1 - spent[0] / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (their median is reported)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    from scipy.stats import spearmanr

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = build_full_size_checkpoint(work / "ckpt")
    manifest = write_clips(work, args.clips, 10.0)
    cli = [
        sys.executable,
        "-m",
        "humanclap.cli",
        "score",
        str(manifest),
        "--model",
        str(ckpt),
        "--batch-size",
        "8",
        "--overwrite",
    ]  # a reused --workdir holds the last run's outputs

    # Alternating runs, the median of each side: on a shared 2-core VM one run of either
    # side varies by +-10 %, enough to move a single ratio by 0.2.
    naive_runs, ours_runs = [], []
    for _ in range(args.repeat):
        naive_runs.append(
            run_process([sys.executable, "-c", NAIVE_LOOP, str(ckpt), str(manifest), str(work / "naive.npy")])
        )
        ours_runs.append(run_process(cli + ["-o", str(work / "fp32.csv")]))
    t_naive, rss_naive = float(np.median([r[0] for r in naive_runs])), max(r[1] for r in naive_runs)
    t_ours, rss_ours = float(np.median([r[0] for r in ours_runs])), max(r[1] for r in ours_runs)
    t_bf16, _, _ = run_process(cli + ["-o", str(work / "bf16.csv"), "--dtype", "bf16"])
    naive, ours, bf16 = np.load(work / "naive.npy"), read_cosines(work / "fp32.csv"), read_cosines(work / "bf16.csv")
    outside = forward_share(ckpt, manifest)

    n = args.clips
    print(f"\n== {n} ten-second clips, full-size CLAP (random weights), {os.cpu_count()} CPU cores ==")
    print(
        f"naive loop (ClapProcessor+ClapModel, 1 pair at a time): {t_naive:7.1f} s  {n / t_naive:6.2f} clips/s  "
        f"peak RSS {rss_naive} MiB"
    )
    print(
        f"humanclap score fp32 (batch 8):                         {t_ours:7.1f} s  {n / t_ours:6.2f} clips/s  "
        f"peak RSS {rss_ours} MiB"
    )
    print(
        f"  speed-up vs naive: {t_naive / t_ours:.2f}x (medians of {args.repeat} alternating runs; naive "
        f"{' '.join(f'{r[0]:.1f}' for r in naive_runs)} s, ours {' '.join(f'{r[0]:.1f}' for r in ours_runs)} s)   "
        f"max |cosine diff| vs naive: {np.abs(ours - naive).max():.2e}"
    )
    print(f"  time outside the model forward (in-process): {100 * outside:.1f}%")
    print(f"humanclap score bf16 (batch 8):                         {t_bf16:7.1f} s  {n / t_bf16:6.2f} clips/s")
    print(
        f"  speed-up vs naive: {t_naive / t_bf16:.2f}x   vs fp32: {t_ours / t_bf16:.2f}x   "
        f"SRCC vs fp32: {spearmanr(bf16, ours).statistic:.4f}   max |dev|: {np.abs(bf16 - ours).max():.2e}"
    )

    from humanclap.recipes.tiny import build_tiny_clap

    tiny = build_tiny_clap(work / "tiny")
    for rows in (200, 2000):
        folder = work / f"rss{rows}"
        folder.mkdir(exist_ok=True)
        m = write_clips(folder, rows, 0.5)
        t, rss, _ = run_process(
            [
                sys.executable,
                "-m",
                "humanclap.cli",
                "score",
                str(m),
                "--model",
                str(tiny),
                "-o",
                str(folder / "o.jsonl"),
                "--batch-size",
                "8",
                "--overwrite",
            ]
        )
        print(f"peak RSS scoring {rows:5d} short clips (tiny model): {rss} MiB ({t:.1f} s)")
    print(f"\nfiles kept in {work}")


if __name__ == "__main__":
    main()
