"""What a demo run measured (:class:`DemoResult`) and the tables it prints: the paper-style
table, ``--extended``'s recipes table and the selection gain. Their layout is a stability
promise (README, tests/test_tables.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from humanclap.evaluation.tables import MISSING, Column, text_table

CLAIM_LABEL = "Human-CLAP (wSCE+MAE)"  # the row the claim and the recipes are about


@dataclass
class DemoResult:
    """What a demo run measured (also written to ``demo_summary.json``)."""

    output_dir: str
    seed: int
    size: str
    rows: list[dict] = field(default_factory=list)  # one per model: metrics + paired test vs base
    claim_holds: bool = False  # wSCE+MAE beats the base's SRCC with paired p < 0.05
    tv_natural: float = float("nan")
    tv_synthesized: float = float("nan")
    seconds: dict = field(default_factory=dict)
    # per model: its top-1 clip per prompt vs a random and the best pick (rerank.models_selection_gain)
    selection_gain: dict | None = None
    extended: bool = False  # the recipes' rows too (each also paired against wSCE+MAE)


GAIN_TITLE = "Selection gain on the test split"


def gain_table(demo: DemoResult) -> str:
    """The second table: each model's best-of-N pick on the test split (after the main one)."""
    from humanclap.evaluation.rerank import selection_gain_table

    return selection_gain_table(demo.selection_gain, f"{GAIN_TITLE} (seed {demo.seed})")


def _ci(m: dict, key: str) -> str:
    value, ci = m.get(key), m.get(f"{key}_ci")
    if value is None:
        return MISSING
    if not ci or ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _num(x, spec: str = ".3f") -> str:
    # NaN prints as "nan" (a subset too small to score), None (undefined) as "–"
    return MISSING if x is None else format(x, spec)


# The demo table's layout is a stability promise (README, tests/test_tables.py): widths,
# alignment and separators below must not change.
DEMO_COLUMNS = (
    Column("model", 24, "<"),
    Column("SRCC↑ [95% CI]", 22, "<", " "),
    Column("LCC↑", 6, sep=" "),
    Column("KTAU↑", 6, sep=" "),
    Column("MSE↓", 6, sep=" "),
    Column("SRCC nat.", 9, sep="   "),
    Column("SRCC syn.", 9, sep=" "),
    Column("ΔSRCC vs base", 13, sep="   "),
    Column("p", 6, sep=" "),
)


def demo_table(demo: DemoResult) -> str:
    """The paper-style table: test split, 95% bootstrap CIs, paired p-values vs the base."""
    nan = float("nan")
    rows = []
    for r in demo.rows:
        o = r["overall"]
        diff, p = r["srcc_diff_vs_base"], r["srcc_p_vs_base"]
        rows.append(
            [
                r["model"],
                _ci(o, "srcc"),
                _num(o.get("lcc", nan)),
                _num(o.get("ktau", nan)),
                _num(o.get("mse", nan)),
                _num(r["natural"].get("srcc", nan)),
                _num(r["synthesized"].get("srcc", nan)),
                *((_num(diff, "+.3f"), _num(p)) if diff is not None else ("(reference)", "")),
            ]
        )
    verdict = "holds" if demo.claim_holds else "does NOT hold"
    return text_table(
        DEMO_COLUMNS,
        rows,
        rule="-",
        title=[f"Test split of the synthetic RELATE (seed {demo.seed}; simulated audio and listeners)"],
        footer=[
            f"n = {demo.rows[0]['overall'].get('n')} test pairs; MSE on the 0-1 scale; p: two-sided "
            "paired bootstrap on SRCC against the base",
            f"claim 'Human-CLAP (wSCE+MAE) beats the base CLAP's SRCC with p < 0.05': {verdict}",
        ],
    )


RECIPE_COLUMNS = (
    Column("recipe", 24, "<"),
    Column("SRCC↑", 6, sep=" "),
    Column("ΔSRCC vs wSCE+MAE [95% CI]", 27, "<", "   "),
    Column("p", 6, sep=" "),
    Column("ΔSRCC vs base", 13, sep="   "),
    Column("p", 6, sep=" "),
)


def recipes_table(demo: DemoResult) -> str:
    """``--extended``: each recipe against Human-CLAP (wSCE+MAE) and against the base."""
    rows = []
    for r in demo.rows:
        if "srcc_diff_vs_claim" not in r:
            continue
        low, high = r["srcc_diff_vs_claim_ci"]
        diff = _num(r["srcc_diff_vs_claim"], "+.3f")
        ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
        rows.append(
            [
                r["model"],
                _num(r["overall"].get("srcc")),
                diff + ci,
                _num(r["srcc_p_vs_claim"]),
                _num(r["srcc_diff_vs_base"], "+.3f"),
                _num(r["srcc_p_vs_base"]),
            ]
        )
    return text_table(
        RECIPE_COLUMNS,
        rows,
        rule="-",
        title=[f"Recipes beyond the paper against {CLAIM_LABEL} (seed {demo.seed}; test split)"],
        footer=["p: two-sided paired bootstrap on SRCC (the same resamples as the table above)"],
    )
