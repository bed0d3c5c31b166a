"""Best of N: keep the top-k candidate clips of each prompt by score (``humanclap rerank``).

Input: a score file of ``humanclap score`` with several candidate clips per prompt (the
prompt is ``prompt_id`` when there is one, else ``text``). Per prompt the candidates are
ordered by **higher score, then higher cosine, then earlier input row** (so the order is
total and the same every run); failed rows (an ``error``) are never picked. The output is
a manifest of the picks (every input column plus ``rank_in_prompt``, 1 = best), prompts in
the order they first appear.

With human ratings (a ``score`` or ``rating`` column) it also measures the **selection
gain** (:func:`selection_gain`): the mean rating of the metric's top-k per prompt against a
random pick (its exact expected value: the mean rating of the prompt's candidates) and the
best possible pick (the oracle: the mean of the k highest ratings), all over the same
non-failed candidates, with bootstrap CIs over prompts. :func:`evaluation_selection_gain`
measures it for every model of an evaluation (``demo``, ``reproduce``: the pairs sharing a
text are a prompt's candidates), with its text and Markdown tables.

The output file follows the output contract: ``OUT.rerank.json`` beside it marks it as
rerank's own (and holds the summary and the gain); an existing non-empty ``OUT`` is
replaced only when it is rerank's own and ``overwrite`` is set; both are written
atomically under the lock ``.OUT.lock``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from humanclap.errors import UsageError
from humanclap.evaluation.compare import Row, read_scored
from humanclap.evaluation.compare_stats import percentile_interval, seeded_bootstrap_means
from humanclap.evaluation.metrics import check_n_boot
from humanclap.io import atomic_write_text, table_format, write_json
from humanclap.outputs import file_lock_path, output_lock

if TYPE_CHECKING:
    from humanclap.evaluation.evaluate import EvaluationResult

RANK_COLUMN = "rank_in_prompt"
TIE_RULE = "higher score, then higher cosine, then earlier input row"


def candidate_order(scores: Sequence[float], cosines: Sequence[float | None], positions: Sequence[int]) -> list[int]:
    """Indices of the candidates from best to worst by :data:`TIE_RULE` (a missing cosine
    sorts after any cosine).

    >>> candidate_order([0.5, 0.7, 0.5], [0.5, 0.7, 0.6], [0, 1, 2])
    [1, 2, 0]
    """

    def key(i: int):
        c = cosines[i]
        return (-scores[i], 1 if c is None else 0, -(c or 0.0), positions[i])

    return sorted(range(len(scores)), key=key)


def top_k(rows: Sequence[Row], k: int) -> dict[str, list[Row]]:
    """The prompt -> its top-k non-failed rows (best first), prompts in first-seen order."""
    if k < 1:
        raise UsageError(f"-k must be 1 or more, got {k}")
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.prompt].append(r)
    picks = {}
    for prompt, group in groups.items():
        ok = [r for r in group if r.value is not None]
        order = candidate_order([r.value for r in ok], [r.cosine for r in ok], [r.index for r in ok])
        picks[prompt] = [ok[i] for i in order[:k]]
    return picks


def selection_gain(
    ratings: Sequence[np.ndarray],
    picked: Sequence[np.ndarray],
    k: int,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean human rating of the metric's picks vs a random and the oracle pick, per prompt
    averaged over prompts (see the module docstring), with percentile-bootstrap CIs over
    prompts (the same resamples for every quantity, so differences are paired).

    ``ratings[p]``: the ratings of prompt p's candidates; ``picked[p]``: the ratings of the
    metric's picks (k or fewer). ``captured`` = (metric - random) / (oracle - random): the
    share of the possible gain the metric realises (None when the oracle gains nothing).

    >>> g = selection_gain([np.array([1., 3.])], [np.array([3.])], k=1, n_boot=0)
    >>> g["metric"]["mean"], g["random"]["mean"], g["oracle"]["mean"], g["captured"]["mean"]
    (3.0, 2.0, 3.0, 1.0)
    """
    if len(ratings) != len(picked) or not ratings:
        raise ValueError("ratings and picked need one entry per prompt, at least one prompt.")
    metric = np.array([np.mean(p) for p in picked], dtype=np.float64)
    random = np.array([np.mean(r) for r in ratings], dtype=np.float64)
    oracle = np.array([np.mean(np.sort(r)[::-1][: min(k, len(p))]) for r, p in zip(ratings, picked)], dtype=np.float64)
    series = {
        "metric": metric,
        "random": random,
        "oracle": oracle,
        "metric_minus_random": metric - random,
        "oracle_minus_metric": oracle - metric,
    }
    n = len(metric)
    out: dict[str, Any] = {"n_prompts": n, "k": k, "n_boot": n_boot, "seed": seed, "level": level}
    names = list(series)
    values = np.stack([series[s] for s in names])
    boot = None
    if n > 1 and n_boot > 0:
        boot = seeded_bootstrap_means(values, n_boot, seed)
        low, high = percentile_interval(boot, level)
    for j, name in enumerate(names):
        out[name] = {
            "mean": float(values[j].mean()),
            "ci_low": None if boot is None else float(low[j]),
            "ci_high": None if boot is None else float(high[j]),
        }
    gap = float(oracle.mean() - random.mean())
    captured: dict[str, Any] = {"mean": None, "ci_low": None, "ci_high": None}
    if gap > 0:
        captured["mean"] = float((metric.mean() - random.mean()) / gap)
        if boot is not None:
            m, r, o = boot[:, 0], boot[:, 1], boot[:, 2]
            ok = (o - r) > 0
            if ok.any():
                lo, hi = percentile_interval(((m - r) / np.where(ok, o - r, 1))[ok], level)
                captured.update(ci_low=float(lo), ci_high=float(hi))
    out["captured"] = captured
    return out


