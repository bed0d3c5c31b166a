"""`humanclap score`: row order, exit codes, resume, cache, stdout.

Most runs call the CLI in-process (``humanclap.cli.main``: the same parser, error mapping
and exit codes, without a new interpreter importing torch each time); two go through the
real entry point in a subprocess: a successful run writing JSONL to stdout, and the run
that is killed mid-write and then resumed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import noise_clip, write_wav

from humanclap.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def humanclap_subprocess(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """The real entry point, ``python -m humanclap.cli``, in a new interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "humanclap.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def humanclap(*args: str) -> SimpleNamespace:
    """``humanclap ARGS`` in-process: exit code, stdout and stderr like a CompletedProcess.
    (Redirects rather than capsys, so module-scoped fixtures can use it too.)"""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*map(str, args)])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """24 rows: shared texts and shared files, a missing file, an empty text, a corrupt file."""
    root = tmp_path_factory.mktemp("job")
    texts = ["a dog barks", "rain falls on a roof", "a bell rings", "music plays"]
    rows = []
    for i in range(20):
        name = f"clips/c{i % 12}.wav"  # files 0..7 appear twice, with different texts
        write_wav(root / name, noise_clip(0.3 + 0.05 * (i % 12), seed=i % 12))
        rows.append({"audio": name, "text": texts[i % 4], "id": f"r{i:02d}"})
    (root / "clips/corrupt.wav").write_bytes(b"not audio at all")
    rows.insert(5, {"audio": "clips/missing.wav", "text": "a dog barks", "id": "bad-missing"})
    rows.insert(9, {"audio": "clips/c1.wav", "text": "", "id": "bad-empty-text"})
    rows.insert(13, {"audio": "clips/corrupt.wav", "text": "a bell rings", "id": "bad-corrupt"})
    rows.append({"audio": str((root / "clips/c3.wav").resolve()), "text": "music plays", "id": "absolute"})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "text", "id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def full_runs(manifest, tiny_unfused, tmp_path_factory) -> dict:
    """Uninterrupted runs (batch 2) that the other tests compare against."""
    out = tmp_path_factory.mktemp("full")
    runs = {}
    for fmt in ("csv", "jsonl"):
        path = out / f"full.{fmt}"
        res = humanclap("score", manifest, "--model", tiny_unfused, "-o", path, "--batch-size", "2")
        runs[fmt] = (path, res)
    return runs


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rows_keep_order_columns_and_errors(manifest, tiny_unfused, full_runs, tmp_path):
    out, res = full_runs["csv"]
    assert res.returncode == 1, res.stderr  # three rows failed, the rest scored
    rows, inputs = read_csv(out), read_csv(manifest)
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    assert list(rows[0]) == ["audio", "text", "id", "clapscore", "cosine", "error"]
    errors = {r["id"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"bad-missing", "bad-empty-text", "bad-corrupt"}
    assert "file not found" in errors["bad-missing"] and "unreadable" in errors["bad-corrupt"]
    for r in rows:
        if not r["error"]:
            assert float(r["clapscore"]) == max(float(r["cosine"]), 0.0)
    assert "rows: 24  scored: 21  failed: 3" in res.stderr
    assert "mean CLAPScore" in res.stderr and "95% CI" in res.stderr and "revision: sha256:" in res.stderr
    meta = json.loads(out.with_name("full.csv.meta.json").read_text())
    assert meta["model"]["revision"].startswith("sha256:") and meta["failed"] == 3
    # the same file scored in two rows with different texts: same audio, same batch-free score
    by_id = {r["id"]: r for r in rows}
    single = humanclap("score", manifest, "--model", tiny_unfused, "-o", tmp_path / "b1.csv", "--batch-size", "1")
    assert single.returncode == 1
    for r in read_csv(tmp_path / "b1.csv"):
        if not r["error"]:
            assert abs(float(r["cosine"]) - float(by_id[r["id"]]["cosine"])) < 1e-5


def test_exit_codes(manifest, tiny_unfused, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(
            json.dumps({"audio": str(manifest.parent / f"clips/c{i}.wav"), "text": "a dog", "k": i}) + "\n"
            for i in range(3)
        )
    )
    ok = humanclap_subprocess("score", good, "--model", tiny_unfused)
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(x) for x in ok.stdout.splitlines()]  # JSONL on stdout without -o
    assert [x["k"] for x in lines] == [0, 1, 2] and all(x["error"] == "" for x in lines)
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("audio,caption\na.wav,hi\n")
    res = humanclap("score", no_text, "--model", tiny_unfused)
    assert res.returncode == 2 and "lacks column(s) text" in res.stderr
    assert res.stderr.startswith("humanclap score: error: ") and res.stderr.count("\n") == 1
    assert humanclap("score", tmp_path / "absent.csv", "--model", tiny_unfused).returncode == 2
    res = humanclap("score", good, "--model", tiny_unfused, "--batch-size", "0")
    assert res.returncode == 2 and "--batch-size must be at least 1" in res.stderr
    res = humanclap("score", good, "--bogus-flag")
    assert res.returncode == 2 and "unrecognized arguments: --bogus-flag" in res.stderr  # argparse's
    res = humanclap("score", good, "--model", tmp_path / "no_model_here")
    assert res.returncode == 2 and "not a CLAP checkpoint folder" in res.stderr
    res = humanclap("score", good, "--model", "laion/clap-htsat-unfused")  # no network here
    assert res.returncode == 2 and "pass a local folder" in res.stderr and "Traceback" not in res.stderr
    assert humanclap("score", good, "--model", tiny_unfused, "--resume").returncode == 2
    assert humanclap("score", "--help").returncode == 0


