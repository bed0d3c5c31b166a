"""Scoring at scale, part A: bounded memory and decoder worker processes (issue 10, items 1-2).

Memory is tested on the data structures' bounds, not on RSS: a 2,000 vs 20,000-row RSS
comparison with a tiny model takes minutes on a loaded 2-core machine and is noisy;
``benchmarks/bench_memory.py`` measures RSS. Here: the embedding maps never exceed their
capacity while a run evicts and re-embeds, the output bytes stay those of an unbounded run,
the summary keeps no list, and resume/select stream. Workers: a file that kills its decoder
process gets that row's error; the other rows score exactly as in-process decoding does.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import noise_clip, write_wav

from humanclap.cli import main


def manifest(folder: Path, n: int, files: int, name: str = "m.csv", extra: dict | None = None) -> Path:
    """``n`` rows over ``files`` short wavs (repeats far apart) and ``n`` distinct texts."""
    for i in range(files):
        if not (folder / f"c{i}.wav").exists():
            write_wav(folder / f"c{i}.wav", noise_clip(0.3, seed=i))
    rows = [{"audio": f"c{i % files}.wav", "text": f"sound number {i}", "id": str(i)} for i in range(n)]
    for i, row in (extra or {}).items():
        rows[i] = row
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text", "id"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def scorer(tiny_unfused):
    from humanclap.scoring.clap.scorer import CLAPScorer

    return CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")


def small_job(monkeypatch, scorer, cap: int, batch_size: int = 4, workers: int = 0):
    """A ScoreJob whose engine keeps at most ``cap`` texts and ``cap`` files."""
    from humanclap.scoring import job as job_mod

    monkeypatch.setattr(job_mod, "TEXT_LRU", cap)
    monkeypatch.setattr(job_mod, "AUDIO_LRU", cap)
    job = job_mod.ScoreJob(scorer, batch_size=batch_size, workers=workers)
    engine = job.engine
    peaks = {"text": 0, "audio": 0}
    embed_prepared, embed_texts = engine.embed_prepared, engine.embed_texts

    def watch_prepared(prep):
        embed_prepared(prep)
        peaks["audio"] = max(peaks["audio"], len(engine.audio_emb) + len(engine.audio_err))

    def watch_texts(texts):
        embed_texts(texts)
        peaks["text"] = max(peaks["text"], len(engine.text_emb))

    engine.embed_prepared, engine.embed_texts = watch_prepared, watch_texts
    return job, peaks


def test_embeddings_stay_within_their_bounds_and_scores_do_not_change(scorer, tmp_path, monkeypatch):
    from humanclap.scoring.job import ScoreJob

    m = manifest(tmp_path, 120, files=40)
    before = m.read_bytes()
    ref = tmp_path / "ref.csv"
    big = ScoreJob(scorer, batch_size=4).run(m, ref, progress=False)
    job, peaks = small_job(monkeypatch, scorer, cap=16)
    out = tmp_path / "small.csv"
    summary = job.run(m, out, progress=False)
    assert out.read_bytes() == ref.read_bytes() and m.read_bytes() == before
    # 16 texts / files at most (each map is bounded by its capacity), although the run saw
    # 120 texts and 40 files; the files repeated 40 rows apart were embedded again
    assert 0 < peaks["text"] <= 16 and 0 < peaks["audio"] <= 16
    assert job.engine.decoded == 120 and big.scored == summary.scored == 120
    # the summary is a running mean/variance: no list of scores, the same numbers
    assert type(summary.scores).__name__ == "RunningStats" and len(summary.scores) == 120
    assert summary.mean_ci() == pytest.approx(big.mean_ci(), abs=1e-12)
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["rows"] == 120 and meta["scored"] == 120


def test_welford_summary_equals_the_two_pass_numbers():
    import numpy as np
    from scipy.stats import t

    from humanclap.scoring.summary import ScoreSummary

    xs = list(np.random.default_rng(0).uniform(0, 0.6, 1000))
    mean, lo, hi = ScoreSummary(scores=xs).mean_ci()
    half = t.ppf(0.975, 999) * np.std(xs, ddof=1) / np.sqrt(1000)
    assert mean == pytest.approx(np.mean(xs), abs=1e-12)
    assert (lo, hi) == pytest.approx((np.mean(xs) - half, np.mean(xs) + half), abs=1e-12)


@pytest.mark.parametrize("fmt,lookahead", [("csv", 256), ("jsonl", 256), ("csv", 6)])
def test_streaming_resume_is_byte_identical_with_evictions(scorer, tiny_unfused, tmp_path, monkeypatch, fmt, lookahead):
    # lookahead 256: one block of texts larger than the text LRU (16); 6: blocks of two
    # 4-row steps, so the resume cuts land inside and between blocks
    from humanclap.scoring import job as job_mod

    monkeypatch.setattr(job_mod, "TEXT_LOOKAHEAD", lookahead)
    m = manifest(tmp_path, 30, files=7)
    before = m.read_bytes()
    full = tmp_path / f"full.{fmt}"
    assert (
        main(["score", str(m), "--model", str(tiny_unfused), "--device", "cpu", "-o", str(full), "--batch-size", "4"])
        == 0
    )
    data = full.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    part = tmp_path / f"part.{fmt}"
    for cut in (0, ends[0], ends[9] - 5, ends[13], len(data) - 3):
        part.write_bytes(data[:cut])
        shutil.copy(f"{full}.meta.json", f"{part}.meta.json")
        job, _ = small_job(monkeypatch, scorer, cap=8, batch_size=4)
        summary = job.run(m, part, resume=True, progress=False)
        assert part.read_bytes() == data, cut
        assert summary.scored == 30 and summary.rows == 30
    assert m.read_bytes() == before


def test_select_scores_only_the_chosen_rows(scorer, tmp_path):
    """The API the torchrun/--shard work builds on: rows where select(i) holds, in order,
    summary and meta over them; a resumed shard is byte-identical too."""
    from humanclap.scoring.job import ScoreJob

    m = manifest(tmp_path, 11, files=5)
    full = tmp_path / "full.jsonl"
    ScoreJob(scorer, batch_size=3).run(m, full, progress=False)
    lines = full.read_bytes().splitlines(keepends=True)
    parts = []
    for k in range(3):
        part = tmp_path / f"part{k}.jsonl"
        summary = ScoreJob(scorer, batch_size=3).run(m, part, progress=False, select=lambda i, k=k: i % 3 == k)
        assert part.read_bytes() == b"".join(lines[k::3])
        assert summary.rows == summary.scored == len(lines[k::3])
        assert json.loads(Path(f"{part}.meta.json").read_text())["rows"] == len(lines[k::3])
        parts.append(part.read_bytes())
    part = tmp_path / "part1.jsonl"
    part.write_bytes(parts[1][: len(lines[1]) + 7])  # one row and a cut one
    summary = ScoreJob(scorer, batch_size=3).run(m, part, resume=True, progress=False, select=lambda i: i % 3 == 1)
    assert part.read_bytes() == parts[1] and summary.resumed == 1


def test_worker_crash_marks_its_row_and_the_others_score(tmp_path, tiny_unfused, monkeypatch, capsys):
    from humanclap.scoring.decode import CRASH_HOOK_ENV

    write_wav(tmp_path / "crashme.wav", noise_clip(0.3, seed=99))  # a good file: the hook kills
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wav")
    m = manifest(
        tmp_path,
        12,
        files=4,
        extra={
            3: {"audio": "crashme.wav", "text": "a crash", "id": "3"},
            7: {"audio": "corrupt.wav", "text": "a corrupt file", "id": "7"},
        },
    )
    before = m.read_bytes()
    monkeypatch.setenv(CRASH_HOOK_ENV, "crashme")
    ref, out = tmp_path / "ref.csv", tmp_path / "out.csv"
    args = ["score", str(m), "--model", str(tiny_unfused), "--device", "cpu", "--batch-size", "4"]
    assert main([*args, "-o", str(ref), "--workers", "0"]) == 1  # in-process: no hook
    capsys.readouterr()
    assert main([*args, "-o", str(out), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "scored: 10  failed: 2" in err and "Traceback" not in err
    got = list(csv.DictReader(out.open(encoding="utf-8")))
    want = list(csv.DictReader(ref.open(encoding="utf-8")))
    assert "decoder process crashed" in got[3]["error"] and "crashme.wav" in got[3]["error"]
    assert got[3]["clapscore"] == "" and want[3]["error"] == ""
    assert got[7]["error"] == want[7]["error"] != ""  # the same message as in-process
    for i in set(range(12)) - {3}:
        assert got[i] == want[i], i  # same bits through the worker processes
    assert m.read_bytes() == before


def test_workers_flag_is_checked(tmp_path, tiny_unfused, capsys):
    m = manifest(tmp_path, 2, files=1)
    code = main(["score", str(m), "--model", str(tiny_unfused), "--workers", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "--workers must be 0" in err and "Traceback" not in err


def test_default_workers():
    from humanclap.scoring.decode import default_workers

    assert default_workers("cpu", 2) == 0 and default_workers("cpu", 16) == 4
    assert default_workers("cuda:0", 2) == 1 and default_workers("cuda", 16) == 4


def test_a_hanging_decoder_times_out_and_the_pool_goes_on(scorer, tmp_path, monkeypatch):
    """A worker stuck on a file is killed after the timeout: that file's error, the files
    queued behind it (same pool, later batch) still decode, nothing hangs."""
    from humanclap.scoring.decode import HANG_HOOK_ENV, DecoderPool, featurizer_of

    files = [
        str(write_wav(tmp_path / f"{n}.wav", noise_clip(0.3, seed=i)))
        for i, n in enumerate(["a", "stuck", "b", "c", "d"])
    ]
    monkeypatch.setenv(HANG_HOOK_ENV, "stuck")
    with DecoderPool(featurizer_of(scorer), workers=2, timeout=8) as pool:
        got = list(pool.run([(0, files[:3]), (1, files[3:])]))
    assert [tag for tag, _ in got] == [0, 1]
    results = {**got[0][1], **got[1][1]}
    assert "took longer than 8 s" in str(results[files[1]][1]), results[files[1]]
    assert all(results[f][0] == "ok" for f in files if "stuck" not in f), results
    assert pool.restarts >= 1


def test_the_summary_line_never_prints_nan():
    """No rows scored, one row, many rows: the mean line says what is known, never 'nan'."""
    from humanclap.scoring.summary import ScoreSummary

    assert "none (no row scored)" in ScoreSummary(scores=[]).text()
    one = ScoreSummary(scores=[0.25]).text()
    assert "mean CLAPScore: 0.2500  95% CI undefined for one scored row  (n=1)" in one
    many = ScoreSummary(scores=[0.2, 0.3, 0.4]).text()
    assert "mean CLAPScore: 0.3000  95% CI [" in many and "(n=3)" in many
    assert not any("nan" in s.lower() for s in (ScoreSummary(scores=[]).text(), one, many))
