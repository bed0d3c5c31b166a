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
        "score", help="score audio clips against texts (CLAPScore)",
        description="Score each (audio, text) row of MANIFEST with a human-aligned CLAPScore.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from humanclap.defaults import DEFAULT_MODEL

    p.add_argument("manifest", help=".csv or .jsonl with columns audio (path) and text; other columns pass through")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="hub id or local checkpoint folder (every transformers CLAP), msclap-2023, "
                        f"msclap-2022, or a local msclap .pth (default: {DEFAULT_MODEL})")
    p.add_argument("--msclap-version", choices=("2022", "2023"),
                   help="release of an msclap .pth given as --model (default: read from its keys)")
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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoder processes (decode + resample + features) feeding the model in "
                   "order; 0 decodes in the main process (a background thread on a GPU, in turn with "
                   "the model on a CPU, whose forwards use every core). "
                   "Default: on a GPU min(4, cores-1), on a CPU 0 up to 4 cores, else cores/4 (at "
                   "most 4). Allowed: up to 4 per core (at least 8). A worker that dies (a codec crash, the OOM "
                   "killer) is replaced and its file decoded again; a file that kills its worker "
                   "3 times gets an error row; the others score")
    flags.add_progress(p, help="progress bar (default: on when stderr is a terminal)")
    p.add_argument("--shard", metavar="K/N",
                   help="score only part K (from 0) of N contiguous blocks of rows into "
                        "OUT.part-K-of-N.EXT; join the parts with `humanclap merge OUT`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from humanclap.errors import UsageError
    from humanclap.io import resolve_path
    from humanclap.scoring.cache import check_cache_folder
    from humanclap.scoring.decode import check_workers
    from humanclap.scoring.output_guard import check_output, check_resume
    from humanclap.scoring.rows import output_format, row_problem, scan_manifest

    # The cheap checks first: a bad manifest, flag or output fails before a model is loaded
    # (the job repeats them, and checks the model against OUT.meta.json, once it is loaded).
    from humanclap.scoring.distributed import env_info, launched_distributed, rank_device
    from humanclap.scoring.parts import parse_shard, part_path

    flags.check_batch_size(args.batch_size)
    flags.check_audio_root(args.audio_root)
    check_workers(args.workers)
    scan = scan_manifest(args.manifest)  # streamed: a manifest of millions of rows is never held
    output_format(args.output)
    if args.resume and not args.output:
        raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
    # Which part this process scores: a --shard, a torchrun rank, or all rows.
    part = parse_shard(args.shard) if args.shard else None
    ranks = launched_distributed()
    if ranks and part:
        raise UsageError("--shard K/N and torchrun both split the rows: under torchrun the ranks "
                         "are the parts; drop --shard")
    if ranks:
        info = env_info()
        part = (info.rank, info.world_size)
        args.device = rank_device(args.device)
    if part and not args.output:
        raise UsageError("scoring in parts needs -o OUT: each part is written to OUT.part-K-of-N "
                         "and joined into OUT; standard output cannot be split")
    target = part_path(args.output, *part) if part else args.output
    root = args.audio_root or Path(args.manifest).resolve().parent
    # Under torchrun rank 0 replaces OUT by the merged parts: OUT follows the same rules.
    for path in dict.fromkeys([target, *([args.output] if ranks else [])]):
        check_output(path, args.manifest, args.resume, args.overwrite,
                     (None if row_problem(r) else str(resolve_path(r["audio"], root))
                      for r in scan.iter_rows()))
        if args.resume:
            check_resume(Path(path), scan.columns, scan.fingerprint, audio_root=root)
    flags.check_compute(args.device, args.dtype)
    if args.cache:
        if args.output:
            check_cache_apart(args.cache, [target, args.output])
        check_cache_folder(args.cache)
    from humanclap.scoring.decode import default_workers
    from humanclap.scoring.job import ScoreJob
    from humanclap.scoring.loader import load_scorer
    from humanclap.scoring.scorer import quiet_transformers

    quiet_transformers()
    scorer = load_scorer(args.model, device=args.device, dtype=args.dtype, msclap_version=args.msclap_version)
    workers = default_workers(str(scorer.device)) if args.workers is None else args.workers
    summary = ScoreJob(scorer, batch_size=args.batch_size, cache_dir=args.cache, workers=workers).run(
        args.manifest, target, audio_root=args.audio_root, resume=args.resume,
        progress=args.progress, overwrite=args.overwrite, part=part)
    if ranks:
        return merge_ranks(args.output, summary, scorer.device)
    print(summary.text(), file=sys.stderr)
    if part:
        print(f"wrote part {part[0]} of {part[1]}: {target}; when every part is done: "
              f"humanclap merge {args.output}", file=sys.stderr)
    return 1 if summary.failed else 0


def check_cache_apart(cache: str, outputs: list) -> None:
    """``--cache`` is a folder the run creates; refuse it where an output file goes (checked
    before anything is created: the cache folder would otherwise take the output's name)."""
    from pathlib import Path

    from humanclap.errors import UsageError
    from humanclap.scoring.output_guard import meta_path

    folder = Path(cache).expanduser().resolve()
    for out in outputs:
        for path in (Path(out), meta_path(Path(out))):
            if path.resolve() == folder:
                raise UsageError(f"--cache {cache} is the output file {path}: the cache is a folder of "
                                 "its own; pass another --cache (e.g. ~/.cache/humanclap)")


def merge_ranks(output: str, summary, device) -> int:
    """After every rank wrote its part: rank 0 joins them into OUT; every rank returns the
    exit code of the whole run (torch.distributed only for these barriers and the sum)."""
    from humanclap.errors import HumanclapError
    from humanclap.scoring.distributed import (all_reduce_sum, barrier, init_distributed,
                                               shutdown_distributed)
    from humanclap.scoring.parts import merge_parts, part_path

    # Ranks finish their parts at different times: the barrier waits as long as a part can take.
    info = init_distributed(device, timeout_s=24 * 3600)
    error = None
    try:
        # A collective: it is also the barrier that every part is complete on disk.
        failed = all_reduce_sum([summary.failed], info)[0]
        if info.is_main:
            parts = [part_path(output, k, info.world_size) for k in range(info.world_size)]
            try:
                merged = merge_parts(output, parts, overwrite=True)  # OUT checked before scoring
                merged.seconds, merged.device = summary.seconds, summary.device
                print(merged.text(), file=sys.stderr)
            except HumanclapError as exc:
                error = exc
        else:
            print("\n".join(f"rank {info.rank}: {line}" for line in summary.text().splitlines()),
                  file=sys.stderr)
        # The others wait for the merge: torchrun stops every rank once one exits non-zero
        # (exit 1 = rows failed), which must not cut rank 0's merge short.
        barrier(info)
    finally:
        shutdown_distributed()
    if error is not None:
        raise error
    return 1 if failed else 0