def test_resume_after_kill_gives_the_same_file(manifest, tiny_unfused, full_runs, tmp_path):
    full = full_runs["jsonl"][0]
    part = tmp_path / "part.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "humanclap.cli",
            "score",
            str(manifest),
            "--model",
            str(tiny_unfused),
            "-o",
            str(part),
            "--batch-size",
            "2",
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 4):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = part.read_text().count("\n")
    assert written >= 4
    # also simulate a line cut mid-write
    with open(part, "a") as f:
        f.write('{"audio": "clips/c9.wav", "te')
    res = humanclap("score", manifest, "--model", tiny_unfused, "-o", part, "--batch-size", "2", "--resume")
    assert res.returncode == 1, res.stderr
    assert part.read_bytes() == full.read_bytes()
    assert "resumed after" in res.stderr
    # a CSV output resumes the same way
    full_csv, part_csv = full_runs["csv"][0], tmp_path / "part.csv"
    lines = full_csv.read_text().splitlines(keepends=True)
    part_csv.write_text("".join(lines[:7]) + lines[7][:10])
    shutil.copy(full_csv.with_name("full.csv.meta.json"), tmp_path / "part.csv.meta.json")
    humanclap("score", manifest, "--model", tiny_unfused, "-o", part_csv, "--resume", "--batch-size", "2")
    assert part_csv.read_bytes() == full_csv.read_bytes()


def test_resume_refuses_another_model(manifest, tiny_fused, full_runs, tmp_path):
    out = tmp_path / "s.jsonl"
    shutil.copy(full_runs["jsonl"][0], out)
    shutil.copy(full_runs["jsonl"][0].with_name("full.jsonl.meta.json"), tmp_path / "s.jsonl.meta.json")
    res = humanclap("score", manifest, "--model", tiny_fused, "-o", out, "--resume")
    assert res.returncode == 2 and "drop --resume" in res.stderr


def test_cache_makes_the_second_run_free_and_identical(manifest, tiny_unfused, tmp_path):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    humanclap("score", manifest, "--model", tiny_unfused, "-o", a, "--cache", cache)
    res = humanclap("score", manifest, "--model", tiny_unfused, "-o", b, "--cache", cache)
    assert a.read_bytes() == b.read_bytes()
    # 12 distinct decodable files + 4 distinct texts all come from the cache
    assert "cache hits: 16" in res.stderr