# -- the selection gain of evaluated models ------------------------------------------
def models_selection_gain(
    prompts: Sequence[Any],
    ratings: Sequence[float],
    scores: dict[str, Sequence[float]],
    usable: Sequence[bool] | None = None,
    k: int = 1,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The :func:`selection_gain` of each model of a rated table (row i: ``prompts[i]``,
    ``ratings[i]``, ``scores[label][i]``), on one set of candidates for every model.

    The candidates of a prompt are its usable rows (``usable``, e.g. scored by every model,
    with a finite rating); a prompt with k or fewer of them offers no choice and is left out
    (counted in ``n_prompts_excluded``). Each model picks its top-k by :data:`TIE_RULE`
    with no cosine known, so equal scores fall to the earlier row (``n_tied_top``: prompts
    where the k-th pick ties with the next candidate). Every model's bootstrap uses the same
    resamples of prompts, so ``metric_minus_reference`` (its pick's mean rating minus the
    first model's) is paired, with a two-sided bootstrap p.

    >>> g = models_selection_gain(["a", "a", "b"], [0.2, 0.8, 0.5], {"m": [0.1, 0.9, 0.3]}, n_boot=0)
    >>> g["n_prompts"], g["n_prompts_excluded"], g["models"]["m"]["metric"]["mean"]
    (1, 1, 0.8)
    """
    from humanclap.evaluation.compare_stats import bootstrap_p

    if k < 1:
        raise ValueError(f"k must be 1 or more, got {k}")
    ratings = np.asarray(ratings, dtype=np.float64)
    n = len(ratings)
    if len(prompts) != n or any(len(s) != n for s in scores.values()) or not scores:
        raise ValueError("prompts, ratings and every model's scores need one entry per row.")
    ok = np.isfinite(ratings) if usable is None else np.asarray(usable, dtype=bool) & np.isfinite(ratings)
    values = {label: np.asarray(s, dtype=np.float64) for label, s in scores.items()}
    for s in values.values():
        ok &= np.isfinite(s)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in np.flatnonzero(ok):
        groups[prompts[i]].append(int(i))
    kept = [rows for rows in groups.values() if len(rows) > k]
    sizes = [len(rows) for rows in kept]
    out: dict[str, Any] = {
        "k": k,
        "tie_break": TIE_RULE + " (no cosine here: equal scores fall to the earlier row)",
        "n_prompts": len(kept),
        "n_candidates": int(sum(sizes)),
        "candidates_per_prompt": [min(sizes), max(sizes)] if sizes else None,
        "n_prompts_excluded": len(groups) - len(kept),
        "n_rows_unusable": int(n - ok.sum()),
        "n_boot": n_boot,
        "seed": seed,
        "level": level,
        "reference": next(iter(values)),
        "models": {},
    }
    if not kept:
        return out
    candidates = [ratings[rows] for rows in kept]
    reference = None
    for label, s in values.items():
        orders = [candidate_order(s[rows], [None] * len(rows), rows) for rows in kept]
        picked = [ratings[rows][o[:k]] for rows, o in zip(kept, orders)]
        gain = selection_gain(candidates, picked, k, n_boot=n_boot, seed=seed, level=level)
        gain["n_tied_top"] = sum(1 for rows, o in zip(kept, orders) if s[rows][o[k - 1]] == s[rows][o[k]])
        metric = np.array([p.mean() for p in picked])
        if reference is None:
            reference = metric
        else:
            diff = metric - reference
            entry: dict[str, Any] = {"mean": float(diff.mean()), "ci_low": None, "ci_high": None, "p_value": None}
            if len(diff) > 1 and n_boot > 0:
                boot = seeded_bootstrap_means(diff[None, :], n_boot, seed)
                low, high = percentile_interval(boot, level)
                entry.update(ci_low=float(low[0]), ci_high=float(high[0]), p_value=float(bootstrap_p(boot)[0]))
            gain["metric_minus_reference"] = entry
        out["models"][label] = gain
    return out


def evaluation_selection_gain(
    result: EvaluationResult, k: int = 1, n_boot: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """:func:`models_selection_gain` of an evaluation's models: a prompt is a ``text``, its
    candidates the pairs with that text that every model scored, rated by ``human`` (the
    mean listener score, 0-1). ``n_boot``/``seed``: the evaluation's unless given."""
    pairs = result.pairs
    return models_selection_gain(
        list(pairs["text"]),
        pairs["human"].to_numpy(dtype=np.float64),
        {run.label: run.scores for run in result.runs},
        usable=result.scored,
        k=k,
        n_boot=result.n_boot if n_boot is None else n_boot,
        seed=result.seed if seed is None else seed,
    )


def _ci_cell(g: dict[str, Any] | None, signed: bool = False, percent: bool = False) -> str:
    from humanclap.evaluation.tables import MISSING

    if g is None or g.get("mean") is None:
        return MISSING
    scale, spec = (100, "+.0f" if signed else ".0f") if percent else (1, "+.3f" if signed else ".3f")
    unit = "%" if percent else ""
    cell = f"{g['mean'] * scale:{spec}}{unit}"
    if g.get("ci_low") is not None:
        cell += f" [{g['ci_low'] * scale:{spec}}{unit}, {g['ci_high'] * scale:{spec}}{unit}]"
    return cell


def _gain_rows(gain: dict[str, Any]) -> list[list[str]]:
    from humanclap.evaluation.tables import fmt

    rows = []
    for label, g in gain["models"].items():
        vs = g.get("metric_minus_reference")
        rows.append(
            [
                label,
                _ci_cell(g["metric"]),
                _ci_cell(g["metric_minus_random"], signed=True),
                _ci_cell(g["captured"], percent=True),
                *(("(reference)", "") if vs is None else (_ci_cell(vs, signed=True), fmt(vs["p_value"]))),
            ]
        )
    return rows


GAIN_HEADER = ("model", "pick [95% CI]", "pick − random [95% CI]", "share of gain [95% CI]", "pick − ref.'s pick", "p")


def _gain_notes(gain: dict[str, Any], what: str) -> list[str]:
    first = next(iter(gain["models"].values()))
    lo, hi = gain["candidates_per_prompt"]
    few = "a single candidate" if gain["k"] == 1 else f"{gain['k']} candidates or fewer"
    return [
        f"{what}: top-{gain['k']} by each model's CLAPScore among {lo if lo == hi else f'{lo}-{hi}'} "
        f"candidates per prompt (the pairs sharing a text); {gain['n_prompts']} prompts (left out: "
        f"{gain['n_prompts_excluded']} with {few})",
        f"pick: mean human score (0-1) of the pick; random pick (exact expectation) "
        f"{_ci_cell(first['random'])}, best possible pick {_ci_cell(first['oracle'])}; share of gain "
        f"= (pick - random) / (best - random); ref. = {gain['reference']}; 95% bootstrap CIs "
        "over prompts, p: paired bootstrap",
    ]


def selection_gain_table(gain: dict[str, Any], what: str = "Selection gain") -> str:
    """The per-model selection gain of :func:`models_selection_gain` as a text table."""
    from humanclap.evaluation.tables import Column, text_table

    if not gain["models"]:
        return f"{what}: no prompt has more than {gain['k']} candidates scored by every model"
    title, footer = _gain_notes(gain, what)
    columns = [Column(h, None, "<" if j == 0 else ">", "" if j == 0 else "  ") for j, h in enumerate(GAIN_HEADER)]
    return text_table(columns, _gain_rows(gain), title=[title], rule="-", footer=[footer])


def selection_gain_markdown(gain: dict[str, Any], what: str = "Selection gain") -> list[str]:
    """The lines of a report.md section (``## Selection gain``) for the same numbers."""
    from humanclap.evaluation.tables import markdown_table

    lines = ["## Selection gain", ""]
    if not gain["models"]:
        return lines + [f"No prompt has more than {gain['k']} candidates scored by every model."]
    title, footer = _gain_notes(gain, what)
    return lines + [
        title + ".",
        "",
        *markdown_table(GAIN_HEADER, _gain_rows(gain)),
        "",
        footer[0].upper() + footer[1:] + f". Ties: {gain['tie_break']}.",
    ]


# -- the output file -----------------------------------------------------------------
def sidecar_path(output: Path) -> Path:
    """``OUT.rerank.json``: marks OUT as rerank's own and holds its summary."""
    return output.with_name(output.name + ".rerank.json")


def _is_own(output: Path) -> bool:
    try:
        meta = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("command") == "rerank" and meta.get("output") == output.name


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_rerank_output(output: Path, source: Path, overwrite: bool) -> None:
    """The output contract for one file (see the module docstring); creates nothing."""
    table_format(output, "-o")
    side = sidecar_path(output)
    for path in (output, side):
        if path.is_dir():
            raise UsageError(f"-o {output}: {path} is a folder; name a .csv or .jsonl file")
        if path.exists() and _same_file(path, source):
            raise UsageError(f"-o {output} would overwrite the input {source}; choose another output")
    busy = output.exists() and output.stat().st_size > 0
    if (busy or side.exists()) and not _is_own(output):
        what = output if busy else side
        raise UsageError(
            f"{what} exists and was not written by humanclap rerank; humanclap never "
            "writes over files it did not create: choose another -o"
        )
    if busy and not overwrite:
        raise UsageError(
            f"-o {output} holds an earlier rerank output; pass --overwrite to replace it, or choose another -o"
        )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def manifest_text(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> str:
    """The picked rows as CSV or JSON Lines text."""
    return MANIFEST_WRITERS[fmt](rows, columns)


def _jsonl_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


# output format -> the picked rows as text
MANIFEST_WRITERS = {"csv": _csv_text, "jsonl": _jsonl_text}


@dataclass
class RerankRun:
    """What :func:`run_rerank` did."""

    output: Path
    n_rows: int
    n_prompts: int
    n_picked: int
    n_failed: int
    gain: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def run_rerank(
    source: str | Path,
    output: str | Path,
    k: int = 1,
    *,
    score_column: str = "clapscore",
    n_boot: int = 10_000,
    seed: int = 0,
    overwrite: bool = False,
) -> RerankRun:
    """Write the top-k rows of each prompt of ``source`` to ``output`` (CSV/JSONL by its
    extension) and ``OUT.rerank.json`` (counts, settings, the selection gain when rated)."""
    if k < 1:
        raise UsageError(f"-k must be 1 or more, got {k}")
    check_n_boot(n_boot)
    source, out = Path(source), Path(output)
    fmt = table_format(out, "-o")
    check_rerank_output(out, source, overwrite)
    rows, info = read_scored(source, score_column)
    columns = list(read_columns(rows)) + ([] if RANK_COLUMN in read_columns(rows) else [RANK_COLUMN])
    picks = top_k(rows, k)
    failed = sum(1 for r in rows if r.value is None)
    notes = []
    if failed:
        notes.append(
            f"{failed} failed rows (error) were never picked; the selection gain uses the other candidates only"
        )
    empty = [p for p, chosen in picks.items() if not chosen]
    if empty:
        notes.append(f"{len(empty)} prompts have no candidate that scored: nothing picked there")
    short = sum(1 for chosen in picks.values() if 0 < len(chosen) < k)
    if short:
        notes.append(f"{short} prompts have fewer than {k} candidates that scored: all are kept")
    picked_rows = [{**r.record, RANK_COLUMN: rank} for chosen in picks.values() for rank, r in enumerate(chosen, 1)]
    gain = None
    if info["rating_column"] is not None:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r.value is not None:
                groups[r.prompt].append(r.rating)
        rated = [p for p in picks if picks[p]]
        if rated:
            gain = selection_gain(
                [np.array(groups[p]) for p in rated],
                [np.array([r.rating for r in picks[p]]) for p in rated],
                k,
                n_boot=n_boot,
                seed=seed,
            )
            gain["rating_column"] = info["rating_column"]
    result = RerankRun(out, len(rows), len(picks), len(picked_rows), failed, gain, notes)
    meta = {
        "command": "rerank",
        "output": out.name,
        "input": str(source),
        "k": k,
        "score_column": score_column,
        "prompt_key": info["prompt_key"],
        "tie_break": TIE_RULE,
        "rows": len(rows),
        "prompts": len(picks),
        "picked": len(picked_rows),
        "failed_rows": failed,
        "selection_gain": gain,
        "notes": notes,
    }
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(file_lock_path(out), f"-o {out}"):
        check_rerank_output(out, source, overwrite)  # again, under the lock
        # The sidecar first: a run killed while writing OUT leaves OUT marked as its own.
        write_json(sidecar_path(out), {"command": "rerank", "output": out.name, "complete": False})
        atomic_write_text(out, manifest_text(picked_rows, columns, fmt))
        write_json(sidecar_path(out), meta)
    return result


def read_columns(rows: Sequence[Row]) -> list[str]:
    """The columns of the rows' records, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r.record))
    return list(seen)
