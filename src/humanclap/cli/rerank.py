"""``humanclap rerank``: best of N, the top-k candidate clips of each prompt by score."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
input: a score file of `humanclap score` with N candidate clips per prompt (the
prompt is `prompt_id` when there is one, else `text`). Score a manifest first:
  humanclap score candidates.csv -o scores.csv

output: the top-k rows of each prompt (every input column plus rank_in_prompt,
1 = best), prompts in input order, as CSV or JSONL by OUT's extension. Ties are
broken by higher cosine, then the earlier input row: the same picks every run.
Failed rows (error) are never picked. OUT.rerank.json beside OUT holds the
counts, the settings and, with human ratings (a score or rating column), the
selection gain: the mean rating of the metric's picks vs a random pick (exactly:
the mean rating of the prompt's candidates) vs the best possible pick (the k
highest ratings), with 95% bootstrap CIs over prompts. An existing non-empty OUT
is replaced only when rerank wrote it and --overwrite is given.

exit codes: 0 every row scored and ranked; 1 some rows failed (never picked; the
rest is written); 2 usage error (bad flags, unreadable input, an output that is
the input or a file rerank did not write);
{flags.EXIT_CODES_TAIL}.

example:
  humanclap rerank scores.csv -k 1 -o best.csv
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rerank",
        help="best of N: keep the top-k clips per prompt by score",
        description="Keep the k best-scoring candidate clips of each prompt (ties: higher "
        "cosine, then input order); with ratings, the selection gain over a random pick.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="score file (.csv/.jsonl) with several candidates per prompt")
    p.add_argument("-o", "--output", required=True, help="output manifest (.csv or .jsonl)")
    p.add_argument("-k", type=int, default=1, help="candidates kept per prompt (default 1)")
    p.add_argument(
        "--score-column", default="clapscore", help="column to rank by, higher is better (default clapscore)"
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=10_000,
        help="bootstrap resamples for the selection gain's CIs (default 10000; 0 = none)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier rerank output at -o (never a file rerank did not write)",
    )
    p.set_defaults(func=run)


def gain_text(gain: dict) -> str:
    def row(name: str, key: str) -> str:
        g = gain[key]
        if g["mean"] is None:
            return f"  {name:<22} –"
        ci = "" if g["ci_low"] is None else f" [{g['ci_low']:.3f}, {g['ci_high']:.3f}]"
        return f"  {name:<22} {g['mean']:.3f}{ci}"

    return "\n".join(
        [
            f"selection gain ({gain['rating_column']}, top-{gain['k']}, {gain['n_prompts']} prompts, 95% CI):",
            row("metric's pick", "metric"),
            row("random pick", "random"),
            row("oracle pick", "oracle"),
            row("metric - random", "metric_minus_random"),
            row("oracle - metric", "oracle_minus_metric"),
            row("share of oracle gain", "captured"),
        ]
    )


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.rerank import run_rerank

    result = run_rerank(
        args.input,
        args.output,
        args.k,
        score_column=args.score_column,
        n_boot=args.n_boot,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    if result.gain is not None:
        print(gain_text(result.gain))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"picked {result.n_picked} of {result.n_rows} rows for {result.n_prompts} prompts: "
        f"{result.output} (and {result.output.name}.rerank.json)",
        file=sys.stderr,
    )
    return 1 if result.n_failed else 0
