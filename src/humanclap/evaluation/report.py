"""Write an evaluation to disk: predictions.csv, metrics.json, report.md and PNG plots.

Every file is written to a temporary name in the output folder and renamed into place,
so an interrupted run never leaves a half-written file that looks complete. Plots use
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path

import numpy as np

from humanclap.evaluation.evaluate import METRIC_NAMES, MSE_NOTE, EvaluationResult
from humanclap.evaluation.tables import Column, fmt, markdown_table, text_table
from humanclap.evaluation.xacle_metrics import NAMES as XACLE_NAMES
from humanclap.io import atomic_write, atomic_write_text, write_json

ARROWS = {"srcc": "SRCC↑", "lcc": "LCC↑", "ktau": "KTAU↑", "mse": "MSE↓"}
MAX_LISTED_FAILURES = 50  # the report lists this many; predictions.csv has them all


def write_report(
    result: EvaluationResult, output_dir: str | Path, plots: bool = True, record: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Write predictions.csv, metrics.json, report.md and the plots; returns name -> path.

    ``record(name)`` is called before each file is written (the output contract's
    :meth:`humanclap.outputs.RunFolder.record`: what a later ``--overwrite`` may delete)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = record or (lambda name: None)
    files: dict[str, Path] = {}
    preds = result.predictions()  # %.9g below: float32 scores round-trip exactly
    record("predictions.csv")
    files["predictions"] = atomic_write(
        out / "predictions.csv", lambda p: preds.to_csv(p, index=False, float_format="%.9g")
    )
    record("metrics.json")
    files["metrics"] = write_json(out / "metrics.json", result.to_json())
    if plots and result.scored.any():  # nothing scored: an empty scatter would only mislead
        files.update(write_plots(result, out, record))
    record("report.md")
    files["report"] = atomic_write_text(out / "report.md", markdown(result, files))
    return files


def summary_table(result: EvaluationResult) -> str:
    """Plain-text table of the overall metrics (printed at the end of a CLI run)."""
    columns = [Column("model", align="<"), Column("n", 6), *(Column(k.upper(), 6) for k in METRIC_NAMES)]
    rows = [
        [lbl, str(m["n"]), *(fmt(m.get(k)) for k in METRIC_NAMES)]
        for lbl, m in ((lbl, result.metrics[lbl]["overall"]) for lbl in result.labels)
    ]
    footer = [
        f"{len(result.pairs)} pairs, {int(result.scored.sum())} scored, "
        f"{result.n_failed} left out (missing/unreadable audio or empty text); "
        "MSE on the 0-1 scale"
    ]
    reason = getattr(result, "reason", None)  # duck-typed results (tests, recipes) may lack it
    if reason is not None:
        footer.append(reason)
    table = text_table(columns, rows, footer=footer)
    challenge = getattr(result, "xacle_challenge", None)
    return table if challenge is None else table + "\n\n" + xacle_text_table(challenge)


def xacle_text_table(challenge: dict) -> str:
    """The XACLE challenge's metrics per model (XACLE-layout data), titled with their scale."""
    models = challenge["models"]
    columns = [Column("model", align="<"), Column("N", 6), *(Column(k, 6) for k in XACLE_NAMES)]
    rows = [[lbl, str(m["N"]), *(fmt(m[k]) for k in XACLE_NAMES)] for lbl, m in models.items()]
    return text_table(columns, rows, title=[challenge["title"]], footer=[challenge["mapping"]])


def xacle_markdown(challenge: dict) -> list[str]:
    """The report's section of the XACLE challenge's metrics."""
    rows = [[lbl, str(m["N"]), *(fmt(m[k]) for k in XACLE_NAMES)] for lbl, m in challenge["models"].items()]
    return [
        "",
        f"## {challenge['title']}",
        "",
        f"Beside ours above (MSE on the 0–1 scale): {challenge['mapping']}. Source: {challenge['source']}.",
        "",
        *markdown_table(["model", "N", *(f"{k} (0–10)" if k == "MSE" else k for k in XACLE_NAMES)], rows),
    ]


# -- formatting ----------------------------------------------------------------------


def fmt_ci(m: dict, key: str) -> str:
    value = fmt(m.get(key))
    ci = m.get(f"{key}_ci")
    if value == "–" or ci is None or not all(c is not None and np.isfinite(c) for c in ci):
        return value
    return f"{value} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _breakdown_names(result: EvaluationResult, prefix: str) -> list[str]:
    names: dict[str, None] = {}
    for per_model in result.metrics.values():
        names.update((k, None) for k in per_model if k.startswith(prefix))
    return list(names)


