"""``humanclap compare`` on 10 systems x 1,000 prompts from score files, 1,000 resamples.

Prints the wall time of the whole command (reading 10 score files, the statistics, every
file and both plots; goal: under 10 s), the time of the statistics alone, and the same
statistics from a naive reference in the same run (a plain Python loop over resamples,
systems and prompts, on the very same resample indices), with the ratio and the largest
difference between the two (means' CIs, pair p-values and CIs).

    PYTHONPATH=src python benchmarks/bench_compare.py [--systems 10] [--prompts 1000] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
import time
from pathlib import Path

import numpy as np


def write_score_files(folder: Path, systems: int, prompts: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 0.08, prompts)
    paths = []
    for s in range(systems):
        path = folder / f"system{s:02d}.csv"
        quality = 0.45 + 0.01 * s
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "audio", "clapscore", "cosine", "error"])
            for p in range(prompts):
                cos = quality + difficulty[p] + rng.normal(0, 0.1)
                w.writerow([f"prompt {p}", f"s{s}/{p}.wav", f"{max(cos, 0):.6f}", f"{cos:.6f}", ""])
        paths.append(path)
    return paths


def naive(values: list[list[float]], idx: np.ndarray, level: float = 0.95) -> dict:
    """The statistics by plain loops: a mean per system per resample, then per pair."""
    n = len(values[0])
    rows = idx.tolist()
    boot = [[sum(v[i] for i in row) / n for v in values] for row in rows]

    def interval(xs):
        return tuple(np.quantile(xs, [(1 - level) / 2, 1 - (1 - level) / 2]))

    out = {"ci": [interval([b[s] for b in boot]) for s in range(len(values))], "pairs": {}}
    for a in range(len(values)):
        for c in range(a + 1, len(values)):
            d = [b[a] - b[c] for b in boot]
            d = [0.0 if abs(x) <= 1e-12 else x for x in d]
            below = (sum(x <= 0 for x in d) + 1) / (len(d) + 1)
            above = (sum(x >= 0 for x in d) + 1) / (len(d) + 1)
            out["pairs"][(a, c)] = (min(1.0, 2 * min(below, above)), interval(d))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    from humanclap.cli import main as cli
    from humanclap.evaluation.compare import compare_tables
    from humanclap.evaluation.compare_stats import compare_matrix

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_score_files(folder, args.systems, args.prompts)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli(["compare", *map(str, paths), "-o", str(folder / "out"), "--n-boot", str(args.n_boot)])
        whole = time.perf_counter() - t0
        assert code == 0, code
        table = compare_tables(paths, n_boot=0).table

    names = table.systems
    t0 = time.perf_counter()
    res = compare_matrix(table.values, names, n_boot=args.n_boot, seed=0)
    stats_s = time.perf_counter() - t0

    idx = np.random.default_rng(0).integers(0, args.prompts, size=(args.n_boot, args.prompts))
    t0 = time.perf_counter()
    ref = naive(table.values.tolist(), idx)
    naive_s = time.perf_counter() - t0

    by_name = {s["system"]: s for s in res.systems}
    ci_diff = max(
        max(abs(by_name[n]["ci_low"] - ref["ci"][k][0]), abs(by_name[n]["ci_high"] - ref["ci"][k][1]))
        for k, n in enumerate(names)
    )
    pos = {n: k for k, n in enumerate(names)}
    p_diff = pair_ci_diff = 0.0
    for pair in res.pairs:
        a, b = pos[pair["a"]], pos[pair["b"]]
        p, (lo, hi) = ref["pairs"][(min(a, b), max(a, b))]
        if a > b:  # the reference's difference has the other sign
            lo, hi = -hi, -lo
        p_diff = max(p_diff, abs(pair["p"] - p))
        pair_ci_diff = max(pair_ci_diff, abs(pair["ci_low"] - lo), abs(pair["ci_high"] - hi))

    print(f"compare: {args.systems} systems x {args.prompts} prompts, {args.n_boot} resamples, {len(res.pairs)} pairs")
    print(
        f"  whole command (read 10 files, statistics, json/csv/md, 2 plots): {whole:.2f} s "
        f"({'under' if whole < 10 else 'OVER'} the 10 s goal)"
    )
    print(f"  statistics, vectorised (one shared resample matrix): {stats_s:.3f} s")
    print(f"  statistics, naive Python loops (same resamples):     {naive_s:.3f} s")
    print(f"  ratio naive / vectorised: {naive_s / stats_s:.0f}x")
    print(f"  largest difference: system CI {ci_diff:.1e}, pair CI {pair_ci_diff:.1e}, p {p_diff:.1e}")


if __name__ == "__main__":
    main()
