"""Model x dataset -> per-pair predictions + metrics against the human ratings.

Work is shared as far as it can be: each model embeds every *unique* text once and
decodes/embeds every *unique* audio file once, then the CLAPScore of a pair is a dot
product of two cached vectors. (On RELATE's test split one caption is rated against the
natural clip and up to four generated ones, so per-pair embedding would do ~3x the work.)

A pair whose audio is missing or unreadable (or whose text is empty) is never dropped
silently: its prediction is NaN, its ``error`` says why, and the metrics, computed on
the pairs every model scored, say how many pairs were left out. Models given as ids or
folders are loaded one at a time and released before the next, so several large
checkpoints never sit in memory together.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from humanclap.data import RatedPairs
from humanclap.errors import UsageError
from humanclap.evaluation import metrics as M
from humanclap.evaluation.breakdowns import breakdowns, subset_mask, system_level_summary
from humanclap.evaluation.xacle_metrics import xacle_challenge_block
from humanclap.io import json_safe
from humanclap.scoring.citation import scorer_protocol
from humanclap.scoring.engine import EmbeddingEngine
from humanclap.scoring.families import precheck
from humanclap.scoring.inputs import label_list, model_list
from humanclap.scoring.loader import load_scorer
from humanclap.scoring.protocol import Scorer

if TYPE_CHECKING:  # torch.distributed is imported only by a run that uses it
    from humanclap.scoring.distributed import DistInfo

log = logging.getLogger(__name__)

# A model to evaluate: a hub id or checkpoint folder (loaded as a CLAPScorer, one at a
# time), or an already loaded scorer of any family (CLAPScorer, MSClapScorer, ...).
ModelSpec = str | os.PathLike | Scorer
METRIC_NAMES = ("srcc", "lcc", "ktau", "mse")
# Paired differences against the first model are computed for these breakdowns only:
# the per-system ones are too small for a difference to mean much.
PAIRED_BREAKDOWNS = ("overall", "natural", "synthesized")
# predictions.csv keeps these pair columns (those the dataset has), then one per model.
PAIR_OUTPUT_COLUMNS = (
    "pair_id",
    "wavname",
    "audio",
    "text",
    "system",
    "natural",
    "split",
    "human",
    "human_std",
    "n_ratings",
)
MSE_NOTE = (
    "MSE is on the 0-1 scale: human ratings are rescaled to 0-1 (RELATE and XACLE "
    "scores 0-10 divided by 10) and CLAPScore = max(cos, 0) lies in [0, 1]."
)


@dataclass
class ModelRun:
    """One model's predictions on every pair of the dataset."""

    label: str  # shown in tables
    column: str  # its column in predictions.csv (unique, file-name safe)
    info: dict  # ModelInfo.as_dict(): model_id, revision, source, preprocessing
    scores: np.ndarray  # CLAPScore per pair, NaN where the pair could not be scored
    errors: list[str]  # per pair: "" when scored, else why not
    counts: dict[str, int] = field(default_factory=dict)  # work done (texts/audio embedded)
    protocol: str = ""  # the citation line (scoring.citation); "" for a derived (stacked) run


