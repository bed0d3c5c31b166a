"""``humanclap evaluate``: score a rated dataset with one or more models, write metrics and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
writes, in OUTPUT_DIR: predictions.csv (one row per pair: human score, one column
per model, error), metrics.json (SRCC/LCC/KTAU/MSE with bootstrap CIs overall,
natural/synthesized, per system and category; paired differences against the first
model; system-level correlation; model revisions), report.md and PNG plots.
MSE is on the 0-1 scale. Pairs whose audio is missing or unreadable are kept in
predictions.csv with an error, listed in the report and left out of the metrics.

exit codes: 0 every pair scored; 1 some pairs could not be scored (everything is
still written); 2 usage error (bad data spec, unreadable data, model that cannot be
loaded, bad flags).

examples:
  humanclap evaluate --data relate:RELATE --split test --output-dir out/ \\
      --model laion/clap-htsat-unfused --model sarulab-speech/human-clap-wsce-mae
  humanclap evaluate --data my_ratings.csv --model runs/ft/best -o out/
"""


def add_parser(subparsers) -> None:
    from humanclap.defaults import DEFAULT_MODEL

    p = subparsers.add_parser(
        "evaluate", help="compare models' CLAPScores with human ratings (metrics + report)",
        description="Score every pair of a rated dataset with each model and measure agreement "
                    "with the listeners (SRCC, LCC, KTAU, MSE with bootstrap CIs).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", metavar="M",
                   help="hub id or local checkpoint folder; repeat to compare several models on "
                        f"the same pairs (the first is the reference; default: {DEFAULT_MODEL})")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="display name for each --model, in the same order (default: short model name)")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="relate:DIR, xacle:DIR, or a .csv/.jsonl manifest (audio,text,score)")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: 'test' when the data has it, else every "
                        "pair); 'all' evaluates every pair")
    p.add_argument("-o", "--output-dir", required=True, metavar="D", help="folder for the outputs")
    p.add_argument("--audio-root", metavar="DIR", help="where the audio files are (overrides the dataset default)")
    p.add_argument("--score-scale", default="auto",
                   help="manifests only: rating scale, e.g. 10 or 1-5 (default auto: <=1 kept, else 0-10)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="compute precision (default fp32)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs (default 1000; 0 = no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="write the PNG plots (default on; --no-plots skips matplotlib)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on when stderr is a terminal)")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"humanclap evaluate: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from humanclap.data import DatasetError, load_rated
    from humanclap.evaluation.evaluate import check_model_spec, evaluate_models, select_split
    from humanclap.scoring.scorer import DEFAULT_MODEL, ModelLoadError, quiet_transformers
    from humanclap.evaluation.report import summary_table, write_report

    models = args.model or [DEFAULT_MODEL]
    if args.label and len(args.label) != len(models):
        return _fail(f"{len(args.label)} --label for {len(models)} --model: give one label per model")
    if args.batch_size < 1:
        return _fail("--batch-size must be at least 1")
    if args.n_boot < 0:
        return _fail("--n-boot must be 0 or more")
    try:  # the cheap checks first: no model is loaded before the data and paths are known good
        for m in models:
            check_model_spec(m)
        data = load_rated(args.data, audio_root=args.audio_root, score_scale=args.score_scale)
        data, split = select_split(data, args.split)
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
    except (DatasetError, ModelLoadError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot create the output folder {args.output_dir}: {exc.strerror or exc}")
    if len(data) == 0:
        return _fail(f"{args.data}: no pairs in split {split!r}")

    quiet_transformers()
    try:
        result = evaluate_models(models, data, labels=args.label, batch_size=args.batch_size,
                                 device=args.device, dtype=args.dtype, n_boot=args.n_boot,
                                 seed=args.seed, data_spec=args.data, progress=args.progress)
    except (ModelLoadError, ValueError) as exc:
        return _fail(str(exc))
    result.split = split
    files = write_report(result, out, plots=args.plots)
    print(summary_table(result))
    print(f"wrote {', '.join(p.name for p in files.values())} to {out}", file=sys.stderr)
    if result.n_failed:
        print(f"humanclap evaluate: {result.n_failed} of {len(result.pairs)} pairs could not be "
              "scored (see the error column of predictions.csv)", file=sys.stderr)
        return 1
    return 0
