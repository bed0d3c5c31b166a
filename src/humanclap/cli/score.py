"""``humanclap score``: CLAPScore for every row of a CSV/JSONL manifest."""

from __future__ import annotations

import argparse
import sys

from humanclap.cli import flags
from humanclap.defaults import DEFAULT_MODEL, MAX_BATCH_SIZE

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

scale: the manifest is streamed and embeddings are kept only for the rows in
flight (a text or file seen again much later is looked up in --cache, or
embedded again: same number), so memory does not grow with the number of rows.
--workers N decodes audio in N processes (at most 4 per core, at least 8); a
worker that dies (a codec crash, SIGKILL from the OOM killer) is replaced and
its file decoded again; a file that kills its worker 3 times gets an error row.

exit codes: 0 every row scored; 1 some rows failed (the others are scored and
written); 2 usage error or bad input (bad flags, unreadable manifest, missing
columns, model that cannot be loaded, an output that would overwrite an input
or an existing file, a resume that does not match, a failed write);
{flags.EXIT_CODES_TAIL}.

many processes: under torchrun (--nproc-per-node N, one node or several) the
same command splits the rows into contiguous blocks, one per rank (device
cuda:LOCAL_RANK with --device auto/cuda); each rank writes OUT.part-K-of-N.csv
(and its .meta.json; --resume continues each part), and rank 0 merges the parts
into OUT, byte-identical to a one-process run. --shard K/N (e.g. a SLURM array:
--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) writes part K only; join
the parts with `humanclap merge OUT`.

example:
  humanclap score prompts.csv -o scores.csv --audio-root generated/
  torchrun --standalone --nproc-per-node 4 -m humanclap.cli score prompts.csv -o scores.csv
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score audio clips against texts (CLAPScore)",
        description="Score each (audio, text) row of MANIFEST with a human-aligned CLAPScore.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", help=".csv or .jsonl with columns audio (path) and text; other columns pass through")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="hub id or local checkpoint folder (every transformers CLAP), msclap-2023, "
        f"msclap-2022, or a local msclap .pth (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--msclap-version",
        choices=("2022", "2023"),
        help="release of an msclap .pth given as --model (default: read from its keys)",
    )
    p.add_argument("-o", "--output", help="output .csv or .jsonl (default: JSONL on stdout)")
    p.add_argument("--audio-root", help="folder that relative audio paths start from (default: the manifest's folder)")
    flags.add_batch_size(
        p, help=f"rows prepared and written per step (default 8, at most {MAX_BATCH_SIZE}); scores do not depend on it"
    )
    flags.add_device(p)
    flags.add_dtype(p, help="compute precision; bf16/fp16 are faster on GPUs that support them (default fp32)")
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="keep embeddings in DIR, keyed by model revision, "
        "preprocessing and file content; re-scoring the same files is then nearly free",
    )
    p.add_argument(
        "--resume", action="store_true", help="keep the rows already in -o OUT and score the rest (see resume below)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing non-empty -o OUT (without it, such a file is refused)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="decoder processes (decode + resample + features) feeding the model in "
        "order; 0 decodes in the main process (a background thread on a GPU, in turn with "
        "the model on a CPU, whose forwards use every core). "
        "Default: on a GPU min(4, cores-1), on a CPU 0 up to 4 cores, else cores/4 (at "
        "most 4). Allowed: up to 4 per core (at least 8). A worker that dies (a codec crash, the OOM "
        "killer) is replaced and its file decoded again; a file that kills its worker "
        "3 times gets an error row; the others score",
    )
    flags.add_progress(p, help="progress bar (default: on when stderr is a terminal)")
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="score only part K (from 0) of N contiguous blocks of rows into "
        "OUT.part-K-of-N.EXT; join the parts with `humanclap merge OUT`",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps torch out of `humanclap --help`
    from humanclap.scoring.workflow import run_score  # lazy: `humanclap --help` loads no torch

    run = run_score(
        args.manifest,
        args.output,
        model=args.model,
        msclap_version=args.msclap_version,
        audio_root=args.audio_root,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        cache=args.cache,
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        shard=args.shard,
        progress=args.progress,
    )
    text = run.summary.text()
    if run.rank:  # torchrun: rank 0 prints the merged run, the others their part
        text = "\n".join(f"rank {run.rank}: {line}" for line in text.splitlines())
    print(text, file=sys.stderr)
    if run.part and run.rank is None:
        print(
            f"wrote part {run.part[0]} of {run.part[1]}: {run.written}; when every part is done: "
            f"humanclap merge {run.output}",
            file=sys.stderr,
        )
    return run.exit_code
