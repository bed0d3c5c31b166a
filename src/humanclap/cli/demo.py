"""``humanclap demo``: the whole Human-CLAP method offline, on simulated data, in minutes."""

from __future__ import annotations

import argparse

from humanclap.cli import flags
from humanclap.errors import UsageError

EPILOG = f"""\
stages: synthesize a RELATE-style dataset (procedural audio, simulated TTA systems and
listeners) -> base CLAP score -> fine-tune Human-CLAP (MAE, wSCE, wSCE+MAE; with
--extended also the recipes) -> evaluate on the held-out test split -> table + report
(OUTPUT_DIR/report/report.md).
The audio and the listeners are SIMULATED; for real data see `humanclap reproduce`.

output: OUTPUT_DIR must be new, empty, or hold an earlier demo run (its marker
.humanclap-run.json); it is locked while the demo runs. Re-running the same command
(same --seed, --size, --base) continues: finished stages are reused, an interrupted
fine-tuning resumes from its checkpoint. Another seed, size or base in the same folder
is refused (its results are never reused): give each run its own folder, e.g.
  humanclap demo --seed 1 -o humanclap_demo_seed1
or pass --overwrite to replace the earlier demo run (only the files it wrote are deleted;
nothing else is ever deleted or replaced). --rebuild-base DIR follows the same rules.
--extended in a folder of a plain demo run reuses its models and adds the recipes'.

exit codes: 0 the demo ran; 2 usage error (bad --base or --n-boot; an output folder that
holds something else, a demo run of another seed/size/base, or another run in progress);
{flags.EXIT_CODES_TAIL}.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="offline end-to-end demo on synthetic data (CPU, 4-10 min on 2 cores)",
        description="Run the whole Human-CLAP pipeline offline on a synthetic RELATE-style dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output-dir", "-o", default="humanclap_demo", help="working folder (default ./humanclap_demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the listeners and fine-tuning (default 0)")
    p.add_argument(
        "--size",
        choices=["small", "default"],
        default="default",
        help="default: RELATE-sized, ~5,700 rated pairs (4-10 min); small: ~350 pairs (a quick smoke run)",
    )
    p.add_argument("--base", help="base CLAP folder (default: the small pretrained base shipped with humanclap)")
    p.add_argument(
        "--extended",
        action="store_true",
        help="also fine-tune the recipes beyond the paper (wSCE+MAE on listener-z targets, "
        "MSE+pairwise, a score head on frozen embeddings, ListNet) and add their rows, each "
        "also compared with wSCE+MAE (about 5 more minutes)",
    )
    flags.add_n_boot(p, help="bootstrap resamples for CIs and p-values (default 1000)")
    p.add_argument(
        "--rebuild-base",
        metavar="DIR",
        help="instead of the demo: rerun the recipe of the shipped base model into DIR "
        "(synthetic pretraining corpus, tokenizer, contrastive pretraining)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo (or --rebuild-base) run in the folder: deletes only the files that run wrote",
    )
    flags.add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    say = lambda line: print(line, flush=True)  # noqa: E731 -- stages show up as they finish
    if args.rebuild_base:
        from humanclap.recipes.demo_base import rebuild_base

        if args.extended:
            raise UsageError("--extended adds rows to the demo's table; --rebuild-base runs no demo: drop one")

        extra = {"overwrite": True} if args.overwrite else {}
        rebuild_base(args.rebuild_base, printer=say, **extra)
        return 0
    from humanclap.recipes.demo import run_demo

    # The table and the claim's verdict are printed by run_demo as it finishes; whether the
    # claim holds is a finding of the demo, not a failure of the command, so the exit code is 0.
    run_demo(
        args.output_dir,
        seed=args.seed,
        size=args.size,
        base=args.base,
        n_boot=args.n_boot,
        printer=say,
        progress=args.progress,
        overwrite=args.overwrite,
        extended=args.extended,
    )
    return 0
