"""Issue 16 on `score` and `merge`: the output contract (own earlier output only, a lock) and
the result identity (audio root, tokenizer, rows) that --resume and merge compare. Real CLI
runs on a tiny model; each test is a defect found by a hostile user."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile_outputs import score, three_rows

from humanclap.outputs import file_lock_path, output_lock
from humanclap.scoring.parts import part_path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "humanclap.cli", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_resume_with_another_audio_root_is_refused_naming_both(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    other = tmp_path / "other"
    shutil.copytree(tmp_path, other, ignore=shutil.ignore_patterns("other", "*.csv"))
    out = tmp_path / "o.csv"
    assert score(capsys, m, "--model", tiny_unfused, "-o", out)[0] == 0
    full = out.read_bytes()
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["manifest"]["audio_root"] == str(tmp_path.resolve())
    assert meta["manifest"]["path"] == str(m.resolve())
    cut = full[: full.index(b"\n", full.index(b"\n") + 1) + 1]
    out.write_bytes(cut)
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume", "--audio-root", other)
    assert code == 2 and f"audio root {tmp_path.resolve()}" in err and str(other.resolve()) in err, err
    assert out.read_bytes() == cut
    # the same root spelled another way (relative, through ..) is the same identity
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume", "--audio-root", other / "..")
    assert code == 0, err
    assert out.read_bytes() == full


def test_a_second_score_into_a_locked_output_is_refused(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    with output_lock(file_lock_path(out), "held by this test"):
        code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
        assert code == 2 and "being written by another humanclap run" in err, err
        assert not out.exists()
        # another output in the same folder is not held up
        assert score(capsys, m, "--model", tiny_unfused, "-o", tmp_path / "p.csv")[0] == 0
    assert score(capsys, m, "--model", tiny_unfused, "-o", out)[0] == 0
    assert not file_lock_path(out).exists()


def test_a_foreign_meta_file_is_not_replaced(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    meta = Path(f"{out}.meta.json")
    meta.write_text('{"my": "notes"}\n')
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 2 and "was not written by humanclap" in err, err
    assert meta.read_text() == '{"my": "notes"}\n' and not out.exists()


def _parts(tmp_path: Path, tiny: Path, cwd: Path) -> tuple[Path, Path, list[Path]]:
    """Two --shard parts of a 3-row manifest, scored from ``cwd`` with a relative manifest path."""
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    rel = os.path.relpath(m, cwd)
    for k in (0, 1):
        res = cli("score", rel, "--model", tiny, "-o", out, "--shard", f"{k}/2", cwd=cwd)
        assert res.returncode == 0, res.stderr
    return m, out, [part_path(out, k, 2) for k in (0, 1)]


def test_merge_from_elsewhere_never_overwrites_the_manifest(tmp_path, tiny_unfused):
    (tmp_path / "work").mkdir()
    m, out, parts = _parts(tmp_path, tiny_unfused, tmp_path / "work")
    before = m.read_bytes()
    (tmp_path / "elsewhere").mkdir()
    res = cli("merge", m.resolve(), "--parts", *parts, "--overwrite", cwd=tmp_path / "elsewhere")
    assert res.returncode == 2 and "an input of the merge" in res.stderr, res.stderr
    assert m.read_bytes() == before


def test_merge_checks_every_row_of_every_part(tmp_path, tiny_unfused):
    m, out, parts = _parts(tmp_path, tiny_unfused, tmp_path)
    good = [p.read_bytes() for p in parts]
    assert cli("merge", out).returncode == 0
    merged = out.read_bytes()

    def rows(p: Path) -> list[list[str]]:
        return list(csv.reader(open(p, newline="")))

    def write(p: Path, table: list[list[str]]) -> None:
        with open(p, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(table)

    second = rows(parts[1])  # header + 2 rows (3 rows split 1 + 2)
    assert len(second) == 3
    edits = {
        "edited text": [second[0], second[1], [second[2][0], "a cat", *second[2][2:]]],
        "deleted + duplicated": [second[0], second[1], second[1]],
        "foreign row": [second[0], second[1], ["elsewhere.wav", "a cat", "0.5", "0.5", ""]],
    }
    for what, table in edits.items():
        write(parts[1], table)
        res = cli("merge", out, "--overwrite")
        assert res.returncode == 2 and "is not manifest row" in res.stderr, (what, res.stderr)
        assert out.read_bytes() == merged, what
    parts[1].write_bytes(good[1])
    assert cli("merge", out, "--overwrite").returncode == 0 and out.read_bytes() == merged


def test_merge_overwrite_replaces_only_humanclaps_own_output(tmp_path, tiny_unfused):
    m, out, parts = _parts(tmp_path, tiny_unfused, tmp_path)
    out.write_text("my,own\n1,2\n")
    res = cli("merge", out, "--overwrite")
    assert res.returncode == 2 and "was not written by humanclap score or merge" in res.stderr, res.stderr
    assert out.read_text() == "my,own\n1,2\n"


def test_msclap_revision_covers_the_tokenizer(tmp_path):
    from humanclap.recipes.tiny_msclap import build_tiny_msclap
    from humanclap.scoring.msclap.scorer import MSClapScorer

    pth = build_tiny_msclap(tmp_path / "m", version="2023", seed=0, pth=True)
    first = MSClapScorer.from_pretrained(str(pth), device="cpu").info.revision
    assert MSClapScorer.from_pretrained(str(pth), device="cpu").info.revision == first
    tok = pth.parent / "tokenizer.json"
    data = json.loads(tok.read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[5:7]  # swap two tokens' ids: same files, other ids
    vocab[a], vocab[b] = vocab[b], vocab[a]
    tok.write_text(json.dumps(data))
    second = MSClapScorer.from_pretrained(str(pth), device="cpu").info.revision
    assert second != first


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_cache_folder_equal_to_the_output_is_refused_before_anything_is_created(tmp_path, tiny_unfused, capsys, flag):
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--cache", out, flag)
    assert code == 2 and "--cache" in err, err
    assert not out.exists() and not Path(f"{out}.meta.json").exists()


# -- evaluate: the folder contract --------------------------------------------------------
def test_evaluate_never_writes_into_a_foreign_folder_and_replaces_its_own_run_only_with_overwrite(
    tmp_path, tiny_unfused, capsys
):
    from test_hostile_evaluate_train import TEXTS, evaluate, manifest

    from humanclap.outputs import MARKER

    clips = three_rows(tmp_path)  # writes c0..c2.wav beside it
    rows = [{"audio": str(tmp_path / f"c{i}.wav"), "text": TEXTS[i], "score": 0.3 * i} for i in range(3)]
    data = manifest(tmp_path / "rated.csv", rows)
    assert clips.exists()
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "report.md").write_text("my own report")
    (foreign / "scatter_x.png").write_bytes(b"my plot")
    assert evaluate(data, foreign, tiny_unfused) == 2
    err = capsys.readouterr().err
    assert "holds no humanclap evaluate run" in err and "report.md, scatter_x.png" in err, err
    assert sorted(p.name for p in foreign.iterdir()) == ["report.md", "scatter_x.png"]
    assert (foreign / "report.md").read_text() == "my own report"

    out = tmp_path / "eval"
    assert evaluate(data, out, tiny_unfused) == 0
    capsys.readouterr()
    written = sorted(p.name for p in out.iterdir())
    assert MARKER in written and "report.md" in written and any(n.endswith(".png") for n in written)
    report = (out / "report.md").read_bytes()
    assert evaluate(data, out, tiny_unfused) == 2  # an earlier run: only with --overwrite
    assert "holds an earlier evaluate run" in capsys.readouterr().err
    (out / "scatter_stale.png").write_bytes(b"x")  # pretend an earlier run wrote a plot ...
    marker = json.loads((out / MARKER).read_text())
    marker["files"].append("scatter_stale.png")  # ... and recorded it
    (out / MARKER).write_text(json.dumps(marker))
    (out / "notes.txt").write_text("the user's")  # not recorded: never deleted
    assert evaluate(data, out, tiny_unfused, "--overwrite") == 0
    assert not (out / "scatter_stale.png").exists()
    assert (out / "notes.txt").read_text() == "the user's"
    assert (out / "report.md").read_bytes() == report
