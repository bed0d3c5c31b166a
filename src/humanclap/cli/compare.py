"""``humanclap compare``: rank systems by CLAPScore on shared prompts, with paired tests."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags
from humanclap.io import check_audio_root

EPILOG = f"""\
input: score files of `humanclap score` (clapscore, cosine, error + the input
columns), or manifests (audio, text) scored here with --model. The system is the
`system` column, else the file's name (one file per system works). The prompt is
`prompt_id` when there is one, else `text`. A `score` or `rating` column holds
human ratings: then the listeners' ranking and its agreement with the metric's
(system-level SRCC, KTAU, pairwise accuracy) are added.

statistics: per system the mean with a 95% percentile-bootstrap CI over prompts;
per pair the mean difference on the shared prompts, a paired bootstrap (the same
resamples for every system) two-sided p, Holm-adjusted across pairs, and the win
rate (share of prompts where a scores higher; ties count as half).
tiers: ranked by mean; going down, a system joins the current tier while its
Holm-adjusted p against the tier's top system is >= --alpha; the first that
differs significantly starts the next tier.

rules: systems must have the same prompts (else refused, naming how many differ;
--intersect keeps the shared ones); failed rows (error) are refused (exit 1;
--drop-failed leaves their prompts out for every system); several rows for one
system and prompt are refused (--average-duplicates averages them); one prompt:
no CI, no p. Same input and --seed: the same bytes.

writes, in OUTPUT_DIR: compare.json (everything, with the seed), compare.csv (one
row per system), pairs.csv, report.md, forest.png and win_rates.png (--no-plots
skips them); with --model also scores.csv (scores-K.csv for input K).

exit codes: 0 compared; 1 some rows failed (with --drop-failed: compared without
their prompts; without it: nothing compared); 2 usage error (bad flags,
unreadable input, systems without the same prompts, duplicates, an output folder
that holds anything else);
{flags.EXIT_CODES_TAIL}.

examples:
  humanclap compare scores.csv -o cmp/                       # a system column
  humanclap compare sysA.csv sysB.csv sysC.csv -o cmp/       # one score file each
  humanclap compare prompts.csv --model runs/wsce_mae --audio-root gen/ -o cmp/
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="rank TTA systems on shared prompts (CIs, paired tests, tiers)",
        description="Compare systems by CLAPScore on the same prompts: means with bootstrap CIs, "
        "paired bootstrap tests (Holm-corrected), win rates and a tiered ranking.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="score files (.csv/.jsonl), or manifests with --model")
    p.add_argument(
        "-o",
        "--output-dir",
        required=True,
        metavar="D",
        help="folder for the outputs: new, empty, or an earlier compare run's (replaced only with --overwrite)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier compare run in --output-dir (only the files it wrote)",
    )
    p.add_argument(
        "--model",
        metavar="M",
        help="score the INPUT manifests with this model first (hub id, folder, "
        "msclap-2023, ...); without it INPUTs are score files",
    )
    p.add_argument("--audio-root", metavar="DIR", help="with --model: folder that relative audio paths start from")
    p.add_argument(
        "--score-column",
        default="clapscore",
        help="column of the score files to compare (default clapscore; e.g. cosine)",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=10_000,
        help="bootstrap resamples (default 10000: the smallest p is 2/(n+1), and Holm "
        "multiplies it by up to the number of pairs; 0 = no CIs and no p)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0; recorded)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level for the tiers (default 0.05)")
    p.add_argument(
        "--intersect",
        action="store_true",
        help="compare on the prompts every system has (default: refuse when they differ)",
    )
    p.add_argument(
        "--drop-failed", action="store_true", help="leave out the prompts of failed rows for every system (exit 1)"
    )
    p.add_argument(
        "--average-duplicates",
        action="store_true",
        help="average several rows of one system and prompt (default: refuse)",
    )
    flags.add_plots(p, help="write forest.png and win_rates.png (default on; --no-plots skips matplotlib)")
    flags.add_batch_size(p)
    flags.add_device(p)
    flags.add_dtype(p)
    flags.add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.compare_report import summary_text

    # lazy: keeps numpy, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.evaluation.compare_workflow import run_compare

    if args.model:
        check_audio_root(args.audio_root)
        flags.check_compute(args.device, args.dtype)
    result_run = run_compare(
        args.inputs,
        args.output_dir,
        model=args.model,
        audio_root=args.audio_root,
        score_column=args.score_column,
        n_boot=args.n_boot,
        seed=args.seed,
        alpha=args.alpha,
        intersect=args.intersect,
        drop_failed=args.drop_failed,
        average_duplicates=args.average_duplicates,
        plots=args.plots,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        progress=args.progress,
    )
    result = result_run.result
    print(summary_text(result))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {', '.join(result_run.files)} to {result_run.output_dir}", file=sys.stderr)
    return 1 if result.n_failed else 0
