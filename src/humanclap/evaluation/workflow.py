"""The ``evaluate`` workflow as one library call: check, load, select, score, report.

``humanclap evaluate`` is a thin shell around :func:`run_evaluation`; scripts can call it
the same way. The cheap checks run first (flags, model paths, the dataset, the output
folder) so that a typo fails in a second, before any model is loaded or audio decoded.

>>> run = run_evaluation("relate:/data/RELATE", "out/", ["laion/clap-htsat-unfused"])  # doctest: +SKIP
>>> run.result.metrics["clap-htsat-unfused"]["overall"]["srcc"]                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from humanclap.data import load_rated
from humanclap.defaults import DEFAULT_MODEL
from humanclap.errors import DatasetError, UsageError
from humanclap.evaluation.evaluate import (
    EvaluationResult,
    check_labels,
    check_model_spec,
    evaluate_models,
    select_split,
)
from humanclap.evaluation.metrics import check_count, check_n_boot
from humanclap.evaluation.report import write_report
from humanclap.evaluation.stack_eval import plan_stacks
from humanclap.outputs import RunFolder, check_folder, claim_folder
from humanclap.scoring.inputs import check_batch_size, label_list, model_list


@dataclass
class EvaluationRun:
    """What :func:`run_evaluation` did: the result and the files it wrote (name -> path)."""

    result: EvaluationResult
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    rank: int = 0  # under torchrun: this process's rank; only rank 0 writes the files

    @property
    def n_failed(self) -> int:
        """Pairs left out of the metrics (missing/unreadable audio, empty text)."""
        return self.result.n_failed


# The files write_report puts in the output folder (besides the PNG plots).
OUTPUT_FILES = ("predictions.csv", "metrics.json", "report.md")


def check_output_spares_input(data: str, output_dir: Path) -> None:
    """Refuse an output folder where a written file would replace the manifest being read
    (``--data out/predictions.csv -o out``): a metric tool never touches its input."""
    path = Path(data).expanduser()
    if not path.is_file():  # relate:DIR / xacle:DIR, or a missing file (reported later)
        return
    target = path.resolve()
    # Only these can collide: a manifest is a .csv/.jsonl/.json table, never a PNG plot.
    if any((output_dir / name).resolve() == target for name in OUTPUT_FILES):
        raise UsageError(
            f"--output-dir {output_dir} would overwrite the input {data} (evaluate "
            f"writes {', '.join(OUTPUT_FILES)} and PNG plots there); choose "
            "another --output-dir"
        )


def run_evaluation(
    data: str,
    output_dir: str | Path,
    models: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    split: str | None = None,
    audio_root: str | None = None,
    score_scale: str = "auto",
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "fp32",
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
    progress: bool | None = None,
    overwrite: bool = False,
) -> EvaluationRun:
    """Score the pairs of dataset spec ``data`` with each of ``models`` (default
    ``DEFAULT_MODEL``) and write predictions.csv, metrics.json, report.md and the plots to
    ``output_dir``.

    ``output_dir`` must be new, empty or hold an earlier evaluate run, which is replaced only
    with ``overwrite`` (the output contract, :mod:`humanclap.outputs`).

    ``split`` picks the pairs (default "test" when the data has it, else all; "all" keeps
    every pair). Raises ``UsageError`` for bad arguments, ``ModelLoadError`` for a model
    that cannot be loaded and ``DatasetError`` for data that cannot be read; pairs whose
    audio cannot be used are kept with an error (``EvaluationRun.n_failed``), not raised.
    """
    models = model_list(models) if models is not None else [DEFAULT_MODEL]
    models = models or [DEFAULT_MODEL]
    labels = label_list(labels) if labels is not None else None
    if labels and len(labels) != len(models):
        raise UsageError(f"{len(labels)} --label for {len(models)} --model: give one label per model")
    check_batch_size(batch_size)  # the score job's rule: 1 to MAX_BATCH_SIZE rows per step
    if labels:
        check_labels(labels)
    check_n_boot(n_boot), check_count(seed, "seed", None)  # bools, floats: not counts
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    # A `humanclap stack` folder stands for its members plus their combined run.
    stacks = plan_stacks(models, labels)
    models, labels = stacks.models, stacks.labels
    for model in models:  # a mistyped local path fails before any model is loaded
        check_model_spec(model)
    pairs = load_rated(data, audio_root=audio_root, score_scale=score_scale)
    pairs, split = select_split(pairs, split)
    stacks.check_pairs(pairs.pairs["pair_id"])
    out = Path(output_dir)
    check_output_spares_input(data, out)
    check_evaluate_folder(out, overwrite)
    if len(pairs) == 0:
        raise DatasetError(f"{data}: no pairs in split {split!r}; pick another --split")
    # lazy: keeps torch out of `import humanclap.evaluation.workflow`
    from humanclap.scoring.distributed import env_info

    with ExitStack() as stack:
        # The output contract: rank 0 (the one that writes) claims and locks the folder for
        # the whole run; --overwrite deletes only what an earlier evaluate run recorded there.
        run = stack.enter_context(claim_folder(out, "evaluate", overwrite=overwrite)) if env_info().is_main else None
        return _evaluate_into(
            run,
            models,
            pairs,
            split,
            out,
            labels=labels,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            n_boot=n_boot,
            seed=seed,
            data=data,
            progress=progress,
            plots=plots,
            derived=stacks.derived,
        )


def check_evaluate_folder(out: Path, overwrite: bool) -> None:
    """The output contract for ``evaluate``: ``out`` is new, empty, or holds an earlier
    evaluate run, which only ``--overwrite`` replaces. Creates nothing."""
    previous = check_folder(out, "evaluate", "--output-dir")
    if previous is not None and previous.get("files") and not overwrite:
        names = ", ".join(previous["files"][:4]) + (" ..." if len(previous["files"]) > 4 else "")
        raise UsageError(
            f"--output-dir {out} holds an earlier evaluate run ({names}); pass "
            "--overwrite to replace it (only the files that run wrote are deleted), "
            "or choose another --output-dir"
        )


def _evaluate_into(
    run: RunFolder | None,
    models: list[str],
    pairs,
    split: str,
    out: Path,
    *,
    labels,
    batch_size: int,
    device: str,
    dtype: str,
    n_boot: int,
    seed: int,
    data: str,
    progress: bool | None,
    plots: bool,
    derived=(),
) -> EvaluationRun:
    # Under torchrun every rank embeds its share of the unique texts and files (cuda:LOCAL_RANK
    # on GPUs); rank 0 alone writes the report. One process: no process group at all.
    # lazy: keeps torch out of `import humanclap.evaluation.workflow`
    from humanclap.scoring.distributed import launched_distributed

    info = None
    if launched_distributed():
        # lazy: keeps torch out of `import humanclap.evaluation.workflow`
        # lazy: keeps torch out of `import humanclap.evaluation.workflow`
        from humanclap.scoring.device import resolve_device
        from humanclap.scoring.distributed import init_distributed, rank_device

        device = rank_device(device)
        info = init_distributed(resolve_device(device))
    try:
        result = evaluate_models(
            models,
            pairs,
            labels=labels,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            n_boot=n_boot,
            seed=seed,
            data_spec=data,
            progress=progress,
            dist=info,
            derived=derived,
        )
    finally:
        if info is not None:  # the embeddings are shared: no collective after this
            # lazy: keeps torch out of `import humanclap.evaluation.workflow`
            from humanclap.scoring.distributed import shutdown_distributed

            shutdown_distributed()
    result.split = split
    if info is not None and not info.is_main:
        return EvaluationRun(result=result, output_dir=out, files={}, rank=info.rank)
    files = write_report(result, out, plots=plots, record=run.record if run is not None else None)
    return EvaluationRun(result=result, output_dir=out, files=files)
