"""The ``compare`` workflow: which of several systems scores best on the same prompts.

Input: score files of ``humanclap score`` (``clapscore``, ``cosine``, ``error`` plus the
input columns) or manifests scored here with ``model`` (through the score job, into the
output folder). Each row is one clip of one system for one prompt:

* the **system** is the ``system`` column, or the file's stem when a file has none;
* the **prompt** is the ``prompt_id`` column when the files have one, else ``text``;
* **failed rows** (a non-empty ``error``) are refused, or with ``drop_failed`` the prompt
  is dropped from *every* system (so all systems stay on the same prompts);
* **duplicates** (one system, one prompt, several rows) are refused, or with
  ``average_duplicates`` averaged (several clips, or one row per listener);
* systems that do not all have the **same prompts** are refused, or with ``intersect``
  compared on the shared prompts only;
* a ``score`` (or ``rating``) column holds **human ratings**: every row needs one, and the
  listeners' ranking and its agreement with the metric's are added.

The statistics are :mod:`humanclap.evaluation.compare_stats`; the files
:mod:`humanclap.evaluation.compare_report`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from humanclap.errors import EXIT_ROWS_FAILED, HumanclapError, UsageError
from humanclap.evaluation.compare_stats import SystemComparison, compare_matrix, ranking_agreement
from humanclap.evaluation.metrics import check_n_boot
from humanclap.io import read_table
from humanclap.scoring.summary import recorded_protocol

RATING_COLUMNS = ("score", "rating")


class RowsFailedError(HumanclapError):
    """Rows of the input failed to score and were not dropped: nothing was compared."""

    exit_code = EXIT_ROWS_FAILED


@dataclass
class Row:
    """One clip: its system, prompt, score (None: failed), rating, and where it came from."""

    system: str
    prompt: str
    value: float | None
    rating: float | None
    where: str
    error: str = ""
    cosine: float | None = None
    index: int = 0
    record: dict[str, Any] = field(default_factory=dict)


def parse_number(value: Any) -> float | None:
    """A finite float from a table cell (CSV string or JSON number); None when empty/bad."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_scored(
    path: str | Path, score_column: str = "clapscore", what: str = "input", default_system: str | None = None
) -> tuple[list[Row], dict[str, Any]]:
    """The rows of one score file as :class:`Row`, and what was found (prompt key, system
    source, rating column). Without a ``system`` column every row's system is
    ``default_system`` (default: the file's stem). Raises :class:`UsageError` for a file
    that cannot be used."""
    table = read_table(path, what)
    cols = set(table.columns)
    name = Path(path).name
    if not table.rows:
        raise UsageError(f"{what} {path} has no rows")
    if score_column not in cols:
        hint = (
            "pass --model M to score it, or a score file of `humanclap score`"
            if {"audio", "text"} <= cols
            else "pass a score file of `humanclap score`"
        )
        raise UsageError(f"{what} {path} has no {score_column} column: {hint}")
    key = "prompt_id" if "prompt_id" in cols else "text" if "text" in cols else None
    if key is None:
        raise UsageError(
            f"{what} {path} has neither prompt_id nor text: each row needs the "
            "prompt it answers, so that systems are compared on the same prompts"
        )
    rating_col = next((c for c in RATING_COLUMNS if c in cols), None)
    system_col = "system" if "system" in cols else None
    rows = []
    for i, rec in enumerate(table.rows):
        line = f"{name} row {i + 1}"
        error = str(rec.get("error") or "")
        value = parse_number(rec.get(score_column))
        if value is None and not error:
            error = f"no number in {score_column} ({rec.get(score_column)!r})"
        rating = None
        if rating_col is not None:
            rating = parse_number(rec.get(rating_col))
            if rating is None:
                raise UsageError(
                    f"{what} {path}, {line}: {rating_col} {rec.get(rating_col)!r} is "
                    f"not a number; every row needs a rating when the column is "
                    f"there (or drop the {rating_col} column)"
                )
        system = str(rec.get("system")) if system_col else default_system or Path(path).stem
        if system_col and not system.strip():
            raise UsageError(f"{what} {path}, {line}: empty system; name the system of every row")
        prompt = rec.get(key)
        if prompt is None or str(prompt) == "":
            raise UsageError(f"{what} {path}, {line}: empty {key}; every row needs its prompt")
        rows.append(
            Row(
                system,
                str(prompt),
                None if error else value,
                rating,
                line,
                error,
                parse_number(rec.get("cosine")),
                i,
                rec,
            )
        )
    info = {
        "path": str(path),
        "rows": len(rows),
        "prompt_key": key,
        "rating_column": rating_col,
        "system": "system column" if system_col else default_system or Path(path).stem,
    }
    return rows, info


@dataclass
class SystemTable:
    """Scores as a ``(systems, prompts)`` matrix; ``ratings`` likewise, or None."""

    systems: list[str]
    prompts: list[str]
    values: np.ndarray
    ratings: np.ndarray | None
    dropped: dict[str, int]
    notes: list[str]


