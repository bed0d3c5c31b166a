"""``humanclap compare``: the statistics against independent references (hand-computed Holm,
exact bootstrap by enumeration, plain loops), then the command on real files."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import noise_clip, write_wav

from humanclap.cli import main
from humanclap.evaluation.compare_stats import (
    assign_tiers,
    bootstrap_means,
    bootstrap_p,
    compare_matrix,
    holm,
    ranking_agreement,
    resample_counts,
    win_rate_matrix,
)
from humanclap.outputs import MARKER


# -- statistics ----------------------------------------------------------------------
def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04)
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02])  # None: not a test
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])  # capped at 1, kept monotone
    assert holm([0.9, 0.9, 0.9]) == pytest.approx([1.0, 1.0, 1.0])


def test_resample_counts_and_means_match_a_plain_loop():
    n, b, seed = 7, 50, 3
    idx = np.random.default_rng(seed).integers(0, n, size=(b, n))  # the documented draw
    counts = resample_counts(n, b, seed)
    assert counts.shape == (b, n) and (counts.sum(axis=1) == n).all()
    values = np.random.default_rng(1).random((3, n))
    means = bootstrap_means(values, counts)
    for r in range(b):
        assert (counts[r] == np.bincount(idx[r], minlength=n)).all()
        for s in range(3):
            assert means[r, s] == pytest.approx(np.mean([values[s, i] for i in idx[r]]))


def test_bootstrap_p_and_ci_match_the_exact_bootstrap_by_enumeration():
    """Five prompts: all 5^5 resamples enumerated give the exact bootstrap distribution of
    the paired mean difference; the Monte Carlo values must be close to it."""
    a = np.array([0.61, 0.40, 0.55, 0.52, 0.47])
    b = np.array([0.50, 0.45, 0.41, 0.49, 0.43])
    d = a - b
    d_int = np.round(d * 100).astype(int)  # exact arithmetic: a resampled sum of 0 is 0
    exact = np.array([d_int[list(r)].sum() for r in itertools.product(range(5), repeat=5)]) / 500
    p_exact = min(1.0, 2 * min(np.mean(exact <= 0), np.mean(exact >= 0)))
    res = compare_matrix(np.stack([a, b]), ["a", "b"], n_boot=40_000, seed=0)
    pair = res.pairs[0]
    assert (pair["a"], pair["b"]) == ("a", "b") and pair["diff"] == pytest.approx(d.mean())
    assert pair["p"] == pytest.approx(p_exact, abs=0.01)

    # The exact distribution is lumpy (steps of 0.002): a limit is right when the exact
    # probability below it brackets 2.5% / 97.5%, give or take Monte Carlo noise (sd 0.0008).
    def brackets(dist, x, q):
        return np.mean(dist < x - 1e-9) - 0.003 <= q <= np.mean(dist <= x + 1e-9) + 0.003

    assert brackets(exact, pair["ci_low"], 0.025) and brackets(exact, pair["ci_high"], 0.975)
    a_int = np.round(a * 100).astype(int)
    exact_a = np.array([a_int[list(r)].sum() for r in itertools.product(range(5), repeat=5)]) / 500
    sys_a = next(s for s in res.systems if s["system"] == "a")
    assert brackets(exact_a, sys_a["ci_low"], 0.025) and brackets(exact_a, sys_a["ci_high"], 0.975)


def test_bootstrap_p_conventions():
    assert float(bootstrap_p(np.zeros(99))) == 1.0  # identical systems
    assert float(bootstrap_p(np.ones(99))) == pytest.approx(2 / 100)  # never 0
    res = compare_matrix(np.array([[0.3, 0.5, 0.2], [0.3, 0.5, 0.2]]), ["x", "y"], n_boot=200)
    assert res.pairs[0]["p"] == 1.0 and res.pairs[0]["p_holm"] == 1.0 and res.pairs[0]["win_rate"] == 0.5


def test_win_rates_count_ties_as_half():
    v = np.array([[0.0, 0.5, 0.9, 0.2], [0.0, 0.4, 1.0, 0.1]])
    w = win_rate_matrix(v)
    assert w[0, 1] == pytest.approx((2 + 0.5) / 4) and w[1, 0] == pytest.approx((1 + 0.5) / 4)
    assert np.diag(w) == pytest.approx([0.5, 0.5])
    pair = compare_matrix(v, ["a", "b"], n_boot=100).pairs[0]
    assert (pair["wins"], pair["ties"], pair["losses"]) == (2, 1, 1) and pair["win_rate"] == 0.625


def test_tiers_greedy_from_the_top():
    # order 0 > 1 > 2 > 3; 1 ties with 0; 2 differs from 0 -> new tier at 2; 3 ties with 2
    adj = {(0, 1): 0.2, (0, 2): 0.01, (0, 3): 0.001, (1, 2): 0.04, (1, 3): 0.01, (2, 3): 0.5}
    assert assign_tiers([0, 1, 2, 3], adj) == {0: 1, 1: 1, 2: 2, 3: 2}
    # a system after a significant one never goes back to the earlier tier
    adj2 = {(0, 1): 0.01, (0, 2): 0.3, (1, 2): 0.9}
    assert assign_tiers([0, 1, 2], adj2) == {0: 1, 1: 2, 2: 2}
    assert assign_tiers([0, 1], {(0, 1): None}) == {0: 1, 1: 1}  # undefined p: same tier


def test_ranking_agreement_by_hand():
    got = ranking_agreement([0.5, 0.4, 0.4, 0.1], [9.0, 7.0, 8.0, 8.0])
    # listener-untied pairs: (0,1) ok, (0,2) ok, (0,3) ok, (1,2) metric tie 0.5, (1,3) wrong
    assert got["pairs_compared"] == 5 and got["pairwise_accuracy"] == pytest.approx(3.5 / 5)
    from scipy import stats

    assert got["srcc"] == pytest.approx(stats.spearmanr([0.5, 0.4, 0.4, 0.1], [9, 7, 8, 8])[0])
    two = ranking_agreement([0.2, 0.1], [1.0, 2.0])
    assert two["srcc"] is None and two["notes"] and two["pairwise_accuracy"] == 0.0


def test_one_prompt_has_no_ci_and_no_p():
    res = compare_matrix(np.array([[0.4], [0.2]]), ["a", "b"], n_boot=100)
    assert res.systems[0]["ci_low"] is None and res.pairs[0]["p"] is None
    assert res.tiers == [["a", "b"]] and "one prompt only" in res.notes[0]


# -- the command ---------------------------------------------------------------------
def write_scores(
    path: Path,
    systems: dict[str, float],
    n: int = 20,
    seed: int = 0,
    rating: bool = False,
    with_system: bool = True,
    skip: set = frozenset(),
    failed: set = frozenset(),
) -> Path:
    rng = np.random.default_rng(seed)
    cols = (["system"] if with_system else []) + ["text", "audio", "clapscore", "cosine", "error"]
    cols += ["score"] if rating else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for s, mu in systems.items():
            for p in range(n):
                if (s, p) in skip:
                    continue
                v = round(max(0.0, mu + 0.1 * rng.standard_normal()), 6)
                err = "file not found" if (s, p) in failed else ""
                row = ([s] if with_system else []) + [
                    f"prompt {p}",
                    f"{s}/{p}.wav",
                    "" if err else v,
                    "" if err else v,
                    err,
                ]
                row += [round(10 * mu + rng.standard_normal(), 3)] if rating else []
                w.writerow(row)
    return path


def test_compare_writes_every_file_deterministically(tmp_path, capsys):
    src = write_scores(tmp_path / "s.csv", {"good": 0.6, "bad": 0.2, "same": 0.59}, rating=True)
    argv = [str(src), "--n-boot", "2000", "--seed", "7"]
    assert main(["compare", *argv, "-o", str(tmp_path / "a")]) == 0
    assert main(["compare", *argv, "-o", str(tmp_path / "b"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "agreement with listeners" in out
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("compare.json", "compare.csv", "pairs.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "forest.png").stat().st_size > 0 and (a / "win_rates.png").exists()
    assert not (b / "forest.png").exists()
    record = json.loads((a / "compare.json").read_text())
    assert record["seed"] == 7 and record["n_boot"] == 2000 and record["n_prompts"] == 20
    ranking = record["metric"]["ranking"]
    assert ranking[-1]["system"] == "bad" and ranking[-1]["tier"] == 2
    assert {r["system"] for r in ranking if r["tier"] == 1} == {"good", "same"}
    assert record["agreement"]["pairwise_accuracy"] is not None
    assert record["listeners"]["ranking"][-1]["system"] == "bad"
    marker = json.loads((a / MARKER).read_text())
    assert set(marker["files"]) == {
        "forest.png",
        "win_rates.png",
        "compare.json",
        "compare.csv",
        "pairs.csv",
        "report.md",
    }
    report = (a / "report.md").read_text()
    assert "ties" in report and "Holm" in report and "![forest.png](forest.png)" in report
    # An earlier run is replaced only with --overwrite; a foreign folder never.
    assert main(["compare", *argv, "-o", str(a)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["compare", *argv, "-o", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_one_score_file_per_system(tmp_path):
    a = write_scores(tmp_path / "sysA.csv", {"x": 0.6}, with_system=False, seed=1)
    b = write_scores(tmp_path / "sysB.csv", {"x": 0.3}, with_system=False, seed=2)
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "o"), "--n-boot", "500", "--no-plots"]) == 0
    record = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert record["metric"]["tiers"] == [["sysA"], ["sysB"]]


def test_input_problems_are_refused_with_what_to_do(tmp_path, capsys):
    o = str(tmp_path / "o")
    common = ["-o", o, "--n-boot", "200", "--no-plots"]
    missing = write_scores(tmp_path / "m.csv", {"a": 0.5, "b": 0.4}, skip={("b", 3), ("b", 4)})
    assert main(["compare", str(missing), *common]) == 2
    err = capsys.readouterr().err
    assert "2 of 20 prompts are missing" in err and "--intersect" in err
    assert not Path(o).exists()
    assert main(["compare", str(missing), *common, "--intersect"]) == 0
    assert "2 of 20 prompts are not scored for every system" in capsys.readouterr().err
    assert json.loads((Path(o) / "compare.json").read_text())["n_prompts"] == 18

    failed = write_scores(tmp_path / "f.csv", {"a": 0.5, "b": 0.4}, failed={("a", 0)})
    assert main(["compare", str(failed), *common[:1], str(tmp_path / "f"), *common[2:]]) == 1
    assert "1 of 40 rows failed" in capsys.readouterr().err and not (tmp_path / "f").exists()
    assert main(["compare", str(failed), "-o", str(tmp_path / "f"), *common[2:], "--drop-failed"]) == 1
    assert json.loads((tmp_path / "f" / "compare.json").read_text())["n_prompts"] == 19

    dup = tmp_path / "d.csv"
    lines = missing.read_text().splitlines()
    dup.write_text("\n".join(lines + [lines[1]]) + "\n")  # a's prompt 0 twice
    assert main(["compare", str(dup), "-o", str(tmp_path / "d"), *common[2:], "--intersect"]) == 2
    assert "--average-duplicates" in capsys.readouterr().err
    assert (
        main(["compare", str(dup), "-o", str(tmp_path / "d"), *common[2:], "--intersect", "--average-duplicates"]) == 0
    )

    one = write_scores(tmp_path / "one.csv", {"a": 0.5})
    assert main(["compare", str(one), "-o", str(tmp_path / "x"), *common[2:]]) == 2
    assert "at least two" in capsys.readouterr().err
    manifest = tmp_path / "man.csv"
    manifest.write_text("system,text,audio\na,t,x.wav\n")
    assert main(["compare", str(manifest), "-o", str(tmp_path / "y")]) == 2
    assert "pass --model M" in capsys.readouterr().err


def test_single_shared_prompt_says_no_ci(tmp_path, capsys):
    src = write_scores(tmp_path / "s.csv", {"a": 0.5, "b": 0.4}, n=1)
    assert main(["compare", str(src), "-o", str(tmp_path / "o"), "--no-plots"]) == 0
    assert "(no CI)" in capsys.readouterr().out
    assert "one prompt only" in (tmp_path / "o" / "report.md").read_text()


def test_compare_scores_a_manifest_with_a_model(tmp_path, tiny_unfused, one_thread, capsys):
    rows = ["system,text,audio"]
    for s, seed in (("tone", 0), ("noise", 5)):
        for p, text in enumerate(["a dog barks", "rain falls", "a bell rings"]):
            write_wav(tmp_path / "gen" / s / f"{p}.wav", noise_clip(0.5, seed=seed + p))
            rows.append(f"{s},{text},{s}/{p}.wav")
    manifest = tmp_path / "gen" / "prompts.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(manifest),
                "--model",
                str(tiny_unfused),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--n-boot",
                "300",
                "--no-plots",
            ]
        )
        == 0
    )
    scores = list(csv.DictReader(open(out / "scores.csv")))
    assert len(scores) == 6 and all(r["error"] == "" for r in scores)
    record = json.loads((out / "compare.json").read_text())
    assert record["model"] == str(tiny_unfused) and record["n_prompts"] == 3
    means = {r["system"]: r["mean"] for r in record["metric"]["ranking"]}
    for s in ("tone", "noise"):
        assert means[s] == pytest.approx(np.mean([float(r["clapscore"]) for r in scores if r["system"] == s]))
    assert {"scores.csv", "scores.csv.meta.json"} <= set(json.loads((out / MARKER).read_text())["files"])


def test_many_prompts_are_resampled_in_bounded_chunks():
    from humanclap.evaluation.compare_stats import chunk_rows, seeded_bootstrap_means

    assert chunk_rows(1000) == 1000 and chunk_rows(5000) == 800 and chunk_rows(10**7) == 1
    values = np.random.default_rng(0).random((2, 5000))
    chunked = seeded_bootstrap_means(values, 1000, 3)  # two chunks of draws
    assert chunked == pytest.approx(bootstrap_means(values, resample_counts(5000, 1000, 3)))


def test_the_readme_example_runs(tmp_path):
    """README "Comparing systems": the example that needs no model, run as a user would
    (bash, in a fresh folder), with `humanclap` spelled as this interpreter's module."""
    import re
    import shlex
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Comparing systems") :]
    block = re.search(r"Try it without a model:\n\n```bash\n(.*?)```", section, re.S).group(1)
    script = block.replace("humanclap ", f"{shlex.quote(sys.executable)} -m humanclap.cli ")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "A" in proc.stdout and (tmp_path / "cmp" / "compare.json").is_file()