def overall_table(result: EvaluationResult) -> list[str]:
    """The paper-style table: rows are models, SRCC/LCC/KTAU/MSE with 95 % CIs."""
    paper = result.paper or {}
    header = ["model", "n"]
    for k in METRIC_NAMES:
        header += [ARROWS[k]] + ([f"{ARROWS[k]} (paper)"] if paper else [])
    rows = []
    for lbl in result.labels:
        m = result.metrics[lbl]["overall"]
        row = [lbl, str(m.get("n", ""))]
        for k in METRIC_NAMES:
            row += [fmt_ci(m, k)] + ([fmt(paper.get(lbl, {}).get(k))] if paper else [])
        rows.append(row)
    for lbl, p in paper.items():  # published rows we did not evaluate
        if lbl not in result.metrics:
            rows.append([f"{lbl} (paper only)", "–", *chain.from_iterable((" ", fmt(p.get(k))) for k in METRIC_NAMES)])
    return markdown_table(header, rows)


def subset_table(result: EvaluationResult, names: list[str]) -> list[str]:
    rows = []
    for name in names:
        for lbl in result.labels:
            m = result.metrics[lbl].get(name)
            if m:
                rows.append([name.split(":", 1)[-1], lbl, str(m.get("n", ""))] + [fmt_ci(m, k) for k in METRIC_NAMES])
    return markdown_table(["subset", "model", "n"] + [ARROWS[k] for k in METRIC_NAMES], rows)


def wide_table(result: EvaluationResult, names: list[str], first: str) -> list[str]:
    """Rows are subsets (systems, categories), columns SRCC [CI] and MSE per model."""
    header = [first, "n", *chain.from_iterable((f"{lbl} SRCC↑", f"{lbl} MSE↓") for lbl in result.labels)]
    rows = []
    for name in names:
        ms = [result.metrics[lbl].get(name, {}) for lbl in result.labels]
        n = next((m.get("n") for m in ms if m), "")
        rows.append(
            [name.split(":", 1)[-1], str(n), *chain.from_iterable((fmt_ci(m, "srcc"), fmt(m.get("mse"))) for m in ms)]
        )
    return markdown_table(header, rows)


def paired_table(result: EvaluationResult) -> list[str]:
    rows = []
    for lbl, per_subset in result.paired.items():
        for subset, per_metric in per_subset.items():
            cells = []
            for k in METRIC_NAMES:
                d = per_metric.get(k, {})
                cells.append(
                    f"{fmt(d.get('diff'), 3)} [{fmt(d.get('low'))}, {fmt(d.get('high'))}] p={fmt(d.get('p_value'), 3)}"
                )
            rows.append([lbl, subset] + cells)
    return markdown_table(["model", "subset"] + [f"Δ{ARROWS[k]}" for k in METRIC_NAMES], rows)


def system_level_table(result: EvaluationResult) -> list[str]:
    keys: dict[str, None] = {}
    for d in result.system_level.values():
        keys.update((k, None) for k, v in d.items() if _is_number(v))

    def cell(v) -> str:
        return fmt(v) if isinstance(v, float) else ("–" if v is None else str(v))

    rows = [[lbl] + [cell(d.get(k)) for k in keys] for lbl, d in result.system_level.items()]
    return markdown_table(["model", *keys], rows)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def markdown(result: EvaluationResult, files: dict[str, Path] | None = None) -> str:
    """The report as Markdown (plots are linked by file name, relative to the report)."""
    files = files or {}
    n, ok = len(result.pairs), int(result.scored.sum())
    reason = getattr(result, "reason", None)
    lines = [
        "# Human-CLAP evaluation report",
        "",
        (
            f"* Data: `{result.data_spec or result.dataset}` ({result.dataset}), split "
            f"`{result.split or 'all'}`: {n} pairs, {ok} scored, **{n - ok} left out** "
            "(missing/unreadable audio or empty text; listed below)."
        ),
        (
            f"* 95 % confidence intervals: percentile bootstrap over pairs, {result.n_boot} "
            f"resamples, seed {result.seed}."
            if result.n_boot
            else "* No confidence intervals (run with n_boot = 0)."
        ),
        f"* {MSE_NOTE} In short: **MSE on the 0–1 scale**.",
        "",
        *([f"**No metric computed**: {reason}.", ""] if reason else []),
        "## Models",
        "",
        *markdown_table(
            ["label", "column", "model id", "revision"],
            [[r.label, r.column, r.info.get("model_id", ""), r.info.get("revision", "")] for r in result.runs],
        ),
        *protocol_lines([(r.label, r.protocol) for r in result.runs]),
    ]
    if ok:  # with no scored pair every metric table would be a grid of dashes
        lines += _metric_sections(result, files)
    failed = result.failed()
    lines += ["", f"## Pairs left out ({len(failed)})", ""]
    if failed:
        key = "wavname" if "wavname" in failed[0] else "audio"
        lines += markdown_table(
            [key, "text", "error"], [[f[key], f["text"], f["error"]] for f in failed[:MAX_LISTED_FAILURES]]
        )
        if len(failed) > MAX_LISTED_FAILURES:
            lines += [
                "",
                (f"… and {len(failed) - MAX_LISTED_FAILURES} more: see the `error` column of predictions.csv."),
            ]
    else:
        lines.append("None: every pair was scored by every model.")
    return "\n".join(lines) + "\n"


