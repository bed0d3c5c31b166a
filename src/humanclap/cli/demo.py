"""``humanclap demo``: the whole Human-CLAP method offline, on simulated data, in minutes."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
stages: synthesize a RELATE-style dataset (procedural audio, simulated TTA systems and
listeners) -> base CLAP score -> fine-tune Human-CLAP (MAE, wSCE, wSCE+MAE) -> evaluate on
the held-out test split -> table + report (OUTPUT_DIR/report/report.md).
The audio and the listeners are SIMULATED; for real data see `humanclap reproduce`.
Re-running with the same OUTPUT_DIR reuses finished stages.

exit codes: 0 the demo ran; 2 usage error.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="offline end-to-end demo on synthetic data (CPU, about 8 min on 2 cores)",
        description="Run the whole Human-CLAP pipeline offline on a synthetic RELATE-style dataset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", "-o", default="humanclap_demo", help="working folder (default ./humanclap_demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the listeners and fine-tuning (default 0)")
    p.add_argument("--size", choices=["small", "default"], default="default",
                   help="default: RELATE-sized, ~5,700 rated pairs (about 8 min); small: ~350 pairs (a quick smoke run)")
    p.add_argument("--base", help="base CLAP folder (default: the small pretrained base shipped with humanclap)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs and p-values (default 1000)")
    p.add_argument("--rebuild-base", metavar="DIR",
                   help="instead of the demo: rerun the recipe of the shipped base model into DIR "
                        "(synthetic pretraining corpus, tokenizer, contrastive pretraining)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on when stderr is a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from humanclap.scoring.scorer import quiet_transformers

    quiet_transformers()
    say = lambda line: print(line, flush=True)
    if args.rebuild_base:
        from humanclap.synth.dataset import generate
        from humanclap.recipes.demo_base import RECIPE, pretrain_base

        out = Path(args.rebuild_base)
        generate(out / "synth", seed=RECIPE["synth_seed"], size=RECIPE["synth_size"], overwrite=True)
        pretrain_base(out / "synth", out / "work", out / "base", printer=say)
        say(f"base model written to {out / 'base'} (compare its recipe.json with the shipped one)")
        return 0
    if args.n_boot < 0:
        print("error: --n-boot must be >= 0", file=sys.stderr)
        return 2
    if args.base and not (Path(args.base) / "config.json").is_file():
        print(f"error: --base {args.base} is not a CLAP checkpoint folder (no config.json)", file=sys.stderr)
        return 2
    from humanclap.recipes.demo import run_demo

    run_demo(args.output_dir, seed=args.seed, size=args.size, base=args.base, n_boot=args.n_boot,
             printer=say, progress=args.progress)
    return 0
