"""Cost of the output contract and identity checks (issue 16) on a large ``score`` job.

``humanclap score`` on 100,000 rows (tiny model, distinct texts, 50 short files repeated, as
in ``bench_memory.py``) with this checkout's code and with a baseline checkout's ``src``
(e.g. the commit before issue 16: ``git archive c4826aa | tar -x -C /tmp/base``),
alternating run by run so that a slow minute of the machine hits both. Prints each run's
wall-clock and CPU time (user + system of the score process, from ``wait4``: far less
sensitive than wall-clock to other load on a shared machine), both medians and their
ratios (goal: within 2 %).

    python benchmarks/bench_contract.py --baseline /tmp/base/src [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import run, write_manifest  # noqa: E402  (the same job, the same way)

HERE = str(Path(__file__).resolve().parents[1] / "src")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the src folder of the checkout to compare with")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from humanclap.recipes.tiny import build_tiny_clap

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = build_tiny_clap(folder / "tiny", fused=False, seed=0)
        manifest = write_manifest(folder, args.rows, 50)
        wall: dict[str, list[float]] = {"baseline": [], "this": []}
        cpu: dict[str, list[float]] = {"baseline": [], "this": []}
        for i in range(args.repeats):
            for name, src in (("baseline", args.baseline), ("this", HERE)):
                seconds, rss, cpu_s = run(manifest, ckpt, folder / f"out_{name}.csv", src)
                wall[name].append(seconds)
                cpu[name].append(cpu_s)
                print(
                    f"run {i + 1} {name:8s} wall {seconds:7.1f} s  CPU {cpu_s:7.1f} s  peak RSS {rss} MiB", flush=True
                )
        for what, times in (("wall", wall), ("CPU", cpu)):
            base, this = statistics.median(times["baseline"]), statistics.median(times["this"])
            print(
                f"median {what}: baseline {base:.1f} s, this checkout {this:.1f} s, ratio "
                f"{this / base:.3f} ({args.rows} rows, {args.repeats} runs each, alternating)"
            )


if __name__ == "__main__":
    main()