def protocol_lines(protocols: list[tuple[str, str]]) -> list[str]:
    """The citation lines of a report's models (``scoring.citation``: what a paper pastes so
    that its numbers can be compared); nothing when none is known."""
    known = [(label, line) for label, line in protocols if line]
    if not known:
        return []
    return [
        "",
        "Protocol (one line per model, to cite with the numbers):",
        "",
        *[f"* {label}: `{line}`" for label, line in known],
    ]


def _metric_sections(result: EvaluationResult, files: dict[str, Path]) -> list[str]:
    """Overall, paired, subset, system and category tables and the plots of the report."""
    lines = ["", "## Overall", "", *overall_table(result)]
    if result.paper:
        lines += [
            "",
            ("*(paper)* columns: published numbers, for comparison; ours are computed on the pairs scored here."),
        ]
    if getattr(result, "xacle_challenge", None) is not None:
        lines += xacle_markdown(result.xacle_challenge)
    if result.paired:
        lines += [
            "",
            f"## Paired differences against {result.labels[0]}",
            "",
            (
                "Difference (model − reference) with a paired-bootstrap 95 % CI and "
                "two-sided p-value; for MSE a negative difference is better."
            ),
            "",
            *paired_table(result),
        ]
    lines += [
        "",
        "## Natural vs synthesized",
        "",
        *subset_table(result, [s for s in ("overall", "natural", "synthesized") if s in _breakdown_names(result, "")]),
    ]
    systems = _breakdown_names(result, "system:")
    if systems:
        lines += ["", "## Per system", "", *wide_table(result, systems, "system")]
    if result.system_level:
        lines += [
            "",
            "## System level",
            "",
            "Correlation between per-system means of prediction and human score.",
            "",
            *system_level_table(result),
        ]
    categories = _breakdown_names(result, "category:")
    if categories:
        lines += ["", "## Per category", "", *wide_table(result, categories, "category")]
    plots = [(k, p) for k, p in files.items() if p.suffix == ".png"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots]
    return lines


# -- plots ---------------------------------------------------------------------------
def write_plots(result: EvaluationResult, out: Path, record: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Scatter per model, per-system SRCC bars, score histograms; returns name -> path."""
    # lazy: keeps matplotlib out of `import humanclap.evaluation.report`
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    # lazy: keeps matplotlib out of `import humanclap.evaluation.report`
    import matplotlib.pyplot as plt

    files: dict[str, Path] = {}
    mask = result.scored
    sub = result.pairs[mask]
    human = sub["human"].to_numpy(dtype=float)
    systems = sub["system"].fillna("").astype(str).to_numpy() if "system" in sub else np.full(len(sub), "")
    names = sorted(set(systems))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(names)}

    def save(fig, name: str) -> None:
        if record is not None:
            record(f"{name}.png")
        files[name] = atomic_write(out / f"{name}.png", lambda p: fig.savefig(p, format="png", dpi=100))
        plt.close(fig)

    for run in result.runs:
        pred = run.scores[mask]
        fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
        for s in names:
            sel = systems == s
            ax.scatter(human[sel], pred[sel], s=10, alpha=0.6, color=colours[s], label=s or "unknown")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        srcc = result.metrics[run.label]["overall"].get("srcc")
        ax.set(
            xlabel="human score (0–1)", ylabel="CLAPScore", xlim=(-0.02, 1.02), title=f"{run.label}: SRCC {fmt(srcc)}"
        )
        if any(names):
            ax.legend(fontsize=7, markerscale=1.5, title="system", title_fontsize=7)
        save(fig, f"scatter_{run.column}")

    systems_bd = _breakdown_names(result, "system:")
    if systems_bd:
        fig, ax = plt.subplots(
            figsize=(max(5.0, 0.4 * len(systems_bd) * (1 + len(result.runs))), 4), layout="constrained"
        )
        width = 0.8 / len(result.runs)
        x = np.arange(len(systems_bd))
        for k, run in enumerate(result.runs):
            vals, err = [], [[], []]
            for name in systems_bd:
                m = result.metrics[run.label].get(name, {})
                v = m.get("srcc")
                v = float(v) if v is not None and np.isfinite(v) else np.nan
                lo, hi = m.get("srcc_ci") or (np.nan, np.nan)
                vals.append(v)
                err[0].append(v - lo if np.isfinite(v) and lo is not None and np.isfinite(lo) else 0)
                err[1].append(hi - v if np.isfinite(v) and hi is not None and np.isfinite(hi) else 0)
            ax.bar(x + (k - (len(result.runs) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=run.label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, [s.split(":", 1)[1] for s in systems_bd], rotation=30, ha="right")
        ax.set(ylabel="SRCC (95 % CI)", title="Per-system SRCC")
        ax.legend(fontsize=7)
        save(fig, "per_system_srcc")

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    bins = np.linspace(0, 1, 26)
    ax.hist(human, bins=bins, alpha=0.5, label="human", color="black")
    for run in result.runs:
        ax.hist(run.scores[mask], bins=bins, alpha=0.45, label=run.label)
    ax.set(xlabel="score (0–1)", ylabel="pairs", title="Human and predicted scores")
    ax.legend(fontsize=7)
    save(fig, "histograms")
    return files
