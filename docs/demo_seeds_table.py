"""Print the README's 3-seed table of the recipes from ``humanclap demo --extended`` runs.

    python docs/demo_seeds_table.py humanclap_demo_seed0 humanclap_demo_seed1 humanclap_demo_seed2
    python docs/demo_seeds_table.py --recipes-only ...   # the README's rows: the recipes only

Reads each folder's ``demo_summary.json`` (written by the demo) and prints one Markdown row
per model and seed: test SRCC with its 95% bootstrap CI, and the paired-bootstrap SRCC
difference (p) against Human-CLAP (wSCE+MAE) and against the base CLAP. Nothing is
recomputed: the numbers are the demo's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _diff(d: float | None, p: float | None) -> str:
    return "–" if d is None else f"{d:+.3f} (p {p:.3f})"


def rows(folders: list[str], recipes_only: bool = False) -> list[str]:
    runs = [json.loads((Path(f) / "demo_summary.json").read_text()) for f in folders]
    missing = [f for f, run in zip(folders, runs) if not run.get("extended")]
    if missing:
        raise SystemExit(f"not an --extended demo run: {', '.join(missing)}")
    out = [
        "| model | seed | test SRCC [95% CI] | − wSCE+MAE (p) | − base (p) |",
        "|---|---|---|---|---|",
    ]
    labels = [r["model"] for r in runs[0]["rows"] if not recipes_only or "srcc_diff_vs_claim" in r]
    for label in labels:
        for run in runs:
            r = next(x for x in run["rows"] if x["model"] == label)
            o = r["overall"]
            srcc = f"{o['srcc']:.3f} [{o['srcc_ci'][0]:.3f}, {o['srcc_ci'][1]:.3f}]"
            vs_claim = _diff(r.get("srcc_diff_vs_claim"), r.get("srcc_p_vs_claim"))
            vs_base = _diff(r["srcc_diff_vs_base"], r["srcc_p_vs_base"])
            out.append(f"| {label} | {run['seed']} | {srcc} | {vs_claim} | {vs_base} |")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    only = "--recipes-only" in args
    folders = [a for a in args if a != "--recipes-only"]
    if not folders:
        raise SystemExit(__doc__)
    print("\n".join(rows(folders, only)))
