"""The selection gain of evaluated models (demo, reproduce): per prompt (the pairs sharing a
text) the metric's top-1 against a random and the best pick, checked against a brute-force
computation on a small hand-made table with ties, unusable rows and one-candidate prompts."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from humanclap.evaluation.compare_stats import bootstrap_p
from humanclap.evaluation.rerank import (
    evaluation_selection_gain,
    models_selection_gain,
    selection_gain_markdown,
    selection_gain_table,
)

# prompt, human rating, base score, tuned score, usable (scored by every model)
TABLE = [
    ("a dog barks", 0.9, 0.30, 0.80, True),
    ("a dog barks", 0.2, 0.30, 0.10, True),  # ties the base's top score: the earlier row wins
    ("a dog barks", 0.5, 0.10, 0.40, True),
    ("rain falls", 0.1, 0.70, 0.20, True),
    ("rain falls", 0.6, 0.20, 0.20, True),  # tuned: a tie at the top, the earlier row (0.1)
    ("rain falls", 0.4, 0.10, 0.00, True),
    ("rain falls", 1.0, 0.90, 0.95, False),  # failed for one model: no candidate
    ("a bell rings", 0.7, 0.50, 0.50, True),  # a single candidate: no choice, left out
    ("wind blows", 0.3, 0.40, 0.60, True),
    ("wind blows", 0.8, 0.20, 0.70, True),
    ("a car passes", 0.5, 0.10, 0.10, True),
    ("a car passes", 0.6, 0.20, 0.30, False),  # unusable: leaves one candidate, left out
]


def _columns():
    prompts, ratings, base, tuned, usable = (list(c) for c in zip(*TABLE))
    return prompts, np.array(ratings), {"base": np.array(base), "tuned": np.array(tuned)}, np.array(usable)


def _brute_force(prompts, ratings, scores, usable):
    """Every prompt with 2+ usable candidates; the pick: the highest score, the first row of
    the highest (a plain loop); random: the mean over every candidate picked once."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        if usable[i]:
            groups.setdefault(p, []).append(i)
    kept = {p: rows for p, rows in groups.items() if len(rows) >= 2}
    out = {}
    for label, s in scores.items():
        pick = []
        for rows in kept.values():
            best = rows[0]
            for i in rows[1:]:
                if s[i] > s[best]:
                    best = i
            pick.append(ratings[best])
        out[label] = np.array(pick)
    random = np.array([np.mean([ratings[i] for i in rows]) for rows in kept.values()])
    oracle = np.array([max(ratings[i] for i in rows) for rows in kept.values()])
    return kept, out, random, oracle, len(groups) - len(kept)


def test_selection_gain_of_models_matches_brute_force():
    prompts, ratings, scores, usable = _columns()
    g = models_selection_gain(prompts, ratings, scores, usable=usable, n_boot=0)
    kept, picks, random, oracle, excluded = _brute_force(prompts, ratings, scores, usable)
    assert list(kept) == ["a dog barks", "rain falls", "wind blows"]
    assert g["n_prompts"] == 3 and g["n_prompts_excluded"] == excluded == 2  # a bell, a car
    assert g["n_candidates"] == 8 and g["candidates_per_prompt"] == [2, 3]
    assert g["n_rows_unusable"] == 2 and g["reference"] == "base"
    # the picks by hand: base 0.9 (tie, earlier row), 0.1, 0.3; tuned 0.9, 0.1 (tie), 0.8
    assert picks["base"].tolist() == [0.9, 0.1, 0.3] and picks["tuned"].tolist() == [0.9, 0.1, 0.8]
    for label in scores:
        m = g["models"][label]
        assert m["metric"]["mean"] == pytest.approx(picks[label].mean())
        assert m["random"]["mean"] == pytest.approx(random.mean())
        assert m["oracle"]["mean"] == pytest.approx(oracle.mean())
        assert m["captured"]["mean"] == pytest.approx(
            (picks[label].mean() - random.mean()) / (oracle.mean() - random.mean())
        )
        assert m["metric"]["ci_low"] is None  # n_boot=0
    assert g["models"]["base"]["n_tied_top"] == 1 and g["models"]["tuned"]["n_tied_top"] == 1
    assert "metric_minus_reference" not in g["models"]["base"]
    assert g["models"]["tuned"]["metric_minus_reference"]["mean"] == pytest.approx(
        (picks["tuned"] - picks["base"]).mean()
    )
    # random = the exact expectation: the mean over every pick of one candidate
    for rows, r in zip(kept.values(), random):
        assert np.mean([ratings[list(c)].mean() for c in itertools.combinations(rows, 1)]) == pytest.approx(r)


