"""Hostile manifests for `humanclap score`: BOMs, malformed CSV, duplicate columns, huge
cells, broken or non-object JSON, JSONL rows without or with non-string audio/text,
pass-through JSON values, and NaN embeddings (every number written is finite).

Real files in tmp_path, the tiny real model, the CLI in-process; each test checks the exit
code, the message, and the bytes of the input and output files.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import noise_clip, write_wav

from humanclap.cli import main


def score(capsys, *args) -> tuple[int, str, str]:
    """``humanclap score ARGS`` in-process: exit code, stdout and stderr."""
    code = main(["score", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, which are not JSON."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.fixture
def clips(tmp_path) -> Path:
    for i in range(3):
        write_wav(tmp_path / f"c{i}.wav", noise_clip(0.4, seed=i))
    return tmp_path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- CSV manifests ------------------------------------------------------------------------
def test_utf8_bom_and_a_huge_cell_are_accepted(clips, tiny_unfused, capsys):
    m = clips / "m.csv"
    huge = "a dog barks " * 12_000  # 144,000 characters, over the csv module's default limit
    assert len(huge) > 131_072
    m.write_bytes("\ufeffaudio,text\nc0.wav,a dog barks\nc1.wav,".encode() + f'"{huge}"\n'.encode())
    before = m.read_bytes()
    out = clips / "o.csv"
    code, _, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 0, err
    rows = read_csv(out)
    assert list(rows[0]) == ["audio", "text", "clapscore", "cosine", "error"]  # no BOM in the name
    assert [r["audio"] for r in rows] == ["c0.wav", "c1.wav"] and rows[1]["text"] == huge
    assert all(r["error"] == "" and r["clapscore"] != "" for r in rows)
    assert m.read_bytes() == before


@pytest.mark.parametrize(
    "content, expected",
    [
        ("audio,text\nc0.wav,a dog barks\nc1.wav,a dog, barks\n", "line 3: 3 fields where the header has 2"),
        ("audio,text,text\nc0.wav,a,b\n", "line 1: duplicate column name(s) ['text']"),
        ('audio,text\nc0.wav,"a dog" barks\n', "line 2: not valid CSV"),
    ],
)
def test_malformed_csv_is_refused_with_file_and_line(clips, tiny_unfused, capsys, content, expected):
    m = clips / "m.csv"
    m.write_text(content)
    out = clips / "o.csv"
    code, _, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
    assert code == 2 and str(m) in err and expected in err, err
    assert err.startswith("humanclap score: error: manifest ") and "Traceback" not in err
    assert m.read_text() == content and not out.exists()


# -- JSONL manifests ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, expected",
    [
        (
            '{"audio": "c0.wav", "text": "a"}\n\n{"audio": "c1.wav", "text": "b"}\n{"audio": "c2.wav", "te\n',
            "line 4: not valid JSON",
        ),
        (
            '[{"audio": "c0.wav", "text": "a"}, {"audio": "c1.wav", "text": "b"}]\n',
            "line 1: a JSON array where a JSON object is expected (JSON Lines: one object per line)",
        ),
        (
            '[\n  {"audio": "c0.wav", "text": "a"}\n]\n',
            "the file looks like one JSON array; write one JSON object per line",
        ),
        ('{"audio": "c0.wav", "text": "a"}\n"just a string"\n', "line 2: str where a JSON object"),
    ],
)
def test_broken_jsonl_is_refused_with_file_and_line(clips, tiny_unfused, capsys, content, expected):
    m = clips / "m.jsonl"
    m.write_text(content)
    code, out, err = score(capsys, m, "--model", tiny_unfused)
    assert code == 2 and str(m) in err and expected in err, err
    assert out == "" and m.read_text() == content


def test_jsonl_rows_without_or_with_non_string_audio_text_get_row_errors(clips, tiny_unfused, capsys):
    rows = [
        {"audio": "c0.wav", "text": "a dog barks", "k": 0},
        {"audio": "c1.wav", "k": 1},
        {"text": "a dog barks", "k": 2},
        {"audio": "c0.wav", "text": ["a", "dog"], "k": 3},
        {"audio": "c0.wav", "text": 7, "k": 4},
        {"audio": "c0.wav", "text": None, "k": 5},
        {"audio": "c0.wav", "text": math.nan, "k": 6},
        {"audio": {"path": "c0.wav"}, "text": "a dog barks", "k": 7},
        {"audio": True, "text": "a dog barks", "k": 8},
        {"audio": "", "text": "a dog barks", "k": 9},
        {"audio": "c2.wav", "text": "rain falls", "k": 10},
    ]
    m = clips / "m.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps writes NaN as NaN
    before = m.read_bytes()
    expected = [
        "",
        "no 'text' field",
        "no 'audio' field",
        "'text' must be a string, got list",
        "'text' must be a string, got number",
        "'text' must be a string, got null",
        "'text' must be a string, got NaN",
        "'audio' must be a string, got object",
        "'audio' must be a string, got boolean",
        "empty 'audio' path",
        "",
    ]
    for fmt in ("jsonl", "csv"):
        out = clips / f"o.{fmt}"
        code, _, err = score(capsys, m, "--model", tiny_unfused, "-o", out)
        assert code == 1, err
        assert "rows: 11  scored: 2  failed: 9" in err
        if fmt == "jsonl":
            got = [strict_json(line) for line in out.read_text().splitlines()]
            assert got[6]["text"] is None  # the NaN of the input is written as null
        else:
            got = read_csv(out)
            assert got[3]["text"] == '["a", "dog"]' and got[6]["text"] == ""
        assert [g["error"] for g in got] == expected
        assert [int(g["k"]) for g in got] == list(range(11))
        for g, e in zip(got, expected):
            assert (g["clapscore"] in ("", None)) == bool(e)
        assert m.read_bytes() == before


def test_pass_through_columns_keep_their_json_values(clips, tiny_unfused, capsys):
    extra = {
        "ints": [1, 2, 3],
        "nested": {"a": None, "b": [True, 1.5]},
        "n": 3.25,
        "big": 2**53 + 1,
        "none": None,
        "s": "x, \"y\"\nz",
        "uni": "caf\u00e9 \u2603",
    }
    m = clips / "m.jsonl"
    m.write_text(json.dumps({"audio": "c0.wav", "text": "a dog barks", **extra}, ensure_ascii=False) + "\n")
    code, out, err = score(capsys, m, "--model", tiny_unfused)
    assert code == 0, err
    (row,) = [strict_json(line) for line in out.splitlines()]
    assert {k: row[k] for k in extra} == extra
    assert list(row)[-3:] == ["clapscore", "cosine", "error"] and row["error"] == ""


# -- every number written is finite --------------------------------------------------------
@pytest.fixture(scope="module")
def nan_model(tiny_unfused, tmp_path_factory) -> Path:
    """The tiny model with NaN token embeddings for the tokens of 'qqq zzz' that no other
    text of these tests uses: texts with them get NaN embeddings, the others stay finite."""
    import torch

    from humanclap.scoring.clap.scorer import CLAPScorer

    path = tmp_path_factory.mktemp("nan_model") / "m"
    shutil.copytree(tiny_unfused, path)
    s = CLAPScorer.from_pretrained(str(path), device="cpu")
    ids = lambda text: set(s.tokenize([text])["input_ids"][0].tolist())  # noqa: E731
    poison = ids("qqq zzz") - ids("a dog barks") - ids("rain falls")
    assert poison
    with torch.no_grad():
        s.model.text_model.embeddings.word_embeddings.weight[sorted(poison)] = math.nan
    s.model.save_pretrained(path)
    assert np.isnan(s.embed_text(["qqq zzz"])).all() and np.isfinite(s.embed_text(["rain falls"])).all()
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_nan_embedding_is_a_row_error_and_nothing_non_finite_is_written(clips, nan_model, capsys, fmt):
    m = clips / "m.csv"
    m.write_text("audio,text\nc0.wav,a dog barks\nc1.wav,qqq zzz\nc2.wav,rain falls\n")
    out = clips / f"o.{fmt}"
    code, _, err = score(capsys, m, "--model", nan_model, "-o", out)
    assert code == 1, err
    assert "rows: 3  scored: 2  failed: 1" in err
    text = out.read_text()
    rows = read_csv(out) if fmt == "csv" else [strict_json(line) for line in text.splitlines()]
    assert len(rows) == 3
    for r in rows:  # every number written is finite (strict_json refused a bare NaN above)
        assert all(r[k] in ("", None) or math.isfinite(float(r[k])) for k in ("clapscore", "cosine"))
    assert rows[1]["error"].startswith("non-finite embedding (cosine = nan)")
    assert rows[1]["clapscore"] in ("", None) and rows[1]["cosine"] in ("", None)
    assert all(r["error"] == "" and math.isfinite(float(r["clapscore"])) for r in (rows[0], rows[2]))
    strict_json(Path(f"{out}.meta.json").read_text())  # meta.json is strict JSON too


def test_all_rows_non_finite_gives_strict_meta_with_null_mean(clips, nan_model, capsys):
    m = clips / "m.csv"
    m.write_text("audio,text\nc0.wav,qqq zzz\n")
    out = clips / "o.jsonl"
    code, _, err = score(capsys, m, "--model", nan_model, "-o", out)
    assert code == 1 and "scored: 0  failed: 1" in err
    meta = strict_json(Path(f"{out}.meta.json").read_text())
    assert meta["mean_clapscore"] is None and meta["mean_clapscore_ci95"] == [None, None]


def test_summary_interval_is_clipped_to_clapscore_range():
    from humanclap.scoring.summary import ScoreSummary

    lo_case = ScoreSummary(scores=[0.0, 0.0, 0.0, 0.9])
    mean, lo, hi = lo_case.mean_ci()
    assert lo == 0.0 and 0 < mean < hi <= 1
    mean, lo, hi = ScoreSummary(scores=[1.0, 1.0, 0.05]).mean_ci()
    assert hi == 1.0 and 0 <= lo < mean
    assert "95% CI [0.0000, " in lo_case.text()


# -- help ---------------------------------------------------------------------------------
def test_help_documents_overwrite_resume_rules_and_exit_codes(capsys):
    assert main(["score", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "--overwrite",
        "--resume",
        "OUT.meta.json",
        "fingerprint",
        "byte-identical",
        "at most 1024",
        "0 every row scored",
        "1 some rows failed",
        "2 usage error or bad input",
        "3 internal error",
    ):
        assert needle in text, needle
