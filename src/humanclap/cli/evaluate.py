"""``humanclap evaluate``: score a rated dataset with one or more models, write metrics and a report."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags
from humanclap.defaults import DEFAULT_MODEL
from humanclap.io import check_audio_root

EPILOG = f"""\
writes, in OUTPUT_DIR: predictions.csv (one row per pair: human score, one column
per model, error), metrics.json (SRCC/LCC/KTAU/MSE with bootstrap CIs overall,
natural/synthesized, per system and category; paired differences against the first
model; system-level correlation; model revisions), report.md and PNG plots.
MSE is on the 0-1 scale. Pairs whose audio is missing or unreadable are kept in
predictions.csv with an error, listed in the report and left out of the metrics.

exit codes: 0 every pair scored; 1 some pairs could not be scored (everything is
still written); 2 usage error (bad data spec, unreadable data, model that cannot be
loaded, bad flags);
{flags.EXIT_CODES_TAIL}.

examples:
  humanclap evaluate --data relate:RELATE --split test --output-dir out/ \\
      --model laion/clap-htsat-unfused --model sarulab-speech/human-clap-wsce-mae
  humanclap evaluate --data my_ratings.csv --model runs/ft/best -o out/
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="compare models' CLAPScores with human ratings (metrics + report)",
        description="Score every pair of a rated dataset with each model and measure agreement "
        "with the listeners (SRCC, LCC, KTAU, MSE with bootstrap CIs).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="M",
        help="hub id or local checkpoint folder; repeat to compare several models on "
        f"the same pairs (the first is the reference; default: {DEFAULT_MODEL}); "
        "a `humanclap stack` folder adds its members and the stacked score",
    )
    p.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="display name for each --model, in the same order (default: short model name)",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="relate:DIR, xacle:DIR, or a .csv/.jsonl manifest (audio,text,score)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="split to evaluate (default: 'test' when the data has it, else every pair); 'all' evaluates every pair",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        required=True,
        metavar="D",
        help="folder for the outputs: new, empty, or an earlier evaluate run's (replaced only with --overwrite)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier evaluate run in --output-dir (only the files it wrote "
        "are deleted; a folder with anything else is never written)",
    )
    p.add_argument("--audio-root", metavar="DIR", help="where the audio files are (overrides the dataset default)")
    p.add_argument(
        "--score-scale",
        default="auto",
        help="manifests only: rating scale, e.g. 10 or 1-5 (default auto: <=1 kept, else 0-10)",
    )
    flags.add_batch_size(p)
    flags.add_device(p)
    flags.add_dtype(p)
    flags.add_n_boot(p, help="bootstrap resamples for CIs (default 1000; 0 = no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    flags.add_plots(p, help="write the PNG plots (default on; --no-plots skips matplotlib)")
    flags.add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, pandas, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.report import summary_table

    # lazy: keeps numpy, pandas, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.workflow import run_evaluation

    flags.check_compute(args.device, args.dtype)
    check_audio_root(args.audio_root)
    run = run_evaluation(
        args.data,
        args.output_dir,
        args.model,
        labels=args.label,
        split=args.split,
        audio_root=args.audio_root,
        score_scale=args.score_scale,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        n_boot=args.n_boot,
        seed=args.seed,
        plots=args.plots,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    if run.rank:  # torchrun: rank 0 prints and writes; the others return the same outcome
        return 1 if run.n_failed else 0
    print(summary_table(run.result))
    print(f"wrote {', '.join(p.name for p in run.files.values())} to {run.output_dir}", file=sys.stderr)
    if run.n_failed and run.result.n_scored == 0:
        print(
            f"humanclap evaluate: no pair could be scored ({run.n_failed} of "
            f"{len(run.result.pairs)} failed; see the error column of predictions.csv): no "
            "metric was computed",
            file=sys.stderr,
        )
        return 1
    if run.n_failed:
        print(
            f"humanclap evaluate: {run.n_failed} of {len(run.result.pairs)} pairs could not be "
            "scored (see the error column of predictions.csv)",
            file=sys.stderr,
        )
        return 1
    return 0