def test_bootstrap_cis_are_over_prompts_and_paired():
    prompts, ratings, scores, usable = _columns()
    g = models_selection_gain(prompts, ratings, scores, usable=usable, n_boot=500, seed=3)
    _, picks, random, oracle, _ = _brute_force(prompts, ratings, scores, usable)
    # the same seeded resamples of the 3 prompts as rerank's selection_gain (one count matrix)
    from humanclap.evaluation.compare_stats import percentile_interval, seeded_bootstrap_means

    diff = (picks["tuned"] - picks["base"])[None, :]
    boot = seeded_bootstrap_means(diff, 500, 3)
    low, high = percentile_interval(boot)
    vs = g["models"]["tuned"]["metric_minus_reference"]
    assert (vs["ci_low"], vs["ci_high"]) == pytest.approx((low[0], high[0]))
    assert vs["p_value"] == pytest.approx(float(bootstrap_p(boot)[0]))
    for label in scores:
        m = g["models"][label]
        assert m["metric"]["ci_low"] <= m["metric"]["mean"] <= m["metric"]["ci_high"]
        assert min(picks[label]) <= m["metric"]["ci_low"] and m["metric"]["ci_high"] <= max(picks[label])
    # every model sees the same candidates: the random and best picks are the same numbers
    assert g["models"]["base"]["random"] == g["models"]["tuned"]["random"]
    assert g["models"]["base"]["oracle"] == g["models"]["tuned"]["oracle"]


def test_from_an_evaluation_result_and_its_tables():
    prompts, ratings, scores, usable = _columns()
    pairs = pd.DataFrame({"text": prompts, "human": ratings})
    result = SimpleNamespace(
        pairs=pairs,
        scored=usable,
        n_boot=0,
        seed=0,
        runs=[SimpleNamespace(label=label, scores=np.where(usable, s, np.nan)) for label, s in scores.items()],
    )
    g = evaluation_selection_gain(result)
    assert g == models_selection_gain(prompts, ratings, scores, usable=usable, n_boot=0)
    table = selection_gain_table(g, "Selection gain on the test split")
    assert table.splitlines()[0].startswith("Selection gain on the test split: top-1")
    assert "3 prompts (left out: 2 with a single candidate)" in table and "(reference)" in table
    assert any(line.startswith("tuned ") and "0.600" in line for line in table.splitlines())
    md = "\n".join(selection_gain_markdown(g))
    assert md.startswith("## Selection gain") and "| tuned | 0.600 |" in md
    # nothing to choose from: said, not a crash
    none = models_selection_gain(["a", "b"], [0.1, 0.2], {"m": [0.3, 0.4]})
    assert none["n_prompts"] == 0 and none["n_prompts_excluded"] == 2 and none["models"] == {}
    assert "no prompt has more than 1 candidates" in selection_gain_table(none)


def test_input_checks():
    with pytest.raises(ValueError, match="one entry per row"):
        models_selection_gain(["a"], [0.1, 0.2], {"m": [0.1, 0.2]})
    with pytest.raises(ValueError, match="k must be"):
        models_selection_gain(["a"], [0.1], {"m": [0.1]}, k=0)
