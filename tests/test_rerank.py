"""``humanclap rerank``: deterministic ties, the selection gain against brute force over all
k-subsets and a plain bootstrap loop, and the output contract for one file."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from humanclap.cli import main
from humanclap.evaluation.compare_stats import resample_counts
from humanclap.evaluation.rerank import candidate_order, selection_gain, sidecar_path
from humanclap.outputs import file_lock_path, output_lock


def test_ties_break_by_cosine_then_input_order():
    assert candidate_order([0.5, 0.7, 0.5], [0.5, 0.7, 0.6], [0, 1, 2]) == [1, 2, 0]
    # equal clipped scores (0) and equal cosines: the earlier row first
    assert candidate_order([0.0, 0.0, 0.0], [-0.2, -0.1, -0.1], [5, 9, 7]) == [2, 1, 0]
    assert candidate_order([0.3, 0.3], [None, 0.1], [0, 1]) == [1, 0]  # no cosine sorts last


def test_selection_gain_matches_brute_force_over_every_k_subset():
    rng = np.random.default_rng(0)
    ratings = [rng.integers(0, 11, size=n).astype(float) for n in (4, 5, 3, 6)]
    k = 2
    picked = [r[:k] for r in ratings]  # any pick works for the reference
    g = selection_gain(ratings, picked, k, n_boot=0)
    random_ref = np.mean([np.mean([np.mean(c) for c in itertools.combinations(r, k)]) for r in ratings])
    oracle_ref = np.mean([max(np.mean(c) for c in itertools.combinations(r, k)) for r in ratings])
    assert g["random"]["mean"] == pytest.approx(random_ref)
    assert g["oracle"]["mean"] == pytest.approx(oracle_ref)
    assert g["metric"]["mean"] == pytest.approx(np.mean([np.mean(p) for p in picked]))
    assert g["metric"]["ci_low"] is None  # n_boot=0


def test_selection_gain_cis_match_a_plain_bootstrap_loop():
    rng = np.random.default_rng(1)
    ratings = [rng.random(4) * 10 for _ in range(12)]
    picked = [np.array([r.max() if i % 3 else r.min()]) for i, r in enumerate(ratings)]
    g = selection_gain(ratings, picked, 1, n_boot=300, seed=4)
    idx = np.random.default_rng(4).integers(0, 12, size=(300, 12))
    counts = resample_counts(12, 300, 4)
    assert all((counts[b] == np.bincount(idx[b], minlength=12)).all() for b in range(300))
    gains = [np.mean([picked[i][0] - ratings[i].mean() for i in rows]) for rows in idx]
    lo, hi = np.quantile(gains, [0.025, 0.975])
    assert g["metric_minus_random"]["ci_low"] == pytest.approx(lo)
    assert g["metric_minus_random"]["ci_high"] == pytest.approx(hi)


def write_candidates(path: Path, rating: bool = True, failed: set = frozenset()) -> Path:
    """3 prompts x 3 candidates; prompt 1 has a score tie broken by cosine."""
    rows = [
        ("p0", "a0", 0.2, 0.2, 3),
        ("p0", "a1", 0.9, 0.9, 8),
        ("p0", "a2", 0.5, 0.5, 9),
        ("p1", "b0", 0.0, -0.3, 2),
        ("p1", "b1", 0.0, -0.1, 6),
        ("p1", "b2", 0.0, -0.1, 4),
        ("p2", "c0", 0.7, 0.7, 7),
        ("p2", "c1", 0.6, 0.6, 1),
        ("p2", "c2", 0.1, 0.1, 5),
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "audio", "clapscore", "cosine", "error"] + (["rating"] if rating else []))
        for text, audio, score, cos, r in rows:
            err = "corrupt file" if audio in failed else ""
            w.writerow([text, audio, "" if err else score, "" if err else cos, err] + ([r] if rating else []))
    return path


def test_rerank_picks_writes_and_measures_the_gain(tmp_path, capsys):
    src = write_candidates(tmp_path / "cand.csv")
    out = tmp_path / "best.csv"
    assert main(["rerank", str(src), "-o", str(out), "--n-boot", "200"]) == 0
    picks = list(csv.DictReader(open(out)))
    assert [(r["text"], r["audio"], r["rank_in_prompt"]) for r in picks] == [
        ("p0", "a1", "1"),
        ("p1", "b1", "1"),
        ("p2", "c0", "1"),
    ]
    meta = json.loads(sidecar_path(out).read_text())
    g = meta["selection_gain"]
    assert g["metric"]["mean"] == pytest.approx((8 + 6 + 7) / 3)
    assert g["random"]["mean"] == pytest.approx(np.mean([20 / 3, 4, 13 / 3]))
    assert g["oracle"]["mean"] == pytest.approx((9 + 6 + 7) / 3)
    assert "selection gain" in capsys.readouterr().out
    # top-2 as JSONL: the same order, two per prompt
    out2 = tmp_path / "best2.jsonl"
    assert main(["rerank", str(src), "-o", str(out2), "-k", "2", "--n-boot", "0"]) == 0
    rows = [json.loads(line) for line in out2.read_text().splitlines()]
    assert [r["audio"] for r in rows] == ["a1", "a2", "b1", "b2", "c0", "c1"]
    assert [r["rank_in_prompt"] for r in rows] == [1, 2] * 3
    # same input, same bytes
    before = out.read_bytes()
    assert main(["rerank", str(src), "-o", str(out), "--n-boot", "200", "--overwrite"]) == 0
    assert out.read_bytes() == before


def test_failed_rows_are_never_picked(tmp_path, capsys):
    src = write_candidates(tmp_path / "cand.csv", rating=False, failed={"a1"})
    out = tmp_path / "best.csv"
    assert main(["rerank", str(src), "-o", str(out)]) == 1
    assert [r["audio"] for r in csv.DictReader(open(out))] == ["a2", "b1", "c0"]
    captured = capsys.readouterr()
    assert "1 failed rows" in captured.err and "selection gain" not in captured.out


def test_the_output_contract_for_one_file(tmp_path, capsys):
    src = write_candidates(tmp_path / "cand.csv")
    foreign = tmp_path / "mine.csv"
    foreign.write_text("my,data\n1,2\n")
    for extra in ([], ["--overwrite"]):
        assert main(["rerank", str(src), "-o", str(foreign), *extra]) == 2
        assert "not written by humanclap rerank" in capsys.readouterr().err
    assert foreign.read_text() == "my,data\n1,2\n"
    assert main(["rerank", str(src), "-o", str(src), "--overwrite"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    out = tmp_path / "best.csv"
    assert main(["rerank", str(src), "-o", str(out)]) == 0
    assert main(["rerank", str(src), "-o", str(out)]) == 2  # its own, but no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    with output_lock(file_lock_path(out), "test"):
        assert main(["rerank", str(src), "-o", str(out), "--overwrite"]) == 2
        assert "another humanclap run" in capsys.readouterr().err
    assert main(["rerank", str(src), "-o", str(tmp_path / "x.txt")]) == 2
    assert main(["rerank", str(src), "-o", str(out), "-k", "0", "--overwrite"]) == 2
    assert "-k must be 1 or more" in capsys.readouterr().err
