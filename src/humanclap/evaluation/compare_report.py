"""The files of ``humanclap compare``: compare.json, compare.csv (one row per system),
pairs.csv (one row per pair), report.md and two plots (forest plot of the means, heatmap of
the win rates; matplotlib's Agg backend). Byte-identical for the same input and seed."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from humanclap import __version__
from humanclap.evaluation.compare import CompareResult
from humanclap.evaluation.compare_stats import TIER_RULE, SystemComparison
from humanclap.io import atomic_write, atomic_write_text, write_json

P_VALUE_RULE = (
    "paired bootstrap over prompts: the same resamples for every system; two-sided "
    "p = min(1, 2 min((#d*<=0 + 1)/(B+1), (#d*>=0 + 1)/(B+1))) for the resampled "
    "mean differences d*, Holm-adjusted across all pairs"
)
WIN_RULE = (
    "share of the shared prompts on which a scores higher than b; a tie (equal scores, "
    "e.g. both clipped to CLAPScore 0) counts as half a win"
)
AGREEMENT_RULE = (
    "system-level SRCC and Kendall tau-b between the metric's and the listeners' "
    "system means; pairwise accuracy: over the pairs of systems the listeners do "
    "not tie, the share the metric orders the same way (a metric tie counts half)"
)

Record = Callable[[str], None] | None


def num(x: Any, digits: int = 4) -> str:
    """A number for a table: fixed digits, ``–`` for None."""
    return "–" if x is None else f"{x:.{digits}f}"


def ci_text(s: dict[str, Any], digits: int = 3) -> str:
    if s.get("ci_low") is None:
        return f"{num(s['mean'], digits)} (no CI)"
    return f"{num(s['mean'], digits)} [{num(s['ci_low'], digits)}, {num(s['ci_high'], digits)}]"


def p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def comparison_record(c: SystemComparison) -> dict[str, Any]:
    return {
        "ranking": c.systems,
        "tiers": c.tiers,
        "pairs": c.pairs,
        "win_rates": {"systems": c.ranking, "matrix": c.win_rates},
        "notes": c.notes,
    }


def compare_record(result: CompareResult) -> dict[str, Any]:
    """compare.json: every number, the settings (seed, resamples) and the rules used."""

    m = result.metric
    record = {
        "command": "compare",
        "humanclap_version": __version__,
        "inputs": result.inputs,
        "model": result.model,
        "protocols": result.protocols,
        "score_column": result.score_column,
        "prompt_key": result.inputs[0]["prompt_key"] if result.inputs else None,
        "seed": m.seed,
        "n_boot": m.n_boot,
        "level": m.level,
        "alpha": m.alpha,
        "n_systems": len(m.names),
        "n_prompts": m.n_prompts,
        "dropped": result.table.dropped,
        "rules": {"tiers": TIER_RULE, "p_value": P_VALUE_RULE, "win_rate": WIN_RULE, "agreement": AGREEMENT_RULE},
        "metric": comparison_record(m),
        "listeners": None if result.listeners is None else comparison_record(result.listeners),
        "agreement": result.agreement,
        "notes": result.notes,
    }
    return record


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()


def systems_csv(result: CompareResult) -> str:
    header = ["rank", "tier", "system", "n_prompts", "mean", "ci_low", "ci_high"]
    human = {}
    if result.listeners is not None:
        header += ["human_rank", "human_tier", "human_mean", "human_ci_low", "human_ci_high"]
        human = {s["system"]: s for s in result.listeners.systems}
    rows = []
    for s in result.metric.systems:
        row = [s["rank"], s["tier"], s["system"], s["n_prompts"], s["mean"], s["ci_low"], s["ci_high"]]
        if human:
            h = human[s["system"]]
            row += [h["rank"], h["tier"], h["mean"], h["ci_low"], h["ci_high"]]
        rows.append(row)
    return _csv_text(header, rows)


def pairs_csv(result: CompareResult) -> str:
    keys = ["a", "b", "diff", "ci_low", "ci_high", "p", "p_holm", "significant", "wins", "ties", "losses", "win_rate"]
    return _csv_text(keys, [[p[k] for k in keys] for p in result.metric.pairs])


def markdown(result: CompareResult, plots: list[str]) -> str:
    m = result.metric
    key = result.inputs[0]["prompt_key"] if result.inputs else "text"
    lines = [
        "# Comparing systems",
        "",
        f"{len(m.names)} systems on {m.n_prompts} shared prompts (score column "
        f"`{result.score_column}`, prompts identified by `{key}`"
        + (f", scored with `{result.model}`" if result.model else "")
        + "). "
        f"{round(m.level * 100)}% CIs: percentile bootstrap over prompts, {m.n_boot} "
        f"resamples, seed {m.seed}.",
        "",
        *[f"Protocol (to cite with the numbers): `{line}`" for line in result.protocols],
        *([""] if result.protocols else []),
        "## Ranking",
        "",
    ]
    human = {} if result.listeners is None else {s["system"]: s for s in result.listeners.systems}
    head = "| rank | tier | system | mean [95% CI] |"
    rule = "|---|---|---|---|"
    if human:
        head += " listeners' mean [95% CI] | listeners' rank (tier) |"
        rule += "---|---|"
    lines += [head, rule]
    for s in m.systems:
        line = f"| {s['rank']} | {s['tier']} | {s['system']} | {ci_text(s)} |"
        if human:
            h = human[s["system"]]
            line += f" {ci_text(h)} | {h['rank']} ({h['tier']}) |"
        lines.append(line)
    lines += [
        "",
        f"**Tiers** (alpha {m.alpha}): {TIER_RULE}",
        "",
        "## Pairs",
        "",
        "| a | b | a − b [95% CI] | p | p (Holm) | win rate of a | wins / ties / losses |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in m.pairs:
        diff = {"mean": p["diff"], "ci_low": p["ci_low"], "ci_high": p["ci_high"]}
        star = " *" if p["significant"] else ""
        lines.append(
            f"| {p['a']} | {p['b']} | {ci_text(diff)} | {p_text(p['p'])} | "
            f"{p_text(p['p_holm'])}{star} | {num(p['win_rate'], 3)} | "
            f"{p['wins']} / {p['ties']} / {p['losses']} |"
        )
    lines += ["", f"p: {P_VALUE_RULE}; * Holm-adjusted p < {m.alpha}.", "", f"Win rate: {WIN_RULE}.", ""]
    if result.agreement is not None:
        a = result.agreement
        lines += [
            "## Agreement with the listeners",
            "",
            "| system-level SRCC | system-level KTAU | pairwise accuracy |",
            "|---|---|---|",
            f"| {num(a['srcc'], 3)} | {num(a['ktau'], 3)} | {num(a['pairwise_accuracy'], 3)} "
            f"({a['pairs_compared']} pairs) |",
            "",
            AGREEMENT_RULE + ".",
            "",
        ]
    if result.notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in result.notes] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_plots(result: CompareResult, out: Path, record: Record = None) -> list[str]:
    """forest.png (means with CIs, ranked, coloured by tier) and win_rates.png."""
    # lazy: keeps matplotlib out of `import humanclap.evaluation.compare_report`
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    # lazy: keeps matplotlib out of `import humanclap.evaluation.compare_report`
    import matplotlib.pyplot as plt

    m = result.metric
    names: list[str] = []

    def save(fig, name: str) -> None:
        if record is not None:
            record(name)
        # No "Software" entry: the bytes then depend on the numbers alone.
        atomic_write(out / name, lambda p: fig.savefig(p, format="png", dpi=100, metadata={"Software": None}))
        plt.close(fig)
        names.append(name)

    n = len(m.systems)
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.35 * n), layout="constrained")
    cmap = plt.get_cmap("tab10")
    for y, s in enumerate(m.systems):
        lo = s["mean"] - s["ci_low"] if s["ci_low"] is not None else 0
        hi = s["ci_high"] - s["mean"] if s["ci_high"] is not None else 0
        ax.errorbar(s["mean"], y, xerr=[[lo], [hi]], fmt="o", capsize=3, color=cmap((s["tier"] - 1) % 10))
    ax.set_yticks(range(n), [f"{s['system']} (tier {s['tier']})" for s in m.systems])
    ax.invert_yaxis()
    ax.set(
        xlabel=f"mean {result.score_column} ({round(m.level * 100)}% CI)", title=f"{n} systems on {m.n_prompts} prompts"
    )
    save(fig, "forest.png")

    w = np.array(m.win_rates)
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * n, 1.2 + 0.5 * n), layout="constrained")
    im = ax.imshow(w, cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(n), m.ranking, rotation=45, ha="right")
    ax.set_yticks(range(n), m.ranking)
    for i in range(n):
        for j in range(n):
            if i != j:
                ax.text(
                    j,
                    i,
                    f"{w[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(w[i, j] - 0.5) > 0.3 else "black",
                )
    ax.set(title="win rate of row over column (ties = ½)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    save(fig, "win_rates.png")
    return names


def write_compare(result: CompareResult, out: Path, plots: bool = True, record: Record = None) -> dict[str, Path]:
    """Write every file into ``out``; ``record(name)`` is called before each is written
    (the output contract's marker). Returns name -> path."""

    def put(name: str, text: str) -> Path:
        if record is not None:
            record(name)
        return atomic_write_text(out / name, text)

    files: dict[str, Path] = {}
    plot_names = write_plots(result, out, record) if plots else []
    files.update({p: out / p for p in plot_names})
    if record is not None:
        record("compare.json")
    files["compare.json"] = write_json(out / "compare.json", compare_record(result))
    files["compare.csv"] = put("compare.csv", systems_csv(result))
    files["pairs.csv"] = put("pairs.csv", pairs_csv(result))
    files["report.md"] = put("report.md", markdown(result, plot_names))
    return files


def summary_text(result: CompareResult) -> str:
    """The ranking as printed on stdout."""
    m = result.metric
    width = max(len(s) for s in m.names)
    lines = [
        f"{'rank':>4}  {'tier':>4}  {'system':<{width}}  mean [95% CI]" + ("   listeners" if result.listeners else "")
    ]
    human = {} if result.listeners is None else {s["system"]: s for s in result.listeners.systems}
    for s in m.systems:
        line = f"{s['rank']:>4}  {s['tier']:>4}  {s['system']:<{width}}  {ci_text(s)}"
        if human:
            line += f"   {ci_text(human[s['system']])} (rank {human[s['system']]['rank']})"
        lines.append(line)
    if result.agreement is not None:
        a = result.agreement
        lines.append(
            f"agreement with listeners: SRCC {num(a['srcc'], 3)}, KTAU {num(a['ktau'], 3)}, "
            f"pairwise accuracy {num(a['pairwise_accuracy'], 3)}"
        )
    return "\n".join(lines)
