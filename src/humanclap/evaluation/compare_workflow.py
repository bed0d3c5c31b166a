"""``humanclap compare`` as one library call: check, (score), compare, write.

The output folder follows the output contract (:mod:`humanclap.outputs`): new, empty, or an
earlier compare run, replaced only with ``overwrite``; locked while the run writes; each
file recorded in the marker before it is written. With ``model`` the manifests are scored
by the score job (:class:`~humanclap.scoring.job.ScoreJob`) into the folder first
(``scores.csv``, or ``scores-K.csv`` for input K of several), then compared as score files.

>>> run = run_compare(["a.csv", "b.csv"], "cmp/")                      # doctest: +SKIP
>>> run.result.metric.tiers                                            # doctest: +SKIP
[['a'], ['b']]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from humanclap.errors import UsageError
from humanclap.evaluation.compare import CompareResult, RowsFailedError, compare_tables
from humanclap.evaluation.compare_report import write_compare
from humanclap.evaluation.metrics import check_n_boot
from humanclap.io import iter_rows, table_format
from humanclap.outputs import check_folder, claim_folder
from humanclap.scoring.inputs import check_batch_size
from humanclap.scoring.job import ScoreJob
from humanclap.scoring.loader import load_scorer
from humanclap.scoring.rows import scan_manifest


@dataclass
class CompareRun:
    """What :func:`run_compare` did: the result and the files written (name -> path)."""

    result: CompareResult
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    scored: list[Path] = field(default_factory=list)


def check_compare_folder(out: Path, overwrite: bool, inputs: Sequence[str | Path]) -> None:
    """``out`` is new, empty, or an earlier compare run (replaced only with ``overwrite``),
    and holds none of the inputs (``--overwrite`` would delete what it wrote there)."""
    root = out.expanduser().resolve()
    for path in inputs:
        p = Path(path).expanduser().resolve()
        if p == root or root in p.parents:
            raise UsageError(
                f"input {path} lies in the output folder {out}; choose another "
                "--output-dir (compare never writes where its input is)"
            )
    previous = check_folder(out, "compare", "--output-dir")
    if previous is not None and previous.get("files") and not overwrite:
        names = ", ".join(previous["files"][:4]) + (" ..." if len(previous["files"]) > 4 else "")
        raise UsageError(
            f"--output-dir {out} holds an earlier compare run ({names}); pass "
            "--overwrite to replace it (only the files that run wrote are deleted), "
            "or choose another --output-dir"
        )


def score_inputs(
    run_folder,
    inputs: Sequence[str | Path],
    model: str,
    *,
    audio_root: str | None,
    batch_size: int,
    device: str,
    dtype: str,
    progress: bool | None,
) -> list[Path]:
    """Score each manifest with ``model`` into the run folder (one score file each)."""

    scorer = load_scorer(model, device=device, dtype=dtype)
    job = ScoreJob(scorer, batch_size=batch_size)
    outs = []
    for k, manifest in enumerate(inputs):
        name = "scores.csv" if len(inputs) == 1 else f"scores-{k + 1}.csv"
        out = run_folder.folder / name
        run_folder.record(name, name + ".meta.json")
        job.run(manifest, out, audio_root=audio_root, progress=progress)
        outs.append(out)
    return outs


def check_manifests(inputs: Sequence[str | Path]) -> None:
    """Before a model loads: every manifest is readable, has audio and text, and no
    clapscore (a score file is compared as it is, without --model)."""

    for path in inputs:
        columns: list[str] = []
        if Path(path).is_file():  # the first row tells (scan_manifest names other problems)
            next(iter_rows(Path(path), table_format(path), columns), None)
        if "clapscore" in columns:
            raise UsageError(
                f"{path} already has a clapscore column (a score file): drop --model "
                "to compare its scores, or pass the manifest it was scored from"
            )
        scan_manifest(path)


def run_compare(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    model: str | None = None,
    audio_root: str | None = None,
    score_column: str = "clapscore",
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    intersect: bool = False,
    drop_failed: bool = False,
    average_duplicates: bool = False,
    plots: bool = True,
    overwrite: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "fp32",
    progress: bool | None = None,
) -> CompareRun:
    """Compare the systems of ``inputs`` (score files, or manifests scored with ``model``)
    and write compare.json, compare.csv, pairs.csv, report.md and the plots into
    ``output_dir``. Raises ``UsageError`` (exit 2) for bad input and ``RowsFailedError``
    (exit 1) for failed rows without ``drop_failed``; see :mod:`humanclap.evaluation.compare`."""
    if not inputs:
        raise UsageError("no input: pass one or more score files (or manifests with --model)")
    check_n_boot(n_boot)
    if model is not None:
        check_batch_size(batch_size)
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1 (e.g. 0.05); got {alpha}")
    if model is not None and score_column != "clapscore":
        raise UsageError("--score-column picks a column of score files; with --model the score is clapscore")
    out = Path(output_dir)
    check_compare_folder(out, overwrite, inputs)
    options = dict(
        score_column=score_column,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        drop_failed=drop_failed,
        average_duplicates=average_duplicates,
        intersect=intersect,
    )
    if model is None:  # everything is computed before the folder is touched
        result = compare_tables(inputs, **options)
        with claim_folder(out, "compare", overwrite=overwrite) as run:
            files = write_compare(result, out, plots=plots, record=run.record)
        return CompareRun(result, out, files)
    check_manifests(inputs)
    with claim_folder(out, "compare", overwrite=overwrite) as run:
        scored = score_inputs(
            run,
            inputs,
            model,
            audio_root=audio_root,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            progress=progress,
        )
        # A manifest without a system column names its system after its own file, not after
        # the score file written here.
        try:
            result = compare_tables(scored, default_systems=[Path(p).stem for p in inputs], **options)
        except RowsFailedError as exc:
            raise RowsFailedError(
                f"{exc} (the scores are kept in {out}: {', '.join(p.name for p in scored)})"
            ) from None
        result.model = model
        result.inputs = [{**info, "manifest": str(src)} for info, src in zip(result.inputs, inputs)]
        files = write_compare(result, out, plots=plots, record=run.record)
    return CompareRun(result, out, files, scored)
