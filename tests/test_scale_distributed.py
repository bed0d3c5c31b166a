"""Scoring in parts: torchrun ranks and ``--shard K/N`` + ``humanclap merge`` give the bytes of
one process; merge refuses parts that cannot be joined; evaluate under torchrun equals one
process. torchrun runs are real subprocesses (2 CPU ranks, gloo, a tiny model)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import noise_clip, write_wav
from test_score_cli import humanclap

from humanclap.scoring.parts import parse_shard, part_path, part_range

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def torchrun(*args, wait: bool = True, timeout: int = 240):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "humanclap.cli",
        *map(str, args),
    ]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def write_manifest(root: Path, n: int = 27, name: str = "manifest.csv", salt: str = "") -> Path:
    """``n`` rows: shared texts and files, a missing file, an empty text, a corrupt file."""
    texts = ["a dog barks", "rain falls on a roof", "a bell rings", "music plays", "wind"]
    rows = []
    for i in range(n - 3):
        clip = f"clips/c{i % 11}.wav"
        if not (root / clip).exists():
            write_wav(root / clip, noise_clip(0.3 + 0.04 * (i % 11), seed=i % 11))
        rows.append({"audio": clip, "text": texts[i % 5] + salt, "id": f"r{i:02d}"})
    (root / "clips/corrupt.wav").write_bytes(b"not audio")
    rows.insert(4, {"audio": "clips/missing.wav", "text": "a dog barks", "id": "bad-missing"})
    rows.insert(11, {"audio": "clips/c1.wav", "text": "", "id": "bad-empty"})
    rows.insert(19, {"audio": "clips/corrupt.wav", "text": "wind", "id": "bad-corrupt"})
    path = root / name
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "text", "id"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return write_manifest(root)


@pytest.fixture(scope="module")
def single(data, tiny_unfused, tmp_path_factory) -> dict:
    """One-process reference runs (CSV and JSONL)."""
    out = tmp_path_factory.mktemp("single")
    runs = {}
    for fmt in ("csv", "jsonl"):
        res = humanclap("score", data, "--model", tiny_unfused, "-o", out / f"s.{fmt}", "--batch-size", "2")
        assert res.returncode == 1, res.stderr  # three rows fail by design
        runs[fmt] = out / f"s.{fmt}"
    return runs


def test_part_ranges_cover_every_row_once():
    for n_rows in (0, 1, 5, 27, 100):
        for n in (1, 2, 3, 7):
            blocks = [part_range(n_rows, k, n) for k in range(n)]
            assert [i for b in blocks for i in b] == list(range(n_rows))
    assert parse_shard("2/3") == (2, 1 + 2) and part_path("o/s.csv", 1, 3) == Path("o/s.part-1-of-3.csv")
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_shards_then_merge_equal_one_process(data, tiny_unfused, single, tmp_path, fmt):
    data_before = data.read_bytes()
    out = tmp_path / f"m.{fmt}"
    for k in range(3):
        res = humanclap("score", data, "--model", tiny_unfused, "-o", out, "--shard", f"{k}/3", "--batch-size", "2")
        assert res.returncode in (0, 1), res.stderr
        assert f"humanclap merge {out}" in res.stderr
    assert not out.exists()  # a shard writes its part only
    meta = json.loads(Path(f"{part_path(out, 1, 3)}.meta.json").read_text())
    assert meta["part"] == {"index": 1, "count": 3, "first_row": 9, "end_row": 18}
    res = humanclap("merge", out)
    assert res.returncode == 1, res.stderr  # the three bad rows are in the merged file
    assert out.read_bytes() == single[fmt].read_bytes()
    assert data.read_bytes() == data_before
    merged = json.loads(Path(f"{out}.meta.json").read_text())
    ref = json.loads(Path(f"{single[fmt]}.meta.json").read_text())
    assert "part" not in merged
    for key in ("rows", "scored", "failed", "manifest", "model", "dtype"):
        assert merged[key] == ref[key], key
    assert abs(merged["mean_clapscore"] - ref["mean_clapscore"]) < 1e-6
    # the merged file is a complete score output: --resume recognises it and changes nothing
    before = out.read_bytes()
    res = humanclap("score", data, "--model", tiny_unfused, "-o", out, "--resume")
    assert res.returncode == 1 and out.read_bytes() == before, res.stderr
    # merging again without --overwrite would replace OUT: refused, OUT unchanged
    res = humanclap("merge", out)
    assert res.returncode == 2 and "--overwrite" in res.stderr and out.read_bytes() == before


def test_merge_refuses_missing_foreign_incomplete_and_overlapping_parts(data, tiny_unfused, tiny_fused, tmp_path):
    out = tmp_path / "m.csv"
    for k in range(3):
        humanclap("score", data, "--model", tiny_unfused, "-o", out, "--shard", f"{k}/3")
    parts = [part_path(out, k, 3) for k in range(3)]
    saved = {p: p.read_bytes() for p in parts}

    hidden = parts[1].rename(tmp_path / "aside.csv")
    res = humanclap("merge", out)
    assert res.returncode == 2 and "missing part(s)" in res.stderr and str(parts[1]) in res.stderr
    assert str(parts[0]) not in res.stderr.split("missing part(s)")[1]  # only the missing one named
    assert not out.exists()
    hidden.rename(parts[1])

    # a part of another manifest (other texts), same name and split
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = write_manifest(data.parent, name="other.csv", salt=" loudly")
    foreign = other_dir / "m.csv"
    humanclap("score", other, "--model", tiny_unfused, "-o", foreign, "--shard", "2/3")
    res = humanclap("merge", out, "--parts", parts[0], parts[1], part_path(foreign, 2, 3))
    assert res.returncode == 2 and "another manifest" in res.stderr, res.stderr
    assert not out.exists()
    # a part of the same manifest scored with another model
    humanclap("score", data, "--model", tiny_fused, "-o", foreign, "--shard", "2/3", "--overwrite")
    res = humanclap("merge", out, "--parts", parts[0], parts[1], part_path(foreign, 2, 3))
    assert res.returncode == 2 and "another model" in res.stderr and "revision" in res.stderr, res.stderr
    assert not out.exists()

    # an incomplete part: a killed job leaves fewer rows than its block
    lines = saved[parts[2]].splitlines(keepends=True)
    parts[2].write_bytes(b"".join(lines[:-2]) + lines[-2][:7])
    res = humanclap("merge", out)
    assert res.returncode == 2 and "incomplete (7 of its 9 rows)" in res.stderr, res.stderr
    assert "--resume" in res.stderr and not out.exists()
    parts[2].write_bytes(saved[parts[2]])

    # overlapping parts: a part of a 2-way split among the 3-way ones
    humanclap("score", data, "--model", tiny_unfused, "-o", out, "--shard", "1/2")
    res = humanclap("merge", out)  # found by name: two splits
    assert res.returncode == 2 and "different splits (N = 2, 3)" in res.stderr
    res = humanclap("merge", out, "--parts", *parts[:2], part_path(out, 1, 2))
    assert res.returncode == 2 and "overlaps" in res.stderr, res.stderr
    assert not out.exists()
    assert all(p.read_bytes() == saved[p] for p in parts)  # merge never touches its parts
    assert humanclap("merge", out, "--parts", *parts).returncode == 1  # the good ones merge


def test_shard_flag_refusals(data, tiny_unfused, tmp_path):
    res = humanclap("score", data, "--model", tiny_unfused, "--shard", "0/2")
    assert res.returncode == 2 and "needs -o OUT" in res.stderr
    res = humanclap("score", data, "--model", tiny_unfused, "-o", tmp_path / "x.csv", "--shard", "2/2")
    assert res.returncode == 2 and "K must be 0 to N-1" in res.stderr
    res = humanclap("merge", tmp_path / "nothing.csv")
    assert res.returncode == 2 and "no parts of" in res.stderr


def test_torchrun_two_ranks_equal_one_process(data, tiny_unfused, single, tmp_path):
    out = tmp_path / "t.csv"
    proc = torchrun("score", data, "--model", tiny_unfused, "-o", out, "--device", "cpu")
    # exit 1: rows failed (by design) on every rank, so torchrun reports 1 as well
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert out.read_bytes() == single["csv"].read_bytes()
    assert "rows: 27  scored: 24  failed: 3" in proc.stderr
    assert part_path(out, 0, 2).is_file() and part_path(out, 1, 2).is_file()


def _rank_pid(launcher: int, rank: int, deadline: float) -> int:
    """The pid of torchrun's worker with RANK=rank (a child of the launcher)."""
    while time.time() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == launcher and f"RANK={rank}".encode() in env:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} worker found")


