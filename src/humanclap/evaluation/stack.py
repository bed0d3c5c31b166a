"""``humanclap stack``: a ridge regression on several models' CLAPScores, fitted to the human
scores of the training pairs, and the stacked scorer that ``evaluate`` reports beside them.

**Fitting** (:func:`fit_stack`) reads ``predictions.csv`` files of ``humanclap evaluate
--split train`` (one or several, each with the ``metrics.json`` written beside it, which
names the model behind each score column). The features are the members' CLAPScores, the
target the mean human score (0-1); ridge and its k-fold choice of alpha are
:mod:`humanclap.evaluation.ridge`. Refused (``UsageError``, exit 2): files scored on
different pairs (pair ids or order differ) or with different human scores, a member column
or model that is missing, NaN scores without ``drop_failed``, a single member, too few pairs
for the folds, pairs of a ``test`` split.

**The stack folder** holds ``stack.json`` (``"format": "humanclap-stack"``: the members'
model specs, labels and revisions, the standardisation, coefficients, intercept, alpha, the
CV table and the training pairs' fingerprint) and ``training_pairs.csv`` (the pairs it was
fitted on, with their features), written under the output contract.

**Evaluating** a stack folder is :mod:`humanclap.evaluation.stack_eval`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from humanclap.errors import UsageError
from humanclap.evaluation.evaluate import PAIR_OUTPUT_COLUMNS, unique_names
from humanclap.evaluation.metrics import MIN_PAIRS
from humanclap.evaluation.ridge import ALPHA_GRID, CRITERIA, RidgeFit, cross_validate, fit_ridge
from humanclap.io import atomic_write, read_table, table_digest, write_json
from humanclap.outputs import check_folder, claim_folder

STACK_FILE = "stack.json"
TRAINING_PAIRS = "training_pairs.csv"
FORMAT = "humanclap-stack"  # the marker key's value in stack.json
FORMAT_VERSION = 1
CLIP = (0.0, 1.0)


@dataclass
class Member:
    """One model of a stack: its score column in the training predictions and how to load it."""

    label: str
    column: str  # in the training predictions.csv
    model: str  # the spec evaluate loads: an absolute folder, a hub id, msclap-2023, ...
    revision: str
    source: str
    predictions: str  # the file its training scores came from

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class StackResult:
    """What :func:`fit_stack` did."""

    folder: Path
    members: list[Member]
    fit: RidgeFit
    cv: dict | None  # the CV table; None when alpha was given
    n_pairs: int
    n_dropped: int
    notes: list[str] = field(default_factory=list)


# -- reading training predictions ----------------------------------------------------
def _read_predictions(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """The table of an evaluate ``predictions.csv`` and the ``models`` of its metrics.json."""
    table = read_table(path, "predictions file")
    df = pd.DataFrame(table.rows, columns=table.columns)
    for col in ("pair_id", "human"):
        if col not in df.columns:
            raise UsageError(f"{path} has no {col!r} column: pass a predictions.csv written by humanclap evaluate")
    meta = path.with_name("metrics.json")
    try:
        models = json.loads(meta.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"{path}: no readable metrics.json beside it (it names the model behind "
            "each score column); pass a predictions.csv in the folder humanclap "
            "evaluate wrote, with its metrics.json"
        ) from None
    for m in models:
        if m.get("column") not in df.columns:
            raise UsageError(
                f"{path}: member {m.get('label')!r} (column {m.get('column')!r}, "
                f"listed in {meta}) is missing from the table; was the file edited? "
                "Run humanclap evaluate again"
            )
    return df, models


def _member_spec(model_id: str, source: str, path: Path) -> str:
    """The spec evaluate will load: an existing local folder as an absolute path (so the stack
    works from any directory); a hub id or named model as recorded."""
    p = Path(model_id).expanduser()
    if p.exists():
        return str(p.resolve())
    if source == "local":
        raise UsageError(
            f"member model {model_id!r} (from {path.with_name('metrics.json')}) is "
            "missing: a stack re-scores its members at evaluate time, so each must "
            "still be loadable. Run stack from the folder evaluate was run in, or "
            "evaluate again with an absolute --model path"
        )
    return model_id


def _same_pairs(ref: pd.DataFrame, df: pd.DataFrame, ref_path: Path, path: Path) -> None:
    a, b = ref["pair_id"].tolist(), df["pair_id"].tolist()
    if a != b:
        if sorted(a) == sorted(b):
            why = "the same pairs in a different order"
        else:
            i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            why = (
                f"{len(a)} vs {len(b)} pairs, first difference at row {i + 1}: "
                f"{a[i] if i < len(a) else '(none)'!r} vs {b[i] if i < len(b) else '(none)'!r}"
            )
        raise UsageError(
            f"{path} and {ref_path} were scored on different pairs ({why}); a stack "
            "needs every member scored on the same pairs: evaluate every model with "
            "the same --data and --split, in one run or in several"
        )
    ha = pd.to_numeric(ref["human"], errors="coerce").to_numpy(float)
    hb = pd.to_numeric(df["human"], errors="coerce").to_numpy(float)
    if not np.allclose(ha, hb, rtol=0, atol=1e-9, equal_nan=True):
        raise UsageError(
            f"{path} and {ref_path} hold the same pairs with different human scores "
            "(another rating file or --score-scale?); evaluate both on the same data"
        )


def collect_members(
    paths: Sequence[str | Path], select: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[Member], np.ndarray, list[str]]:
    """``(pairs, members, X, notes)`` from training predictions: the pair columns of the first
    file, one member per score column (``select``: labels or columns to keep, in that
    order), X = their scores (n, members; NaN where a pair failed)."""
    if not paths:
        raise UsageError(
            "no predictions file given: pass the predictions.csv of humanclap "
            "evaluate --split train (one holding several models, or one per model)"
        )
    notes: list[str] = []
    frames, found = [], []
    for raw in paths:
        path = Path(raw)
        df, models = _read_predictions(path)
        if frames:
            _same_pairs(frames[0][0], df, frames[0][1], path)
        frames.append((df, path))
        found += [(m, df, path) for m in models]
    pairs, first = frames[0]
    if "split" in pairs.columns and (pairs["split"] == "test").any():
        raise UsageError(
            f"{first} holds pairs of the test split: a stack is fitted on training "
            "pairs and evaluated on the test split. Score the members with "
            "humanclap evaluate --split train and stack those predictions"
        )
    if select:
        chosen = []
        for want in select:
            hit = [f for f in found if want in (f[0].get("label"), f[0].get("column"))]
            if not hit:
                labels = ", ".join(str(f[0].get("label")) for f in found)
                raise UsageError(
                    f"--member {want!r} is in none of the predictions files (they "
                    f"hold {labels}); pass one of those labels"
                )
            chosen.append(hit[0])
        found = chosen
    members, columns, seen = [], [], {}
    for m, df, path in found:
        spec = _member_spec(str(m.get("model_id", "")), str(m.get("source", "")), path)
        key = (spec, str(m.get("revision", "")))
        if key in seen:
            notes.append(f"{m.get('label')} in {path} is the same model as {seen[key]}: used once")
            continue
        seen[key] = f"{m.get('label')} in {path}"
        members.append(
            Member(
                str(m.get("label")),
                str(m["column"]),
                spec,
                str(m.get("revision", "")),
                str(m.get("source", "")),
                str(path),
            )
        )
        columns.append(pd.to_numeric(df[m["column"]], errors="coerce").to_numpy(float))
    for member, label in zip(members, unique_names([m.label for m in members])):
        member.label = label
    if len(members) < 2:
        raise UsageError(
            f"stacking needs at least 2 members, got {len(members)} "
            f"({', '.join(m.label for m in members) or 'none'}): a ridge on one score "
            "is a monotone rescaling of it (the same SRCC and KTAU); pass more "
            "models' predictions"
        )
    keep = [c for c in pairs.columns if c in PAIR_OUTPUT_COLUMNS]
    return pairs[keep].copy(), members, np.column_stack(columns), notes


def pairs_fingerprint(pair_ids: Sequence[str], human: np.ndarray) -> str:
    """sha256 of the training pairs in order: their ids and human scores."""
    return table_digest(
        ["pair_id", "human"], ({"pair_id": str(p), "human": repr(float(h))} for p, h in zip(pair_ids, human))
    )


# -- fitting -------------------------------------------------------------------------
def fit_stack(
    paths: Sequence[str | Path],
    output_dir: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    criterion: str = "srcc",
    alpha: float | None = None,
    drop_failed: bool = False,
    select: Sequence[str] | None = None,
    overwrite: bool = False,
) -> StackResult:
    """Fit the stack and write ``stack.json`` and ``training_pairs.csv`` to ``output_dir``
    (new, empty, or an earlier stack run replaced with ``overwrite``)."""
    if criterion not in CRITERIA:
        raise UsageError(f"--criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
        raise UsageError(f"--alpha must be a positive number, got {alpha}")
    if folds < 2:
        raise UsageError(f"--folds must be 2 or more, got {folds}")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}")
    out = Path(output_dir)
    previous = check_folder(out, "stack", "--output-dir")
    if previous is not None and previous.get("files") and not overwrite:
        raise UsageError(
            f"--output-dir {out} holds an earlier stack run; pass --overwrite to "
            "replace it (only the files that run wrote are deleted), or choose "
            "another --output-dir"
        )
    pairs, members, X, notes = collect_members(paths, select)
    y = pd.to_numeric(pairs["human"], errors="coerce").to_numpy(float)
    failed = ~np.isfinite(X).all(axis=1) | ~np.isfinite(y)
    if failed.any() and not drop_failed:
        first = int(np.flatnonzero(failed)[0])
        raise UsageError(
            f"{int(failed.sum())} of {len(y)} training pairs have no score from "
            f"every member (first: {pairs['pair_id'].iat[first]!r}); fix their audio "
            "and evaluate again, or pass --drop-failed to fit on the other pairs"
        )
    if failed.any():
        notes.append(f"{int(failed.sum())} pairs without a score from every member left out (--drop-failed)")
    pairs, X, y = pairs[~failed].reset_index(drop=True), X[~failed], y[~failed]
    need = folds * MIN_PAIRS
    if alpha is None and len(y) < need:
        raise UsageError(
            f"{len(y)} training pairs are too few for {folds}-fold cross-validation: "
            f"each held-out fold needs {MIN_PAIRS} pairs for a correlation, so at "
            f"least {need}; pass more pairs or fewer --folds (or a fixed --alpha)"
        )
    if len(y) < MIN_PAIRS:
        raise UsageError(f"{len(y)} training pairs are too few to fit a stack (at least {MIN_PAIRS})")
    constant = [m.label for m, sd in zip(members, X.std(axis=0)) if sd == 0]
    if constant:
        notes.append(f"constant on the training pairs (weight 0): {', '.join(constant)}")
    cv = None
    if alpha is None:
        try:
            result = cross_validate(X, y, k=folds, seed=seed, criterion=criterion)
        except ValueError as exc:
            raise UsageError(f"cross-validation failed: {exc}; check the training predictions") from None
        cv, alpha = result.as_dict(), result.best_alpha
    fit = fit_ridge(X, y, alpha)
    record = stack_record(
        members,
        fit,
        cv,
        pairs,
        y,
        folds=folds,
        seed=seed,
        criterion=criterion,
        drop_failed=drop_failed,
        n_dropped=int(failed.sum()),
    )
    with claim_folder(out, "stack", overwrite=overwrite) as run:
        run.set_identity(
            {
                "model": {"members": [[m.model, m.revision] for m in members]},
                "data": record["training_pairs"],
                "settings": {k: record[k] for k in ("alpha", "criterion", "folds", "seed")},
            }
        )
        run.record(TRAINING_PAIRS)
        table = pairs.assign(**{m.column: X[:, j] for j, m in enumerate(members)})
        atomic_write(out / TRAINING_PAIRS, lambda p: table.to_csv(p, index=False, float_format="%.17g"))
        run.record(STACK_FILE)
        write_json(out / STACK_FILE, record)
    return StackResult(out, members, fit, cv, len(y), int(failed.sum()), notes)


def stack_record(
    members: list[Member], fit: RidgeFit, cv: dict | None, pairs: pd.DataFrame, y: np.ndarray, **settings: Any
) -> dict[str, Any]:
    """The content of stack.json."""
    raw_w, raw_b = fit.raw_coef()
    splits = sorted(map(str, pd.unique(pairs["split"]))) if "split" in pairs.columns else []
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "ridge on the members' CLAPScores, standardised; prediction clipped to [0, 1]",
        "members": [m.as_dict() for m in members],
        "alpha": fit.alpha,
        "alpha_grid": list(ALPHA_GRID) if cv is not None else None,
        "feature_mean": fit.mean.tolist(),
        "feature_scale": fit.scale.tolist(),
        "coef_standardised": fit.coef.tolist(),
        "intercept": fit.intercept,
        "coef_raw": raw_w.tolist(),
        "intercept_raw": raw_b,
        "clip": list(CLIP),
        "cv": cv,
        **settings,
        "training_pairs": {"n": len(y), "splits": splits, "sha256": pairs_fingerprint(pairs["pair_id"].tolist(), y)},
    }
