"""The text tables, byte for byte: each expected string below is what the printer wrote
before the tables moved to ``evaluation/tables.py`` (the demo's table is a stability
promise), on fixed inputs that cover CIs, missing values, NaN, pipes and rows not run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from humanclap.evaluation.report import summary_table
from humanclap.evaluation.tables import Column, markdown_table, text_table
from humanclap.recipes.demo import DemoResult, demo_table
from humanclap.recipes.reproduce import MSCLAP_NOT_RUN, PAPER_SOURCE, PAPER_TABLE, ReproduceResult


def _m(n, srcc, lcc, ktau, mse, ci=True):
    d = {"n": n, "srcc": srcc, "lcc": lcc, "ktau": ktau, "mse": mse}
    for key in ("srcc", "lcc", "ktau", "mse"):
        d[f"{key}_ci"] = [d[key] - 0.05, d[key] + 0.05] if ci and d[key] is not None else None
    return d


METRICS = {
    "LAION CLAP": {"overall": _m(15, 0.2801, 0.31, -0.1234, 0.0812)},
    "Human-CLAP wSCE+MAE": {"overall": _m(15, 0.45678, None, 0.3333, float("nan"))},
    "x|y": {"overall": _m(7, -0.5, 1.0, 0.0, 0.25, ci=False)},
}
EVALUATION = SimpleNamespace(
    labels=list(METRICS), metrics=METRICS, pairs=list(range(17)), scored=np.array([True] * 15 + [False] * 2), n_failed=2
)


def test_summary_table_is_unchanged():
    assert summary_table(EVALUATION).split("\n") == [
        "model                     n    SRCC     LCC    KTAU     MSE",
        "LAION CLAP               15   0.280   0.310  -0.123   0.081",
        "Human-CLAP wSCE+MAE      15   0.457       –   0.333       –",
        "x|y                       7  -0.500   1.000   0.000   0.250",
        "17 pairs, 15 scored, 2 left out (missing/unreadable audio or empty text); MSE on the 0-1 scale",
    ]


def test_reproduce_table_is_unchanged():
    rows = [
        {"label": label, "paper": PAPER_TABLE[label], "note": note}
        for label, note in (("LAION CLAP", ""), ("MS CLAP", MSCLAP_NOT_RUN), ("Human-CLAP wSCE+MAE", ""))
    ]
    assert ReproduceResult(EVALUATION, {}, rows).table().split("\n") == [
        "model                    n    SRCC  paper     LCC  paper    KTAU  paper     MSE  paper",
        "LAION CLAP              15   0.280  0.280   0.310      –  -0.123      –   0.081      –",
        "MS CLAP                  –  not run: pip install msclap to enable (paper: SRCC 0.278, LCC 0.296, "
        "KTAU 0.192, MSE 0.078)",
        "Human-CLAP wSCE+MAE     15   0.457  0.457       –  0.481   0.333  0.320       –  0.057",
        "17 test pairs, 15 scored, 2 left out; MSE on the 0-1 scale; paper = " + PAPER_SOURCE,
    ]


def test_demo_table_is_unchanged():
    nat, syn = _m(5, 0.1, 0.2, 0.3, 0.4), _m(10, float("nan"), 0.2, 0.3, 0.4)
    demo = DemoResult(
        output_dir="x",
        seed=3,
        size="small",
        claim_holds=False,
        rows=[
            {
                "model": "base CLAP",
                "overall": _m(15, 0.2, 0.25, 0.1, 0.07),
                "natural": nat,
                "synthesized": syn,
                "srcc_diff_vs_base": None,
                "srcc_p_vs_base": None,
            },
            {
                "model": "Human-CLAP (wSCE+MAE)",
                "overall": _m(15, 0.31234, -0.25, 0.1, 0.0651, ci=False),
                "natural": nat,
                "synthesized": {},
                "srcc_diff_vs_base": 0.11234,
                "srcc_p_vs_base": 0.0123,
            },
            {
                "model": "Human-CLAP (MAE)",
                "overall": {"n": 15, "srcc": None, "lcc": 0.1, "ktau": 0.2, "mse": 0.3},
                "natural": nat,
                "synthesized": syn,
                "srcc_diff_vs_base": -0.05,
                "srcc_p_vs_base": 1.0,
            },
        ],
    )
    assert demo_table(demo).split("\n") == [
        "Test split of the synthetic RELATE (seed 3; simulated audio and listeners)",
        "model                    SRCC↑ [95% CI]           LCC↑  KTAU↑   MSE↓   SRCC nat. SRCC syn.   "
        "ΔSRCC vs base      p",
        "-" * 113,
        "base CLAP                0.200 [0.150, 0.250]    0.250  0.100  0.070       0.100       nan     "
        "(reference)       ",
        "Human-CLAP (wSCE+MAE)    0.312                  -0.250  0.100  0.065       0.100       nan     "
        "     +0.112  0.012",
        "Human-CLAP (MAE)         –                       0.100  0.200  0.300       0.100       nan     "
        "     -0.050  1.000",
        "n = 15 test pairs; MSE on the 0-1 scale; p: two-sided paired bootstrap on SRCC against the base",
        "claim 'Human-CLAP (wSCE+MAE) beats the base CLAP's SRCC with p < 0.05': does NOT hold",
    ]


def test_recipes_table_layout_and_a_run_without_resamples():
    """``demo --extended``'s second table; with --n-boot 0 the difference has no CI and no p."""
    from humanclap.recipes.demo import recipes_table

    base = {"model": "base CLAP", "overall": _m(15, 0.2, 0.25, 0.1, 0.07)}
    rows = [
        {**base, "srcc_diff_vs_base": None, "srcc_p_vs_base": None},
        {
            "model": "ListNet",
            "overall": _m(15, 0.3212, 0.3, 0.2, 0.06),
            "srcc_diff_vs_base": 0.1112,
            "srcc_p_vs_base": 0.002,
            "srcc_diff_vs_claim": 0.0431,
            "srcc_diff_vs_claim_ci": [0.0081, 0.0779],
            "srcc_p_vs_claim": 0.018,
        },
        {
            "model": "head: cMSE+0.5 pairwise",
            "overall": _m(15, 0.2312, 0.3, 0.2, 0.06),
            "srcc_diff_vs_base": 0.0201,
            "srcc_p_vs_base": None,
            "srcc_diff_vs_claim": -0.0483,
            "srcc_diff_vs_claim_ci": [None, None],
            "srcc_p_vs_claim": None,
        },
    ]
    demo = DemoResult(output_dir="x", seed=1, size="default", rows=rows, extended=True)
    assert recipes_table(demo).split("\n") == [
        "Recipes beyond the paper against Human-CLAP (wSCE+MAE) (seed 1; test split)",
        "recipe                    SRCC↑   ΔSRCC vs wSCE+MAE [95% CI]       p   ΔSRCC vs base      p",
        "-" * 91,
        "ListNet                   0.321   +0.043 [+0.008, +0.078]      0.018          +0.111  0.002",
        "head: cMSE+0.5 pairwise   0.231   -0.048                           –          +0.020      –",
        "p: two-sided paired bootstrap on SRCC (the same resamples as the table above)",
    ]


def test_text_table_widths_and_free_text_rows():
    cols = [Column("name", align="<"), Column("v", 4, sep=" | ")]
    out = text_table(
        cols, [["ab", "1"], ["a much longer note that spans"], ["abcdef", "22"]], title=["T"], rule="=", footer=["end"]
    )
    assert out.split("\n") == [
        "T",
        "name   |    v",
        "=" * 13,
        "ab     |    1",
        "a much longer note that spans",
        "abcdef |   22",
        "end",
    ]
    assert markdown_table(["a|b", "c"], [[1, "x|y"]]) == ["| a\\|b | c |", "|---|---|", "| 1 | x\\|y |"]
