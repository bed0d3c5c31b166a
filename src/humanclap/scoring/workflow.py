"""The ``score`` command as one library call: check, load, score (one part or all), merge.

``humanclap score`` is a thin shell around :func:`run_score` (as ``evaluate`` is around
:func:`~humanclap.evaluation.workflow.run_evaluation`); scripts call it the same way. The
cheap checks run first (flags, the manifest, the output, the cache folder) so that a typo
fails before a model is loaded. The manifest is scanned (columns, rows, fingerprint) once
and handed to the job.

Which rows this process scores: all of them; part K of N with ``shard`` (an independent job,
e.g. a SLURM array task, joined later by ``humanclap merge``); or, under ``torchrun``, the
rank's part, after which rank 0 merges the parts into ``output``.

>>> run = run_score("prompts.csv", "scores.csv", model="laion/clap-htsat-unfused")  # doctest: +SKIP
>>> run.summary.mean_ci(), run.exit_code                                           # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from humanclap.defaults import DEFAULT_MODEL
from humanclap.errors import HumanclapError, UsageError
from humanclap.io import check_audio_root, resolve_path
from humanclap.scoring.cache import check_cache_folder
from humanclap.scoring.decode import default_workers
from humanclap.scoring.device import check_dtype, resolve_device
from humanclap.scoring.distributed import (
    all_reduce_sum,
    barrier,
    env_info,
    init_distributed,
    launched_distributed,
    rank_device,
    shutdown_distributed,
)
from humanclap.scoring.inputs import check_batch_size, check_workers
from humanclap.scoring.job import ScoreJob
from humanclap.scoring.loader import load_scorer
from humanclap.scoring.output_guard import check_output, check_resume, meta_path
from humanclap.scoring.parts import merge_parts, parse_shard, part_path
from humanclap.scoring.rows import output_format, row_problem, scan_manifest
from humanclap.scoring.summary import ScoreSummary

# Ranks finish their parts at different times: the barrier waits as long as a part can take.
MERGE_WAIT_S = 24 * 3600


@dataclass
class ScoreRun:
    """What :func:`run_score` did.

    ``summary``: the rows of this run (the whole output on rank 0 after a torchrun merge; the
    rank's part on the other ranks); ``written``: the file this process wrote (``output``,
    or its part file); ``part``: ``(K, N)`` when the rows were split; ``rank``: the torchrun
    rank (None without torchrun); ``failed``: rows that failed in the whole run (every rank's
    under torchrun)."""

    summary: ScoreSummary
    output: Path | None
    written: Path | None
    part: tuple[int, int] | None = None
    rank: int | None = None
    failed: int = 0

    @property
    def exit_code(self) -> int:
        """0 every row scored, 1 some rows failed (the others are written)."""
        return 1 if self.failed else 0


def run_score(
    manifest: str | Path,
    output: str | Path | None = None,
    *,
    model: str = DEFAULT_MODEL,
    msclap_version: str | None = None,
    audio_root: str | Path | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "fp32",
    cache: str | Path | None = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    progress: bool | None = None,
) -> ScoreRun:
    """Score every row of ``manifest`` with ``model`` into ``output`` (CSV/JSONL by its
    extension; JSONL on stdout when None) and ``OUT.meta.json``.

    ``shard``: ``"K/N"`` or ``(K, N)``: score only part K of N into ``OUT.part-K-of-N.EXT``.
    Under torchrun every rank scores its part and rank 0 joins them into ``output``.
    ``workers``: decoder processes (None: :func:`~humanclap.scoring.decode.default_workers`).
    Raises ``UsageError`` (exit 2) for bad arguments, input or output, ``ModelLoadError`` for
    a model that cannot be loaded; rows that cannot be scored get an error and count in
    ``ScoreRun.failed``."""
    # The cheap checks first: a bad manifest, flag or output fails before a model is loaded
    # (the job checks the output again under its lock, and the model against OUT.meta.json).
    check_batch_size(batch_size)
    check_audio_root(audio_root)
    if workers is not None:
        check_workers(workers)
    scan = scan_manifest(manifest)  # streamed: a manifest of millions of rows is never held
    output_format(output)
    if resume and not output:
        raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
    # Which part this process scores: a shard, a torchrun rank, or all rows.
    part = (parse_shard(shard) if isinstance(shard, str) else tuple(shard)) if shard else None
    ranks = launched_distributed()
    if ranks and part:
        raise UsageError(
            "--shard K/N and torchrun both split the rows: under torchrun the ranks are the parts; drop --shard"
        )
    if ranks:
        info = env_info()
        part = (info.rank, info.world_size)
        device = rank_device(device)
    if part and not output:
        raise UsageError(
            "scoring in parts needs -o OUT: each part is written to OUT.part-K-of-N "
            "and joined into OUT; standard output cannot be split"
        )
    target = part_path(output, *part) if part else output
    root = audio_root or Path(manifest).resolve().parent
    # Under torchrun rank 0 replaces OUT by the merged parts: OUT follows the same rules.
    for path in dict.fromkeys([target, *([output] if ranks else [])]):
        check_output(
            path,
            manifest,
            resume,
            overwrite,
            (None if row_problem(r) else str(resolve_path(r["audio"], root)) for r in scan.iter_rows()),
        )
        if resume:
            check_resume(Path(path), scan.columns, scan.fingerprint, audio_root=root)
    check_dtype(dtype, resolve_device(device))
    if cache:
        if output:
            check_cache_apart(cache, [target, output])
        check_cache_folder(cache)

    scorer = load_scorer(model, device=device, dtype=dtype, msclap_version=msclap_version)
    workers = default_workers(str(scorer.device)) if workers is None else workers
    job = ScoreJob(scorer, batch_size=batch_size, cache_dir=None if cache is None else str(cache), workers=workers)
    summary = job.run(
        manifest,
        target,
        audio_root=audio_root,
        resume=resume,
        progress=progress,
        overwrite=overwrite,
        part=part,
        scan=scan,
    )
    out = None if output is None else Path(output)
    written = None if target is None else Path(target)
    if ranks:
        return merge_ranks(out, written, summary, scorer.device)
    return ScoreRun(summary, out, written, part=part, failed=summary.failed)


def check_cache_apart(cache: str | Path, outputs: list) -> None:
    """``--cache`` is a folder the run creates; refuse it where an output file goes (checked
    before anything is created: the cache folder would otherwise take the output's name)."""
    folder = Path(cache).expanduser().resolve()
    for out in outputs:
        for path in (Path(out), meta_path(Path(out))):
            if path.resolve() == folder:
                raise UsageError(
                    f"--cache {cache} is the output file {path}: the cache is a folder of "
                    "its own; pass another --cache (e.g. ~/.cache/humanclap)"
                )


def merge_ranks(output: Path, written: Path, summary: ScoreSummary, device) -> ScoreRun:
    """After every rank wrote its part: rank 0 joins them into ``output``; every rank learns
    how many rows failed in the whole run (torch.distributed only for these barriers and the
    sum). Rank 0's run has the merged summary; a failed merge is raised on rank 0."""
    info = init_distributed(device, timeout_s=MERGE_WAIT_S)
    error, result = None, summary
    try:
        # A collective: it is also the barrier that every part is complete on disk.
        failed = all_reduce_sum([summary.failed], info)[0]
        if info.is_main:
            parts = [part_path(output, k, info.world_size) for k in range(info.world_size)]
            try:
                result = merge_parts(output, parts, overwrite=True)  # OUT checked before scoring
                result.seconds, result.device = summary.seconds, summary.device
            except HumanclapError as exc:
                error = exc
        # The others wait for the merge: torchrun stops every rank once one exits non-zero
        # (exit 1 = rows failed), which must not cut rank 0's merge short.
        barrier(info)
    finally:
        shutdown_distributed()
    if error is not None:
        raise error
    return ScoreRun(result, output, written, part=(info.rank, info.world_size), rank=info.rank, failed=failed)
