"""Hostile outputs for `humanclap score`: -o naming an input, existing files, unwritable
paths, resume against another manifest or a broken meta file, files cut mid-record, full
disks, and the --batch-size bound.

Real files in tmp_path, the tiny real model, the CLI in-process (``main([...])``); every
test checks the exit code, the message and the bytes of the files involved.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import write_manifest

from humanclap.cli import main
from humanclap.defaults import MAX_BATCH_SIZE


def score(capsys, *args) -> tuple[int, str]:
    """``humanclap score ARGS`` in-process: exit code and stderr."""
    code = main(["score", *map(str, args)])
    return code, capsys.readouterr().err


def three_rows(folder: Path) -> Path:
    return write_manifest(
        folder, [{"audio": f"c{i}.wav", "text": t} for i, t in enumerate(["a dog barks", "rain falls", "a bell rings"])]
    )


@pytest.fixture(scope="module")
def scorer(tiny_unfused):
    from humanclap.scoring.clap.scorer import CLAPScorer

    return CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")


# -- 1. input is sacred ------------------------------------------------------------------
def test_output_that_is_the_manifest_under_any_name_is_refused(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    before = m.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(m, tmp_path / "link.csv")
    os.link(m, tmp_path / "hard.csv")
    names = [m, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "sub" / ".." / "m.csv"]
    for out in names:
        for extra in ([], ["--overwrite"], ["--resume"]):
            code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, *extra)
            assert code == 2, (out, extra, err)
            assert err.startswith("humanclap score: error: -o ") and "is the manifest" in err, err
            assert "Traceback" not in err
            assert m.read_bytes() == before
            assert not Path(f"{out}.meta.json").exists()  # nothing was opened for writing
    # the meta file beside OUT is guarded too: a JSONL manifest named OUT.meta.json
    jm = tmp_path / "x.csv.meta.json"
    jm.write_text(json.dumps({"audio": "c0.wav", "text": "a dog barks"}) + "\n")
    jbefore = jm.read_bytes()
    code, err = score(capsys, jm, "--model", tiny_unfused, "-o", tmp_path / "x.csv")
    assert code == 2 and "is the manifest" in err and jm.read_bytes() == jbefore
    assert not (tmp_path / "x.csv").exists()


def test_output_that_is_an_audio_file_of_the_manifest_is_refused(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    wav = tmp_path / "c1.wav"
    before = wav.read_bytes()
    os.symlink(wav, tmp_path / "o.csv")
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", tmp_path / "o.csv", "--overwrite")
    assert code == 2 and "is the audio file" in err and str(wav) in err, err
    assert wav.read_bytes() == before


def test_existing_output_needs_overwrite_or_resume(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    out.write_bytes(b"")  # an empty file is free to use
    assert score(capsys, m, "--model", tiny_unfused, "-o", out)[0] == 0
    first = out.read_bytes()
    out.write_bytes(b"precious,data\n1,2\n")
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 2 and "exists and is not empty; pass --overwrite to replace it, or --resume" in err
    assert out.read_bytes() == b"precious,data\n1,2\n"
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume", "--overwrite")
    assert code == 2 and "--resume and --overwrite contradict each other" in err
    assert out.read_bytes() == b"precious,data\n1,2\n"
    # --overwrite replaces humanclap's own output only: this file is not one (its first line is
    # not score's header), although a meta file of an earlier run is still beside it
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--overwrite")
    assert code == 2 and "was not written by humanclap score or merge" in err, err
    assert out.read_bytes() == b"precious,data\n1,2\n"
    out.write_bytes(first[:-5])  # its own earlier (cut) output: replaced
    assert score(capsys, m, "--model", tiny_unfused, "-o", out, "--overwrite")[0] == 0
    assert out.read_bytes() == first
    Path(f"{out}.meta.json").unlink()  # no meta beside it: not provably humanclap's
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--overwrite")
    assert code == 2 and "no humanclap o.csv.meta.json beside it" in err, err
    assert out.read_bytes() == first


def test_output_path_that_cannot_be_written_is_a_usage_error(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    before = m.read_bytes()
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "plain.txt").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    cases = [
        (tmp_path / "folder.csv", "is a folder; name a .csv or .jsonl file"),
        (tmp_path / "plain.txt" / "deeper" / "o.csv", "plain.txt is a file, not a folder"),
        (tmp_path / "dangling" / "o.csv", "cannot create the folder"),
    ]
    for out, expected in cases:
        code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
        assert code == 2 and expected in err and "Traceback" not in err, (out, err)
        assert err.count("\n") == 1
    assert m.read_bytes() == before and (tmp_path / "plain.txt").read_text() == "x"
    # a folder under which the output may be created is created
    assert score(capsys, m, "--model", tiny_unfused, "-o", tmp_path / "new" / "dir" / "o.csv")[0] == 0


# -- 2. resume is safe by construction -----------------------------------------------------
@pytest.fixture
def scored(tmp_path, tiny_unfused, capsys) -> tuple[Path, Path, bytes]:
    """A manifest, a complete output of it and that output's bytes."""
    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    assert score(capsys, m, "--model", tiny_unfused, "-o", out)[0] == 0
    return m, out, out.read_bytes()


