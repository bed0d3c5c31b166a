"""``humanclap merge``: join the parts of a split score run into one output."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
Joins OUT.part-K-of-N.EXT (written by `humanclap score --shard K/N`, e.g. one per
SLURM array task) into OUT, in row order: the header once (CSV), then each part's
rows. The result is byte-identical to scoring the manifest in one process. OUT is
written atomically, then OUT.meta.json with the summary over all rows (so that
`humanclap score ... --resume` recognises OUT). The parts are kept.

refused (exit 2, nothing written): a missing part (each is named), a part scored
from another manifest or with another model/dtype/preprocessing, an incomplete
part (fewer rows than its block: finish it with --resume), overlapping parts,
parts of several splits found by name (pass --parts), an existing non-empty OUT
without --overwrite.

exit codes: 0 merged, every row scored; 1 merged, some rows carry an
error; 2 usage error or bad input (refused, see above; nothing written);
{flags.EXIT_CODES_TAIL}.

example:
  humanclap merge scores.csv
  humanclap merge scores.csv --parts scores.part-0-of-2.csv scores.part-1-of-2.csv
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="join the parts of a split score run (--shard K/N) into one output",
        description="Join OUT.part-K-of-N files into the one row-aligned OUT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("output", metavar="OUT", help="the output the parts belong to (.csv or .jsonl)")
    p.add_argument(
        "--parts", nargs="+", metavar="P", help="the part files (default: every OUT.part-K-of-N file beside OUT)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, scipy, soundfile, soxr out of `humanclap --help`
    from humanclap.scoring.parts import merge_parts

    summary = merge_parts(args.output, args.parts, overwrite=args.overwrite)
    print(summary.text(ran=False), file=sys.stderr)
    print(f"merged into {args.output}", file=sys.stderr)
    return 1 if summary.failed else 0
