"""``humanclap stack``: fit a ridge on several models' scores of the training pairs."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
input: predictions.csv files of `humanclap evaluate` on the TRAINING pairs, each in
the folder evaluate wrote (its metrics.json names the model behind each score
column): one file holding several models, or one file per model, all scored on
the same pairs in the same order. Score the members first:
  humanclap evaluate --data relate:R --split train --model A --model B -o train_eval/

the stack: features = the members' CLAPScores, standardised on the training pairs;
target = the mean human score (0-1); ridge regression with an unpenalised
intercept, alpha per pair from a fixed grid (1e-4 .. 1e2, half decades), chosen
by k-fold cross-validation (seeded folds) on the mean held-out SRCC (--criterion
mse: the mean held-out MSE); ties go to the larger alpha. Predictions are clipped
to [0, 1], the CLAPScore range.

writes, in OUTPUT_DIR: stack.json (members with their model specs and revisions,
coefficients, intercept, alpha, the CV table, the training pairs' fingerprint)
and training_pairs.csv. Then report the stack beside its members on held-out pairs:
  humanclap evaluate --data relate:R --split test --model OUTPUT_DIR -o test_eval/

exit codes: 0 fitted; 2 usage error (members scored on different pairs, a member
missing, failed pairs without --drop-failed, one member, too few pairs for the
folds, test-split pairs, an output folder that holds anything else);
{flags.EXIT_CODES_TAIL}.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "stack",
        help="fit a ridge on several models' scores (a stacked metric for evaluate)",
        description="Fit a ridge regression of the human score on several models' CLAPScores "
        "over the training pairs, alpha by k-fold cross-validation; `evaluate "
        "--model OUTPUT_DIR` then reports the stacked score beside its members.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "predictions",
        nargs="+",
        metavar="PRED.csv",
        help="predictions.csv of humanclap evaluate --split train (one or several)",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        required=True,
        metavar="D",
        help="folder for stack.json: new, empty, or an earlier stack run's (replaced only with --overwrite)",
    )
    p.add_argument(
        "--member",
        action="append",
        metavar="LABEL",
        help="use only these models (label or column; repeat; default every model of the files)",
    )
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    p.add_argument(
        "--criterion",
        default="srcc",
        choices=["srcc", "mse"],
        help="held-out criterion that picks alpha (default srcc)",
    )
    p.add_argument(
        "--alpha", type=float, default=None, help="a fixed ridge alpha (per pair) instead of cross-validation"
    )
    p.add_argument(
        "--drop-failed", action="store_true", help="fit on the pairs every member scored (default: refuse failed pairs)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier stack run in --output-dir (only the files it wrote)",
    )
    p.set_defaults(func=run)


def summary(result) -> str:
    w, b = result.fit.raw_coef()
    lines = [
        f"stack of {len(result.members)} members on {result.n_pairs} training pairs, "
        f"alpha {result.fit.alpha:g}"
        + (" (given)" if result.cv is None else f" ({result.cv['k']}-fold CV, {result.cv['criterion'].upper()})"),
        f"  {'member':<24} {'weight':>9} {'std. weight':>11}",
    ]
    for member, raw, std in zip(result.members, w, result.fit.coef):
        lines.append(f"  {member.label:<24} {raw:9.4f} {std:11.4f}")
    lines.append(f"  {'intercept':<24} {b:9.4f}")
    if result.cv is not None:
        lines.append(f"  {'alpha':>10} {'CV SRCC':>8} {'CV MSE':>8}")
        for row in result.cv["rows"]:
            mark = " <" if row["alpha"] == result.fit.alpha else ""
            lines.append(f"  {row['alpha']:10.4g} {row['mean_srcc']:8.4f} {row['mean_mse']:8.4f}{mark}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, pandas, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.stack import fit_stack

    result = fit_stack(
        args.predictions,
        args.output_dir,
        folds=args.folds,
        seed=args.seed,
        criterion=args.criterion,
        alpha=args.alpha,
        drop_failed=args.drop_failed,
        select=args.member,
        overwrite=args.overwrite,
    )
    print(summary(result))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote stack.json, training_pairs.csv to {result.folder}", file=sys.stderr)
    return 0
