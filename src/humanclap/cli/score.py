"""``humanclap score``: CLAPScore for every row of a CSV/JSONL manifest."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
output: every input column plus clapscore (= max(cosine, 0)), cosine and error
(empty when the row scored), one row per input row, in input order.
exit codes: 0 every row scored; 1 some rows failed (the others are scored and
written); 2 usage error (bad flags, unreadable manifest, missing columns, model
that cannot be loaded).

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
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default 8); scores do not depend on it")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="compute precision; bf16/fp16 are faster on GPUs that support them (default fp32)")
    p.add_argument("--cache", metavar="DIR", help="keep embeddings in DIR, keyed by model revision, "
                   "preprocessing and file content; re-scoring the same files is then nearly free")
    p.add_argument("--resume", action="store_true", help="keep the rows already in -o OUT and score the rest")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humanclap.scoring.rows import UsageError, output_format, read_manifest

    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:  # check the cheap things before loading a model
        read_manifest(args.manifest)
        output_format(args.output)
        if args.resume and not args.output:
            raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from humanclap.scoring.scorer import CLAPScorer, ModelLoadError, quiet_transformers

    quiet_transformers()
    from humanclap.scoring.job import ScoreJob

    try:
        scorer = CLAPScorer.from_pretrained(args.model, device=args.device, dtype=args.dtype)
        summary = ScoreJob(scorer, batch_size=args.batch_size, cache_dir=args.cache).run(
            args.manifest, args.output, audio_root=args.audio_root, resume=args.resume,
            progress=args.progress)
    except (UsageError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.text(), file=sys.stderr)
    return 1 if summary.failed else 0