def test_meta_records_the_manifest_fingerprint_and_model(scored):
    m, out, _ = scored
    meta = json.loads(Path(f"{out}.meta.json").read_text(), parse_constant=pytest.fail)
    assert meta["manifest"]["columns"] == ["audio", "text"] and meta["manifest"]["rows"] == 3
    assert len(meta["manifest"]["sha256"]) == 64
    assert meta["model"]["revision"].startswith("sha256:") and meta["dtype"] == "fp32"
    assert "preprocessing" in meta["model"]


def test_resume_without_or_with_a_broken_meta_file_is_refused(scored, tiny_unfused, capsys):
    m, out, full = scored
    meta = Path(f"{out}.meta.json")
    good_meta = meta.read_bytes()
    cut = full[: full.index(b"\n", full.index(b"\n") + 1) + 1]  # header + one row
    out.write_bytes(cut)
    meta.unlink()
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume")
    assert code == 2, err
    assert (
        f"cannot resume: {meta} is missing, so the rows in {out} may come from another model; rerun with --overwrite"
    ) in err
    for text, expected in [
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "lacks 'manifest'"),
        ('{"manifest": {"columns": ["audio", "text"]}}', "lacks 'manifest.sha256'"),
        ("\udcff", "is not readable JSON"),
    ]:
        meta.write_bytes(text.encode("utf-8", "surrogateescape"))
        code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume")
        assert code == 2 and expected in err and "rerun with --overwrite" in err, (text, err)
        assert "Traceback" not in err and out.read_bytes() == cut
    meta.write_bytes(good_meta)  # with the real meta file the same resume works
    assert score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume")[0] == 0
    assert out.read_bytes() == full


def test_resume_with_other_columns_rows_or_dtype_is_refused(scored, tiny_unfused, capsys, tmp_path):
    m, out, full = scored
    cut = full[: full.index(b"\n", full.index(b"\n") + 1) + 1]
    rows = list(csv.DictReader(open(m, newline="")))
    gained = write_manifest(tmp_path, [{**r, "id": str(i)} for i, r in enumerate(rows)], "gained.csv")
    edited = write_manifest(tmp_path, [rows[0], rows[1], {**rows[2], "text": "edited"}], "edited.csv")
    reordered = write_manifest(tmp_path, [{"text": r["text"], "audio": r["audio"]} for r in rows], "reordered.csv")
    for manifest, expected in [
        (gained, "gained ['id']"),
        (reordered, "reordered"),
        (edited, "the manifest's rows are not those"),
    ]:
        out.write_bytes(cut)
        code, err = score(capsys, manifest, "--model", tiny_unfused, "-o", out, "--resume")
        assert code == 2 and expected in err and "rerun with --overwrite" in err, (manifest, err)
        assert out.read_bytes() == cut
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume", "--dtype", "bf16")
    assert code == 2 and "(fp32), not" in err and "(bf16)" in err and "drop --resume" in err
    assert out.read_bytes() == cut
    # the other way round: OUT scored from the manifest with an id column, resumed without it
    wide = tmp_path / "wide.csv"
    assert score(capsys, gained, "--model", tiny_unfused, "-o", wide)[0] == 0
    wide_cut = wide.read_bytes()[:-3]
    wide.write_bytes(wide_cut)
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", wide, "--resume")
    assert code == 2 and "lost ['id']" in err and wide.read_bytes() == wide_cut


def test_resume_of_a_missing_output_starts_from_the_first_row(scored, tiny_unfused, capsys, tmp_path):
    m, _, full = scored
    out = tmp_path / "fresh.csv"
    assert score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume")[0] == 0
    assert out.read_bytes() == full


# -- 3. a CSV cut inside a quoted multi-line cell ------------------------------------------
HOSTILE_TEXT = 'a "loud" dog,\nbarks "twice"\r\n\nthen, "stops"'


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_after_a_cut_at_every_byte_of_the_last_record(scorer, tmp_path, fmt):
    from humanclap.scoring.job import ScoreJob

    m = write_manifest(
        tmp_path,
        [
            {"audio": "c0.wav", "text": 'multi\nline "one"', "id": "1"},
            {"audio": "c1.wav", "text": "rain falls", "id": "2"},
            {"audio": "c2.wav", "text": HOSTILE_TEXT, "id": "3"},
        ],
    )
    before = m.read_bytes()
    full = tmp_path / f"full.{fmt}"
    ScoreJob(scorer, batch_size=2).run(m, full, progress=False)
    data = full.read_bytes()
    start = data.rindex(b"\n", 0, data.index(b"c2.wav")) + 1  # the last record, after record 2
    part = tmp_path / f"part.{fmt}"
    inside = data.index(b"twice")  # inside the quoted multi-line cell
    # One job for the sweep (its engine already holds the embeddings: this checks where the
    # file is cut and appended); fresh jobs for a few cuts (the embeddings are redone too).
    shared = ScoreJob(scorer, batch_size=2)
    shared.run(m, tmp_path / f"warm.{fmt}", progress=False)
    for cut in range(start, len(data) + 1):
        part.write_bytes(data[:cut])
        shutil.copy(f"{full}.meta.json", f"{part}.meta.json")
        fresh = cut in (start, inside, len(data) - 1)
        job = ScoreJob(scorer, batch_size=2) if fresh else shared
        summary = job.run(m, part, resume=True, progress=False)
        assert part.read_bytes() == data, cut
        assert summary.resumed == (3 if cut == len(data) else 2), cut
        assert summary.scored == 3
    assert m.read_bytes() == before