def test_kill_one_rank_then_resume_gives_the_same_bytes(data, tiny_unfused, single, tmp_path):
    out = tmp_path / "k.jsonl"
    proc = torchrun(
        "score", data, "--model", tiny_unfused, "-o", out, "--device", "cpu", "--batch-size", "1", wait=False
    )
    deadline = time.time() + 120
    pid = _rank_pid(proc.pid, 1, deadline)
    part = part_path(out, 1, 2)  # rows 13..26
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 2):
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    kept = part.read_text().count("\n")
    assert 2 <= kept < 14, kept  # killed mid-part
    assert not out.exists()
    res = torchrun(
        "score", data, "--model", tiny_unfused, "-o", out, "--device", "cpu", "--batch-size", "1", "--resume"
    )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "resumed after" in res.stderr
    assert out.read_bytes() == single["jsonl"].read_bytes()


def test_torchrun_evaluate_equals_one_process(tiny_unfused, tmp_path):
    from test_train import make_rated_manifest

    rated = make_rated_manifest(tmp_path / "data", levels=6, clips=2)
    common = [
        "--model",
        tiny_unfused,
        "--data",
        rated,
        "--split",
        "all",
        "--device",
        "cpu",
        "--n-boot",
        "50",
        "--no-plots",
    ]
    one = humanclap("evaluate", *common, "-o", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = torchrun("evaluate", *common, "-o", tmp_path / "two")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_rank_device_gives_each_rank_its_gpu(monkeypatch):
    import torch

    from humanclap.scoring.distributed import rank_device

    assert rank_device("auto") == "auto"  # one process: untouched
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device("auto") == "cpu" and rank_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto") == "cuda:1" and rank_device("cuda") == "cuda:1"
    assert rank_device("cuda:0") == "cuda:0"  # explicit: kept
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="--nproc-per-node 1"):
        rank_device("auto")