@dataclass
class EvaluationResult:
    """Everything ``write_report`` needs: predictions, metrics and provenance."""

    dataset: str
    pairs: pd.DataFrame
    runs: list[ModelRun]
    scored: np.ndarray  # bool per pair: every model scored it (metrics use these)
    metrics: dict[str, dict[str, dict]]  # label -> breakdown -> metric dict
    paired: dict[str, dict[str, dict]]  # label -> breakdown -> metric -> {diff, low, high, p_value}
    system_level: dict[str, dict]  # label -> system-level correlations
    n_boot: int
    seed: int
    data_spec: str = ""
    split: str = ""
    paper: dict[str, dict[str, float]] | None = None  # label -> {srcc, lcc, ktau, mse}
    # XACLE-layout data only: the challenge's own metrics on its 0-10 scale (evaluation.xacle_metrics)
    xacle_challenge: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]

    @property
    def n_failed(self) -> int:
        return int((~self.scored).sum())

    @property
    def n_scored(self) -> int:
        return int(self.scored.sum())

    @property
    def reason(self) -> str | None:
        """Why no metric could be computed (fewer scored pairs than a metric needs), or None.

        Every metric needs at least ``MIN_PAIRS`` pairs scored by every model; below that the
        metrics are null and this says why, so a reader never mistakes "nothing" for a number."""
        n, ok = len(self.pairs), self.n_scored
        if ok >= M.MIN_PAIRS:
            return None
        if ok == 0:
            errs = [e for e in self.errors() if e]
            example = f"; first error: {errs[0]}" if errs else ""
            return (
                f"no pair could be scored: all {n} pairs failed{example}. No metric was "
                "computed; fix the audio paths (--audio-root) or the texts and run again"
            )
        return (
            f"only {ok} of {n} pairs could be scored; SRCC, LCC, KTAU and MSE need at least "
            f"{M.MIN_PAIRS}, so no metric was computed"
        )

    def errors(self) -> list[str]:
        """Per pair: why it was left out ("" when every model scored it). A message shared
        by every failing model (a missing file) is given once, else per model label."""
        out = []
        for i in range(len(self.pairs)):
            per_model = [(r.label, r.errors[i]) for r in self.runs if r.errors[i]]
            if len({e for _, e in per_model}) <= 1:
                out.append(per_model[0][1] if per_model else "")
            else:
                out.append("; ".join(f"{label}: {e}" for label, e in per_model))
        return out

    def predictions(self) -> pd.DataFrame:
        """One row per pair: the pair's columns, one prediction column per model, ``error``."""
        cols = [c for c in PAIR_OUTPUT_COLUMNS if c in self.pairs.columns]
        df = self.pairs[cols].copy()
        for run in self.runs:
            df[run.column] = run.scores
        df["scored"] = self.scored
        df["error"] = self.errors()
        return df

    def failed(self) -> list[dict[str, str]]:
        """The pairs left out of the metrics, with the reason."""
        key = "wavname" if "wavname" in self.pairs.columns else "audio"
        errs = self.errors()
        return [
            {
                "pair_id": str(self.pairs["pair_id"].iat[i]),
                key: str(self.pairs[key].iat[i]),
                "text": str(self.pairs["text"].iat[i]),
                "error": errs[i],
            }
            for i in np.flatnonzero(~self.scored)
        ]

    def to_json(self) -> dict[str, Any]:
        """The content of metrics.json (NaN turned into null).

        With no scored pair, ``metrics``, ``paired_vs_first`` and ``system_level`` are null
        and ``reason`` says why; with fewer than ``MIN_PAIRS`` the per-model entries hold
        null metrics and ``reason`` is given too. (``reason`` appears only then, so the
        file of a normal run is unchanged.)"""
        none_scored = self.n_scored == 0
        out = {
            "dataset": self.dataset,
            "data_spec": self.data_spec,
            "split": self.split,
            "n_pairs": len(self.pairs),
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "failed": self.failed(),
            "seed": self.seed,
            "n_boot": self.n_boot,
            "note": MSE_NOTE,
            "models": [
                {
                    "label": r.label,
                    "column": r.column,
                    **r.info,
                    "counts": r.counts,
                    **({"protocol": r.protocol} if r.protocol else {}),
                }
                for r in self.runs
            ],
            "metrics": None if none_scored else self.metrics,
            "paired_vs_first": None if none_scored else {"reference": self.labels[0], "by_model": self.paired},
            "system_level": None if none_scored else self.system_level,
            "paper": self.paper,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.xacle_challenge is not None:  # only for XACLE data: other files are unchanged
            out["xacle_challenge"] = self.xacle_challenge
        return json_safe(out)


# -- scoring -------------------------------------------------------------------------
def score_pairs(
    scorer: Scorer,
    audio: Sequence[str],
    texts: Sequence[str],
    batch_size: int = 8,
    progress: bool | None = None,
    dist: DistInfo | None = None,
    problems: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """CLAPScore of each ``(audio[i], texts[i])`` pair with one embedding per unique item.

    The embedding work is the :class:`EmbeddingEngine`'s, the same as ``humanclap score``'s,
    so evaluation and scoring give the same numbers. Returns ``(scores, errors, counts)``:
    NaN score and a message for each pair whose audio could not be decoded or whose text
    is empty; ``counts`` says how many texts and audio files were embedded and decoded.
    Under torchrun (``dist``), each rank embeds its share of the unique items and all ranks
    get every embedding (:func:`~humanclap.scoring.distributed.embed_shared`): same result.
    ``problems`` (one per pair, "" for none): pairs known to be unusable before any
    decoding (a manifest's ``input_error``), left out with that message and never embedded.
    """
    if len(audio) != len(texts):
        raise UsageError(f"audio and texts must pair up: {len(audio)} vs {len(texts)}; pass one text per audio item")
    paths = [str(a) for a in audio]
    texts = [t if isinstance(t, str) else "" for t in texts]
    errors = [str(p or "") for p in problems] if problems is not None else [""] * len(paths)
    keep = [i for i, e in enumerate(errors) if not e]
    engine = EmbeddingEngine(scorer, batch_size=batch_size)
    if dist is not None and dist.enabled:
        # lazy: keeps torch out of `import humanclap.evaluation.evaluate`
        from humanclap.scoring.distributed import embed_shared

        embed_shared(engine, [paths[i] for i in keep], [texts[i] for i in keep], dist, progress=progress)
    else:
        engine.embed_unique([paths[i] for i in keep], [texts[i] for i in keep], progress=progress)
    scores = np.full(len(paths), np.nan, dtype=np.float64)
    for i in keep:
        score, _, errors[i] = engine.score(paths[i], texts[i])  # the scorer's (a score head's) clapscore
        if score is not None:
            scores[i] = score
    return scores, errors, {"pairs": len(paths), **engine.counts()}


def _to_load(spec: ModelSpec) -> bool:
    """A hub id or folder to load here (else an already loaded scorer)."""
    return isinstance(spec, (str, os.PathLike))


# -- labels and columns --------------------------------------------------------------
def short_name(model_id: str) -> str:
    """A short, file-name-safe name for a model: last path component of an id or folder."""
    base = re.split(r"[\\/]", str(model_id).rstrip("/\\"))[-1] or str(model_id)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", base).strip("_") or "model"


def unique_names(names: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    """Make names unique (and distinct from ``reserved``) by appending -2, -3, ..."""
    taken = set(reserved)
    out = []
    for name in names:
        cand, k = name, 2
        while cand in taken:
            cand, k = f"{name}-{k}", k + 1
        taken.add(cand)
        out.append(cand)
    return out


def check_labels(labels: Sequence[str]) -> None:
    """Refuse labels that cannot name a model in a table: empty, or holding a line break or
    another control character (it would break the report's Markdown and the summary)."""
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise UsageError(f"empty --label {label!r}: give each model a visible name")
        if any(ord(c) < 32 or ord(c) == 127 for c in label):
            raise UsageError(f"--label {label!r} holds a control character (line break, tab, ...): use a one-line name")


def check_model_spec(model: str) -> None:
    """Fail fast (``ModelLoadError``) on a local model path that cannot be a checkpoint of
    any family, before any other model is loaded or any audio decoded (the family table's
    pre-check, :func:`humanclap.scoring.families.precheck`). Hub ids pass unchecked."""

    precheck(model)


def select_split(data: RatedPairs, split: str | None) -> tuple[RatedPairs, str]:
    """The pairs to evaluate: ``split``; by default "test" if the data has it, else all;
    "all" keeps every pair. Returns the subset and the name of what was kept."""
    if split is None:
        split = "test" if "test" in data.splits else "all"
    if split == "all" and "all" not in data.splits:
        return data, "all"
    return data.split(split), split


# -- the API -------------------------------------------------------------------------
def evaluate_models(
    models: Sequence[ModelSpec],
    data: RatedPairs,
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "fp32",
    n_boot: int = 1000,
    seed: int = 0,
    paper: dict[str, dict[str, float]] | None = None,
    data_spec: str = "",
    progress: bool | None = None,
    dist: DistInfo | None = None,
    derived: Sequence[Callable[[list[ModelRun]], ModelRun]] = (),
) -> EvaluationResult:
    """Score every pair of ``data`` with each model and compute the metrics.

    ``models`` are hub ids, local checkpoint folders or loaded scorers (``CLAPScorer``, or
    any other :class:`~humanclap.scoring.protocol.Scorer`). ``labels``
    (optional, one per model) name them in tables; by default the short model name.
    ``paper`` maps a label to published numbers shown beside ours in the report.
    ``derived``: functions that make a further run from the scored ones (a stack of
    several models, :mod:`humanclap.evaluation.stack`), each added after them in turn.
    Raises ``ModelLoadError`` for a model that cannot be loaded (before any scoring of
    that model) and ``UsageError`` (a ``ValueError``) for bad arguments.
    """
    models, labels = model_list(models), None if labels is None else label_list(labels)
    if not models:
        raise UsageError("no model given: pass at least one model id, folder or CLAPScorer")
    if labels is not None and len(labels) != len(models):
        raise UsageError(f"{len(labels)} labels for {len(models)} models: give one label per model")
    if labels is not None:
        check_labels(labels)

    # before any model loads; else a MemoryError (exit 3) or an OOM kill
    n_boot, seed = M.check_n_boot(n_boot), M.check_count(seed, "seed")
    for m in models:
        if not (_to_load(m) or isinstance(m, Scorer)):
            raise UsageError(
                f"model {m!r} is neither a hub id or checkpoint folder nor a loaded "
                "scorer: pass e.g. 'laion/clap-htsat-unfused', a folder written by "
                "save_pretrained, or a CLAPScorer"
            )
    if not isinstance(data, RatedPairs):
        raise UsageError(
            f"data must be a RatedPairs, got {type(data).__name__}: load it with "
            "humanclap.data.load_rated('relate:DIR' or a manifest path), or call "
            "run_evaluation(spec, ...) with the spec"
        )
    pairs = data.pairs.reset_index(drop=True)
    ids = [str(m) if _to_load(m) else m.info.model_id for m in models]
    labels = unique_names(list(labels) if labels is not None else [short_name(i) for i in ids])
    columns = unique_names([short_name(lbl) for lbl in labels], reserved=[*PAIR_OUTPUT_COLUMNS, "scored", "error"])

    # a manifest row whose audio/text was not a string (data.manifest): never scored
    problems = pairs["input_error"].tolist() if "input_error" in pairs else None
    runs = []
    for spec, label, column in zip(models, labels, columns):
        if _to_load(spec):
            scorer = load_scorer(str(spec), device=device, dtype=dtype)
        else:
            scorer = spec
        log.info("scoring %d pairs with %s (%s)", len(pairs), label, scorer.info.model_id)
        scores, errors, counts = score_pairs(
            scorer,
            pairs["audio"].tolist(),
            pairs["text"].tolist(),
            batch_size=batch_size,
            progress=progress,
            dist=dist,
            problems=problems,
        )
        runs.append(
            ModelRun(label, column, scorer.info.as_dict(), scores, errors, counts, protocol=scorer_protocol(scorer))
        )
        if _to_load(spec):
            del scorer  # free the weights before the next model is loaded
    for make_run in derived:
        runs.append(make_run(runs))

    scored = np.logical_and.reduce([np.isfinite(r.scores) for r in runs])
    result = EvaluationResult(
        dataset=data.name,
        pairs=pairs,
        runs=runs,
        scored=scored,
        metrics={},
        paired={},
        system_level={},
        n_boot=n_boot,
        seed=seed,
        data_spec=data_spec,
        split=",".join(map(str, pd.unique(pairs["split"]))) if "split" in pairs else "",
        paper=paper,
    )
    compute_metrics(result)
    return result


def compute_metrics(result: EvaluationResult) -> None:
    """Fill ``metrics``, ``paired`` and ``system_level`` from the runs' scores.

    Every number is computed on the pairs that *every* model scored, so the models are
    compared on the same pairs (the paired bootstrap needs that anyway).
    """
    mask = result.scored
    sub = result.pairs[mask].reset_index(drop=True)
    log.info("metrics on %d scored pairs (%d bootstrap resamples)", len(sub), result.n_boot)
    target = sub["human"].to_numpy(dtype=float)
    if result.dataset == "xacle":
        result.xacle_challenge = xacle_challenge_block(result.runs, result.pairs["human"].to_numpy(float), mask)
    for k, run in enumerate(result.runs):
        pred = run.scores[mask]
        result.metrics[run.label] = breakdowns(sub, pred, n_boot=result.n_boot, seed=result.seed)
        overall = result.metrics[run.label]["overall"]
        if "skipped" in overall:  # too few pairs: say "null", not just leave the keys out
            overall.update({name: None for name in METRIC_NAMES}, **{f"{name}_ci": None for name in METRIC_NAMES})
        result.system_level[run.label] = system_level_summary(sub, pred)
        if k == 0:
            continue
        ref = result.runs[0].scores[mask]
        result.paired[run.label] = {}
        if len(sub) < M.MIN_PAIRS:
            note = f"fewer than {M.MIN_PAIRS} scored pairs"
            result.paired[run.label]["overall"] = {
                metric: {"diff": None, "low": None, "high": None, "p_value": None, "note": note}
                for metric in METRIC_NAMES
            }
            continue
        for name in PAIRED_BREAKDOWNS:
            sel = subset_mask(sub, name)
            if sel.sum() >= M.MIN_PAIRS:
                result.paired[run.label][name] = {
                    metric: _paired(getattr(M, metric), pred[sel], ref[sel], target[sel], result.n_boot, result.seed)
                    for metric in METRIC_NAMES
                }


def paired_difference(result: EvaluationResult, label: str, reference: str, metric: str = "srcc") -> dict[str, Any]:
    """``metric(label) - metric(reference)`` with its paired-bootstrap CI and p, on the pairs
    every model scored, with the result's resamples and seed (the table's ``paired`` holds
    these against the first model only). Raises KeyError for an unknown label or metric."""
    if metric not in METRIC_NAMES:
        raise KeyError(f"unknown metric {metric!r}: one of {list(METRIC_NAMES)}")
    runs = {run.label: run for run in result.runs}
    mask = result.scored
    target = result.pairs[mask]["human"].to_numpy(dtype=float)
    if int(mask.sum()) < M.MIN_PAIRS:
        note = f"fewer than {M.MIN_PAIRS} scored pairs"
        return {"diff": None, "low": None, "high": None, "p_value": None, "note": note}
    pred, ref = runs[label].scores[mask], runs[reference].scores[mask]
    return _paired(getattr(M, metric), pred, ref, target, result.n_boot, result.seed)


def _paired(fn, pred: np.ndarray, ref: np.ndarray, target: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap of ``fn(pred) - fn(ref)``; a metric undefined on these pairs
    (constant input) gives a note instead of a number."""
    try:
        if n_boot == 0:  # no resamples asked for: the difference alone
            return {"diff": fn(pred, target) - fn(ref, target), "low": None, "high": None, "p_value": None}
        return M.paired_bootstrap(fn, pred, ref, target, n_boot=n_boot, seed=seed)
    except ValueError as exc:
        return {"diff": None, "low": None, "high": None, "p_value": None, "note": str(exc)}
