"""``humanclap score``: CLAPScore for every row of a CSV/JSONL manifest."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

EPILOG = f"""\
output: every input column plus clapscore (= max(cosine, 0)), cosine and error
(empty when the row scored), one row per input row, in input order.
exit codes: 0 every row scored; 1 some rows failed (the others are scored and
written); 2 usage error (bad flags, unreadable manifest, missing columns, model
that cannot be loaded);
{flags.EXIT_CODES_TAIL}.

example:
  humanclap score prompts.csv -o scores.csv --audio-root generated/
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="score audio clips against texts (CLAPScore)",
        description="Score each (audio, text) row of MANIFEST with a human-aligned CLAPScore.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from humanclap.defaults import DEFAULT_MODEL

    p.add_argument("manifest", help=".csv or .jsonl with columns audio (path) and text; other columns pass through")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id or local checkpoint folder (default: {DEFAULT_MODEL})")
    p.add_argument("-o", "--output", help="output .csv or .jsonl (default: JSONL on stdout)")
    p.add_argument("--audio-root", help="folder that relative audio paths start from (default: the manifest's folder)")
    flags.add_batch_size(p, help="clips per forward pass (default 8); scores do not depend on it")
    flags.add_device(p)
    flags.add_dtype(p, help="compute precision; bf16/fp16 are faster on GPUs that support them (default fp32)")
    p.add_argument("--cache", metavar="DIR", help="keep embeddings in DIR, keyed by model revision, "
                   "preprocessing and file content; re-scoring the same files is then nearly free")
    p.add_argument("--resume", action="store_true", help="keep the rows already in -o OUT and score the rest")
    flags.add_progress(p, help="progress bar (default: on when stderr is a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humanclap.errors import UsageError
    from humanclap.scoring.rows import output_format, read_manifest

    # The cheap checks first: a bad manifest or flag fails before a model is loaded.
    flags.check_batch_size(args.batch_size)
    read_manifest(args.manifest)
    output_format(args.output)
    if args.resume and not args.output:
        raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
    flags.check_compute(args.device, args.dtype)
    from humanclap.scoring.job import ScoreJob
    from humanclap.scoring.loader import load_scorer
    from humanclap.scoring.scorer import quiet_transformers

    quiet_transformers()
    scorer = load_scorer(args.model, device=args.device, dtype=args.dtype)
    summary = ScoreJob(scorer, batch_size=args.batch_size, cache_dir=args.cache).run(
        args.manifest, args.output, audio_root=args.audio_root, resume=args.resume,
        progress=args.progress)
    print(summary.text(), file=sys.stderr)
    return 1 if summary.failed else 0
