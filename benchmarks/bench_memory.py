"""Peak RSS of ``humanclap score`` at 10,000 vs 100,000 rows (bounded memory, issue 10).

Tiny model (the model's size does not change how the job's bookkeeping grows with rows),
distinct texts on every row, and either ``--files 50`` short files repeated or one distinct
short file per row (``--distinct-files``). Each run is a fresh ``humanclap score`` process;
its peak RSS comes from ``wait4``. With ``--baseline SRC`` the same runs use another
checkout's ``src`` (e.g. ``git archive main``) for the before/after figure.

    python benchmarks/bench_memory.py [--rows 10000 100000] [--distinct-files] [--baseline SRC]
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


def write_manifest(folder: Path, rows: int, files: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(files):
        path = folder / f"c{i}.wav"
        if not path.exists():
            sf.write(path, (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000, subtype="PCM_16")
    manifest = folder / f"m{rows}_{files}.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["audio", "text"])
        for i in range(rows):
            w.writerow([f"c{i % files}.wav", f"sound number {i} of a very long manifest"])
    return manifest


def run(manifest: Path, ckpt: Path, out: Path, src: str | None) -> tuple[float, int, float]:
    """One ``humanclap score`` process (``src`` first on the path): wall s, peak MiB, CPU s."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if src:
        env["PYTHONPATH"] = src
    cmd = [
        sys.executable,
        "-c",
        "import sys; from humanclap.cli import main; sys.exit(main(sys.argv[1:]))",
        "score",
        str(manifest),
        "--model",
        str(ckpt),
        "--device",
        "cpu",
        "-o",
        str(out),
        "--overwrite",
        "--batch-size",
        "64",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(err[-2000:])
    return time.perf_counter() - start, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--distinct-files", action="store_true")
    ap.add_argument("--baseline", help="a src/ folder of another checkout to measure too")
    ap.add_argument("--workdir")
    args = ap.parse_args()
    from humanclap.recipes.tiny import build_tiny_clap

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        ckpt = build_tiny_clap(tmp / "tiny", fused=False, seed=0)
        for label, src in (("this branch", None), ("baseline", args.baseline)):
            if label == "baseline" and not src:
                continue
            peaks = []
            for rows in args.rows:
                files = rows if args.distinct_files else args.files
                m = write_manifest(tmp, rows, files)
                secs, rss, _ = run(m, ckpt, tmp / "out.csv", src)
                peaks.append(rss)
                print(f"{label}: {rows} rows, {files} files: peak RSS {rss} MiB, {secs:.0f} s", flush=True)
            print(f"{label}: ratio {peaks[-1] / peaks[0]:.2f}x ({args.rows[-1]} vs {args.rows[0]} rows)")


if __name__ == "__main__":
    main()
