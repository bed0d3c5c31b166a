"""Training targets (listener-z, screening) as pure functions on small hand-made tables,
plus the real RELATE metadata."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from humanclap.data.rated import RatedPairs, pairs_from_averages
from humanclap.errors import ConfigError
from humanclap.training.targets import (
    MIN_SHARED_PAIRS,
    listener_agreement,
    screen_listeners,
    standardise,
    training_targets,
)


def rated_from(rows: list[tuple[str, str, float]], split_of=None) -> RatedPairs:
    """(pair_id, listener_id, score01) rows -> RatedPairs whose ``human`` is the raw mean."""
    ratings = pd.DataFrame(rows, columns=["pair_id", "listener_id", "score01"])
    human = ratings.groupby("pair_id", sort=False)["score01"].mean()
    pairs = pd.DataFrame(
        {
            "pair_id": human.index,
            "human": human.to_numpy(),
            "split": [(split_of or {}).get(p, "train") for p in human.index],
        }
    )
    return RatedPairs("t", pairs, ratings)


def test_listener_z_by_hand():
    # listener A rates high (mean 0.8, std 0.1), B low (mean 0.2, std 0.1), C has one rating
    rows = [
        ("p1", "A", 0.9),
        ("p2", "A", 0.7),
        ("p1", "B", 0.3),
        ("p2", "B", 0.1),
        ("p3", "A", 0.8),
        ("p3", "B", 0.2),
        ("p3", "C", 0.5),
    ]
    got = training_targets(rated_from(rows), "train", "listener-z", min_ratings=2)
    scores = np.array([r[2] for r in rows])
    mu, sigma = scores.mean(), scores.std()  # the panel: all 7 training ratings
    std_a = np.std([0.9, 0.7, 0.8])
    z_a = {"p1": 0.1 / std_a, "p2": -0.1 / std_a, "p3": 0.0}
    z_b = z_a  # B is A shifted down by 0.6: the same z-scores
    expected = {p: mu + sigma * (z_a[p] + z_b[p]) / 2 for p in ("p1", "p2")}
    expected["p3"] = (2 * mu + 0.5) / 3  # A and B at their own mean (z 0) -> mu; C raw 0.5
    assert got.values.to_dict() == pytest.approx(expected, abs=1e-12)
    assert list(got.values.index) == ["p1", "p2", "p3"]
    r = got.report
    assert r["kind"] == "listener-z" and r["raw_listeners"] == ["C"] and r["z_scored_listeners"] == 2
    assert r["panel_mean"] == pytest.approx(mu, abs=1e-6) and r["clipped_to_0_1"] == 0
    assert "raw mean" in r["evaluation"]


def test_minimum_ratings_rule_and_constant_listeners_keep_raw_scores(caplog):
    rows = [
        ("p1", "A", 0.9),
        ("p2", "A", 0.7),
        ("p3", "A", 0.2),  # 3 ratings
        ("p1", "B", 0.4),
        ("p2", "B", 0.6),  # 2 ratings
        ("p1", "K", 0.5),
        ("p2", "K", 0.5),
        ("p3", "K", 0.5),
    ]  # 3 equal ratings
    ratings = rated_from(rows).ratings
    with caplog.at_level(logging.INFO, logger="humanclap.training.targets"):
        out, report = standardise(ratings, min_ratings=3)
    assert report["raw_listeners"] == ["B", "K"] and report["z_scored_listeners"] == 1
    assert "keep their raw scores" in caplog.text and "B, K" in caplog.text
    raw = out[out["listener_id"].isin(["B", "K"])]["score01"].tolist()
    assert raw == [0.4, 0.6, 0.5, 0.5, 0.5]
    a = out[out["listener_id"] == "A"]["score01"].to_numpy()
    z = (np.array([0.9, 0.7, 0.2]) - 0.6) / np.std([0.9, 0.7, 0.2])
    scores = np.array([s for *_, s in rows])
    assert a == pytest.approx(scores.mean() + scores.std() * z, abs=1e-12)
    # with min_ratings 2, B is z-scored too
    assert standardise(ratings, min_ratings=2)[1]["raw_listeners"] == ["K"]


def anti_table(n_pairs: int = 8) -> pd.DataFrame:
    """Three listeners who agree on n_pairs pairs and one ("0009") who rates them in reverse."""
    rng = np.random.default_rng(0)
    truth = np.linspace(0.1, 0.9, n_pairs)
    rows = []
    for k, t in enumerate(truth):
        for lid in ("0001", "0002", "0003"):
            rows.append((f"p{k}", lid, float(np.clip(t + rng.normal(0, 0.05), 0, 1))))
        rows.append((f"p{k}", "0009", float(1 - t)))
    rows.append(("solo", "0004", 0.7))  # a pair only 0004 rated: 0004 shares nothing
    return pd.DataFrame(rows, columns=["pair_id", "listener_id", "score01"])


def test_screening_drops_the_anti_correlated_listener():
    ratings = anti_table()
    agree = listener_agreement(ratings).set_index("listener_id")
    assert agree.loc["0009", "agreement"] == pytest.approx(-1.0)
    assert (agree.loc[["0001", "0002", "0003"], "agreement"] > 0.8).all()
    assert agree.loc["0009", "shared_pairs"] == 8 and agree.loc["0004", "shared_pairs"] == 0
    # independent check of one leave-one-out mean: 0001's others on p0
    p0 = ratings[ratings["pair_id"] == "p0"].set_index("listener_id")["score01"]
    from scipy.stats import spearmanr

    own = ratings[ratings["listener_id"] == "0001"].set_index("pair_id")["score01"]
    others = {
        p: ratings[(ratings["pair_id"] == p) & (ratings["listener_id"] != "0001")]["score01"].mean() for p in own.index
    }
    assert agree.loc["0001", "agreement"] == pytest.approx(
        spearmanr(own.to_numpy(), [others[p] for p in own.index])[0], abs=1e-12
    )
    assert p0.drop("0001").mean() == pytest.approx(others["p0"])

    kept, report = screen_listeners(ratings, 0.0)
    assert set(kept["listener_id"]) == {"0001", "0002", "0003", "0004"}
    assert report["dropped"] == [{"listener_id": "0009", "agreement": -1.0, "shared_pairs": 8}]
    assert report["judged"] == 4 and report["not_judged"] == 1 and report["ratings_dropped"] == 8
    # too few shared pairs: nobody can be judged, nobody is dropped
    small = anti_table(MIN_SHARED_PAIRS - 1)
    assert screen_listeners(small, 0.0)[1]["dropped"] == []


def test_screening_then_targets_and_pairs_left_without_ratings():
    ratings = anti_table()
    ratings.loc[len(ratings)] = ("only9", "0009", 0.3)  # a pair only the dropped listener rated
    rated = RatedPairs(
        "t", pd.DataFrame({"pair_id": list(dict.fromkeys(ratings["pair_id"])), "human": 0.0, "split": "train"}), ratings
    )
    got = training_targets(rated, "train", "mean", screen=0.0)
    assert "only9" not in got.values.index and got.report["pairs_without_ratings"] == 1
    kept = ratings[ratings["listener_id"] != "0009"]
    assert got.values["p3"] == pytest.approx(kept[kept["pair_id"] == "p3"]["score01"].mean())
    assert got.report["screening"]["dropped"][0]["listener_id"] == "0009"
    # ids stay strings: "0009", never 9
    assert isinstance(got.report["screening"]["dropped"][0]["listener_id"], str)


def test_mean_targets_are_the_raw_human_means_and_other_splits_are_untouched():
    rows = [("a", "1", 0.2), ("a", "2", 0.4), ("b", "1", 0.9), ("v", "1", 0.1), ("v", "2", 0.5)]
    rated = rated_from(rows, split_of={"v": "validation"})
    got = training_targets(rated, "train")
    assert got.values.to_dict() == pytest.approx({"a": 0.3, "b": 0.9}) and got.report["kind"] == "mean"
    z = training_targets(rated, "train", "listener-z", min_ratings=2)
    assert set(z.values.index) == {"a", "b"}  # the validation pair's ratings are not used


@pytest.mark.parametrize("kind,screen", [("listener-z", None), ("mean", 0.0)])
def test_data_without_listener_ids_is_refused(kind, screen):
    info = pd.DataFrame(
        {
            "pair_id": ["a", "b"],
            "wavname": "",
            "audio": "",
            "audio_exists": False,
            "text": "",
            "system": "",
            "natural": np.nan,
            "split": "train",
        }
    )
    averages = pairs_from_averages("xacle", info, np.array([0.2, 0.4]))
    with pytest.raises(ConfigError, match="per-listener ratings.*per-pair averages only"):
        training_targets(averages, "train", kind, screen, data_name="xacle:X")
    blank = rated_from([("a", "", 0.2), ("b", "", 0.4)])  # a manifest without listener_id
    with pytest.raises(ConfigError, match="2 of 2 training ratings have no listener_id"):
        training_targets(blank, "train", kind, screen)


def test_real_relate_listener_z_and_screening():
    from conftest import RELATE_DIR

    if not (RELATE_DIR / "scores" / "REL.csv").is_file():  # CI (.ci/run) fails loudly instead
        pytest.skip(f"real RELATE metadata not found at {RELATE_DIR} (the shared data checkout)")

    from humanclap.data import load_rated

    rated = load_rated(f"relate:{RELATE_DIR}")
    got = training_targets(rated, "train", "listener-z", screen=0.0, min_ratings=5)
    r = got.report
    assert r["train_pairs"] == 2862 and r["train_ratings"] == 9963
    assert ((got.values >= 0) & (got.values <= 1)).all()
    assert len(got.values) + r["pairs_without_ratings"] == 2862
    assert all(isinstance(d["listener_id"], str) and len(d["listener_id"]) == 4 for d in r["screening"]["dropped"])
    assert all(d["agreement"] < 0 for d in r["screening"]["dropped"])
    # z-scored targets still follow the raw means closely (same pairs, same listeners)
    train = rated.pairs[rated.pairs["split"] == "train"].set_index("pair_id")["human"]
    assert np.corrcoef(got.values, train.reindex(got.values.index))[0, 1] > 0.8