def test_resume_refuses_an_output_that_is_not_ours(scorer, tmp_path):
    from humanclap.errors import UsageError
    from humanclap.scoring.job import ScoreJob

    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    ScoreJob(scorer).run(m, out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    for broken, expected in [
        (lines[0] + b'c0.wav,"a dog" barks,,,\n' + lines[2], "is not CSV written"),
        (b"audio,text,clapscore\n" + lines[1], "has columns"),
        (lines[0] + lines[1].replace(b",\n", b"\n"), "fields where the header"),
    ]:
        out.write_bytes(broken)
        with pytest.raises(UsageError, match=expected):
            ScoreJob(scorer).run(m, out, resume=True, progress=False)
        assert out.read_bytes() == broken
    jout = tmp_path / "o.jsonl"
    ScoreJob(scorer).run(m, jout, progress=False)
    jlines = jout.read_bytes().splitlines(keepends=True)
    for broken, expected in [
        (b"{oops\n" + jlines[1], "line 1, is not valid JSON"),
        (b'{"audio": "c0.wav", "text": "a dog barks"}\n', "not an output row"),
    ]:
        jout.write_bytes(broken)
        with pytest.raises(UsageError, match=expected):
            ScoreJob(scorer).run(m, jout, resume=True, progress=False)
        assert jout.read_bytes() == broken


# -- 6. --batch-size bound ------------------------------------------------------------------
def test_batch_size_is_bounded_and_never_changes_a_score(tmp_path, tiny_unfused, capsys):
    m = three_rows(tmp_path)
    code, err = score(capsys, m, "--model", tiny_unfused, "--batch-size", MAX_BATCH_SIZE + 1)
    assert code == 2 and f"--batch-size must be at most {MAX_BATCH_SIZE}" in err
    outs = {}
    for bs in (1, 2, MAX_BATCH_SIZE):
        outs[bs] = tmp_path / f"b{bs}.csv"
        assert score(capsys, m, "--model", tiny_unfused, "-o", outs[bs], "--batch-size", bs)[0] == 0
    assert outs[1].read_bytes() == outs[2].read_bytes() == outs[MAX_BATCH_SIZE].read_bytes()


# -- 7. full disk / write errors -------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_full_disk_is_a_clear_error_and_resume_continues(tmp_path, tiny_unfused, capsys, fmt):
    m = three_rows(tmp_path)
    before = m.read_bytes()
    out = tmp_path / f"o.{fmt}"
    os.symlink("/dev/full", out)  # every write to it fails with ENOSPC
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 2, err
    assert err == (
        f"humanclap score: error: cannot write {out}: No space left on device; the 0 rows "
        "written so far are kept; free space and rerun with --resume\n"
    )
    assert m.read_bytes() == before and os.path.islink(out)
    meta = json.loads(Path(f"{out}.meta.json").read_text())  # written before the rows
    assert meta["manifest"]["rows"] == 3


def test_failed_meta_write_says_how_many_rows_are_kept(tmp_path, tiny_unfused, capsys, monkeypatch):
    import humanclap.scoring.summary as job  # the meta file is written there

    m = three_rows(tmp_path)
    out = tmp_path / "o.csv"
    real, calls = job.write_json, []

    def full_on_second_write(path, data, **kw):  # the final meta write finds the disk full
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data, **kw)

    monkeypatch.setattr(job, "write_json", full_on_second_write)
    code, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 2 and "the 3 rows written so far are kept; free space and rerun with --resume" in err
    assert len(out.read_text().splitlines()) == 4
    monkeypatch.setattr(job, "write_json", real)
    kept = out.read_bytes()
    assert score(capsys, m, "--model", tiny_unfused, "-o", out, "--resume")[0] == 0
    assert out.read_bytes() == kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_stdout_is_a_clear_error(tmp_path, tiny_unfused, capsys, monkeypatch):
    m = three_rows(tmp_path)
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    code, err = score(capsys, m, "--model", tiny_unfused)
    monkeypatch.undo()
    try:
        full.close()
    except OSError:  # the rows still buffered fail again on close
        pass
    assert code == 2 and "cannot write to standard output: No space left on device" in err, err
