"""``humanclap score``: CLAPScore for every row of a CSV/JSONL manifest."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags

from humanclap.defaults import MAX_BATCH_SIZE

EPILOG = f"""\
output: every input column plus clapscore (= max(cosine, 0)), cosine and error
(empty when the row scored), one row per input row, in input order. A row that
cannot be scored (missing or corrupt file, empty text, a JSONL row without a
string audio/text, a NaN/inf embedding) gets an error; the others go on. Every
number written is finite. OUT.meta.json beside OUT records the model (revision,
dtype, preprocessing) and a fingerprint of the manifest (columns and rows).

output safety: -o is never the manifest or one of its audio files (under any
name: symlink, hard link); an existing non-empty OUT is refused unless you pass
--overwrite (replace it) or --resume (keep its rows).

resume: --resume keeps the complete rows already in OUT (a record cut mid-write
is dropped) and scores the rest; the result is byte-identical to an
uninterrupted run. It is refused (exit 2) when OUT.meta.json is missing or not
valid, or when the model, dtype, preprocessing, the manifest's columns or its
rows differ from those recorded; then rerun with --overwrite. After a failed
write (e.g. a full disk) the rows written so far are kept: free space and rerun
with --resume.

exit codes: 0 every row scored; 1 some rows failed (the others are scored and
written); 2 usage error or bad input (bad flags, unreadable manifest, missing
columns, model that cannot be loaded, an output that would overwrite an input
or an existing file, a resume that does not match, a failed write);
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
    flags.add_batch_size(p, help="rows prepared and written per step (default 8, at most "
                         f"{MAX_BATCH_SIZE}); scores do not depend on it")
    flags.add_device(p)
    flags.add_dtype(p, help="compute precision; bf16/fp16 are faster on GPUs that support them (default fp32)")
    p.add_argument("--cache", metavar="DIR", help="keep embeddings in DIR, keyed by model revision, "
                   "preprocessing and file content; re-scoring the same files is then nearly free")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in -o OUT and score the rest (see resume below)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty -o OUT (without it, such a file is refused)")
    flags.add_progress(p, help="progress bar (default: on when stderr is a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from humanclap.errors import UsageError
    from humanclap.io import resolve_path, table_digest
    from humanclap.scoring.cache import check_cache_folder
    from humanclap.scoring.output_guard import check_output, check_resume
    from humanclap.scoring.rows import output_format, read_manifest, row_problem

    # The cheap checks first: a bad manifest, flag or output fails before a model is loaded
    # (the job repeats them, and checks the model against OUT.meta.json, once it is loaded).
    flags.check_batch_size(args.batch_size)
    flags.check_audio_root(args.audio_root)
    rows, columns = read_manifest(args.manifest)
    output_format(args.output)
    if args.resume and not args.output:
        raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
    root = args.audio_root or Path(args.manifest).resolve().parent
    check_output(args.output, args.manifest, args.resume, args.overwrite,
                 [None if row_problem(r) else str(resolve_path(r["audio"], root)) for r in rows])
    if args.resume:
        check_resume(Path(args.output), columns, table_digest(columns, rows))
    flags.check_compute(args.device, args.dtype)
    if args.cache:
        check_cache_folder(args.cache)
    from humanclap.scoring.job import ScoreJob
    from humanclap.scoring.loader import load_scorer
    from humanclap.scoring.scorer import quiet_transformers

    quiet_transformers()
    scorer = load_scorer(args.model, device=args.device, dtype=args.dtype)
    summary = ScoreJob(scorer, batch_size=args.batch_size, cache_dir=args.cache).run(
        args.manifest, args.output, audio_root=args.audio_root, resume=args.resume,
        progress=args.progress, overwrite=args.overwrite)
    print(summary.text(), file=sys.stderr)
    return 1 if summary.failed else 0