def _listing(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def build_table(
    rows: list[Row], *, drop_failed: bool = False, average_duplicates: bool = False, intersect: bool = False
) -> SystemTable:
    """Group rows into the ``(systems, prompts)`` matrix by the rules of the module docstring
    (systems and prompts sorted, so that row order never changes a result)."""
    notes: list[str] = []
    dropped = {"failed_rows": 0, "prompts_with_failures": 0, "prompts_not_shared": 0}
    failed = [r for r in rows if r.value is None]
    if failed:
        if not drop_failed:
            first = failed[0]
            raise RowsFailedError(
                f"{len(failed)} of {len(rows)} rows failed to score (first: {first.where}, system "
                f"{first.system!r}: {first.error}); fix them and score again, or pass "
                "--drop-failed to leave their prompts out for every system"
            )
        bad = {r.prompt for r in failed}
        dropped.update(failed_rows=len(failed), prompts_with_failures=len(bad))
        rows = [r for r in rows if r.prompt not in bad]
        notes.append(
            f"--drop-failed: {len(failed)} failed rows; their {len(bad)} prompts were left out for every system"
        )
    cells: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        cells[(r.system, r.prompt)].append(r)
    dupes = [(k, v) for k, v in cells.items() if len(v) > 1]
    if dupes and not average_duplicates:
        (system, prompt), group = dupes[0]
        raise UsageError(
            f"{len(dupes)} (system, prompt) pairs have several rows (first: system "
            f"{system!r}, prompt {prompt!r} at {', '.join(r.where for r in group[:3])}); "
            "pass --average-duplicates to average them (several clips per prompt, or "
            "one row per listener), or keep one row each"
        )
    if dupes:
        notes.append(
            f"--average-duplicates: {len(dupes)} (system, prompt) pairs had several rows; "
            "their scores (and ratings) were averaged"
        )
    systems = sorted({s for s, _ in cells})
    if len(systems) < 2:
        raise UsageError(
            f"only one system ({_listing(systems)}); compare needs at least two: add a "
            "system column, or pass one score file per system"
        )
    per_system = {s: {p for (t, p) in cells if t == s} for s in systems}
    union = set().union(*per_system.values())
    shared = set.intersection(*per_system.values())
    if shared != union:
        missing = [f"{s!r} lacks {len(union - ps)}" for s, ps in per_system.items() if union - ps]
        if not intersect:
            raise UsageError(
                f"the systems do not share the same prompts: {len(union - shared)} of "
                f"{len(union)} prompts are missing from at least one system "
                f"({'; '.join(missing[:4])}); a comparison needs the same prompts for "
                f"every system: score the missing ones, or pass --intersect to "
                f"compare on the {len(shared)} shared prompts only"
            )
        if not shared:
            raise UsageError(
                "--intersect: the systems share no prompt at all; check the prompt "
                "key (prompt_id, else text) of each file"
            )
        dropped["prompts_not_shared"] = len(union - shared)
        notes.append(
            f"--intersect: {len(union - shared)} of {len(union)} prompts are not scored "
            f"for every system and were dropped; {len(shared)} remain"
        )
    prompts = sorted(shared)
    values = np.array([[np.mean([r.value for r in cells[(s, p)]]) for p in prompts] for s in systems], dtype=np.float64)
    ratings = None
    if all(r.rating is not None for r in rows):
        ratings = np.array(
            [[np.mean([r.rating for r in cells[(s, p)]]) for p in prompts] for s in systems], dtype=np.float64
        )
    return SystemTable(systems, prompts, values, ratings, dropped, notes)


@dataclass
class CompareResult:
    """The metric's comparison, the listeners' (when rated) and their agreement."""

    table: SystemTable
    metric: SystemComparison
    listeners: SystemComparison | None = None
    agreement: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    score_column: str = "clapscore"
    model: str | None = None
    n_failed: int = 0
    # the citation lines of the models that scored the inputs (their OUT.meta.json), each once
    protocols: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self.table.notes + self.metric.notes + (self.agreement or {}).get("notes", [])


def compare_tables(
    paths: Sequence[str | Path],
    *,
    score_column: str = "clapscore",
    default_systems: Sequence[str | None] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
    drop_failed: bool = False,
    average_duplicates: bool = False,
    intersect: bool = False,
) -> CompareResult:
    """Read score files and compare their systems (see the module docstring); no files are
    written. ``default_systems[k]``: the system of file k when it has no system column.
    Raises :class:`UsageError` (exit 2) or :class:`RowsFailedError` (exit 1)."""
    check_n_boot(n_boot)
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1 (e.g. 0.05); got {alpha}")
    rows: list[Row] = []
    infos = []
    for k, path in enumerate(paths):
        got, info = read_scored(path, score_column, default_system=default_systems[k] if default_systems else None)
        rows += got
        infos.append(info)
    keys = {i["prompt_key"] for i in infos}
    if len(keys) > 1:
        raise UsageError(
            "some inputs name prompts by prompt_id and others by text; give every input a prompt_id column (or none)"
        )
    rated = [i["rating_column"] is not None for i in infos]
    if any(rated) and not all(rated):
        raise UsageError(
            "some inputs have human ratings (score/rating) and others do not; rate "
            "every system or drop the rating column"
        )
    table = build_table(rows, drop_failed=drop_failed, average_duplicates=average_duplicates, intersect=intersect)
    metric = compare_matrix(table.values, table.systems, n_boot, seed, level, alpha)
    result = CompareResult(
        table,
        metric,
        inputs=infos,
        score_column=score_column,
        n_failed=table.dropped["failed_rows"],
        protocols=list(dict.fromkeys(p for p in map(recorded_protocol, paths) if p)),
    )
    if table.ratings is not None:  # the same resamples: the two rankings are paired too
        result.listeners = compare_matrix(table.ratings, table.systems, n_boot, seed, level, alpha)
        by_name = {s["system"]: s["mean"] for s in result.listeners.systems}
        metric_means = [s["mean"] for s in metric.systems]
        result.agreement = ranking_agreement(metric_means, [by_name[n] for n in metric.ranking])
    return result
