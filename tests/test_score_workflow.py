"""``run_score``: the ``score`` command as one library call, its typed meta record and the
citation line (``protocol``) in every score output."""

from __future__ import annotations

import json

from conftest import write_manifest

from humanclap.scoring.workflow import run_score


def test_run_score_writes_rows_meta_and_citation_and_resumes_an_old_meta(tmp_path, tiny_unfused):
    m = write_manifest(tmp_path, [{"audio": f"a{i}.wav", "text": f"sound {i}"} for i in range(4)])
    out = tmp_path / "o.csv"
    run = run_score(m, out, model=str(tiny_unfused), device="cpu")
    assert run.exit_code == 0 and run.written == out and run.part is None and run.rank is None
    meta = json.loads((tmp_path / "o.csv.meta.json").read_text())
    assert meta["protocol"].startswith("CLAPScore = max(cos, 0)") and list(meta)[-1] == "protocol"
    assert run.summary.protocol == meta["protocol"] and "protocol: " in run.summary.text()
    # A file written before the line existed (no "protocol") resumes, byte for byte.
    full = out.read_bytes()
    del meta["protocol"]
    (tmp_path / "o.csv.meta.json").write_text(json.dumps(meta))
    out.write_bytes(full[: full.index(b"\n", full.index(b"\n") + 1) + 1])  # header + one row
    again = run_score(m, out, model=str(tiny_unfused), device="cpu", resume=True)
    assert again.summary.resumed == 1 and out.read_bytes() == full


def test_run_score_shard_writes_its_part(tmp_path, tiny_unfused):
    m = write_manifest(tmp_path, [{"audio": f"a{i}.wav", "text": f"sound {i}"} for i in range(4)])
    run = run_score(m, tmp_path / "o.jsonl", model=str(tiny_unfused), device="cpu", shard="1/2")
    assert run.part == (1, 2) and run.written == tmp_path / "o.part-1-of-2.jsonl"
    meta = json.loads((tmp_path / "o.part-1-of-2.jsonl.meta.json").read_text())
    assert meta["part"] == {"index": 1, "count": 2, "first_row": 2, "end_row": 4} and meta["rows"] == 2
