"""XACLE layout and generic CSV/JSONL manifests, on small files written here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from humanclap.data import DatasetError, RatedPairs, load_manifest, load_rated
from humanclap.data.rated import PAIR_COLUMNS


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def xacle_dir(tmp_path: Path) -> Path:
    meta = tmp_path / "meta_data"
    _write(
        meta / "train.csv",
        "wav_file_name,text,score,listener_id\n"
        "a.wav,A dog barks,10,007\na.wav,A dog barks,6,012\n"
        'b.wav,"Rain, then thunder",0,007\n',
    )
    _write(
        meta / "train_average.csv",
        "wav_file_name,text,average_score\na.wav,A dog barks,8\nb.wav,\"Rain, then thunder\",0\n",
    )
    _write(meta / "validation_average.csv", "wav_file_name,text,average_score\nc.wav,A bell rings,5.5\n")
    _write(meta / "test_average.csv", "wav_file_name,text\nd.wav,Silence\n")  # blind
    _write(tmp_path / "wav" / "train" / "a.wav", "x")
    return tmp_path


def test_xacle_listener_and_average_files(xacle_dir: Path):
    data = load_rated(f"xacle:{xacle_dir}")
    assert isinstance(data, RatedPairs) and data.name == "xacle"
    pairs = data.pairs.set_index("wavname")
    assert list(data.pairs.columns) == PAIR_COLUMNS
    assert data.splits == ["train", "validation"]  # the blind test split is skipped
    assert pairs.loc["a.wav", "human"] == pytest.approx(0.8)
    assert pairs.loc["a.wav", "human_std"] == pytest.approx(0.2)  # population std
    assert pairs.loc["a.wav", "n_ratings"] == 2
    assert pairs.loc["b.wav", "text"] == "Rain, then thunder"
    # Average-only split: human known, listener count unknown.
    assert pairs.loc["c.wav", "human"] == pytest.approx(0.55)
    assert pairs.loc["c.wav", "n_ratings"] == 0 and np.isnan(pairs.loc["c.wav", "human_std"])
    assert pairs["audio_exists"].to_dict() == {"a.wav": True, "b.wav": False, "c.wav": False}
    assert pairs.loc["c.wav", "audio"] == str(xacle_dir / "wav" / "validation" / "c.wav")
    assert set(data.ratings["listener_id"]) == {"007", "012"}
    assert len(data.split("validation").ratings) == 0
    assert (pairs["system"] == "").all() and pairs["natural"].isna().all()


def test_xacle_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="meta_data"):
        load_rated(f"xacle:{tmp_path}")
    _write(tmp_path / "meta_data" / "train.csv", "wav_file_name,text,score,listener_id\na.wav,x,11,1\n")
    with pytest.raises(DatasetError, match="outside"):
        load_rated(f"xacle:{tmp_path}")


def test_manifest_csv_averages_rows_and_rescales(tmp_path: Path, caplog):
    _write(tmp_path / "audio" / "one.wav", "x")
    path = _write(
        tmp_path / "ratings.csv",
        "audio,text,score,listener_id,system,split\n"
        "audio/one.wav,A cat meows,8,0001,mysys,test\n"
        "audio/one.wav,A cat meows,4,0002,,test\n"
        "/nowhere/two.wav,None,0,0001,other,test\n"
        "audio/one.wav,NA,10,0003,mysys,train\n",
    )
    with caplog.at_level(logging.INFO, logger="humanclap.data.manifest"):
        data = load_rated(str(path))
    assert "0-10" in caplog.text
    pairs = data.pairs
    assert list(pairs["text"]) == ["A cat meows", "None", "NA"]  # not parsed as missing
    first = pairs.iloc[0]
    assert first["human"] == pytest.approx(0.6) and first["n_ratings"] == 2
    assert first["system"] == "mysys" and first["split"] == "test"
    assert first["audio"] == str(tmp_path / "audio" / "one.wav") and first["audio_exists"]
    assert not pairs.iloc[1]["audio_exists"] and pairs.iloc[1]["audio"] == "/nowhere/two.wav"
    assert pairs["pair_id"].is_unique
    assert list(data.ratings["listener_id"]) == ["0001", "0002", "0001", "0003"]


def test_manifest_jsonl_audio_root_and_scales(tmp_path: Path):
    rows = [
        {"audio": "x.wav", "text": "wind", "score": 0.25, "listener_id": 7, "natural": True},
        {"audio": "x.wav", "text": "wind", "score": 0.75},
    ]
    path = _write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    _write(tmp_path / "wavs" / "x.wav", "x")
    data = load_rated(str(path), audio_root=str(tmp_path / "wavs"))
    row = data.pairs.iloc[0]
    assert row["human"] == pytest.approx(0.5) and row["audio_exists"]
    assert row["natural"] is True and row["split"] == "all" and row["system"] == ""
    assert list(data.ratings["listener_id"]) == ["7", ""]
    # Explicit scales: 1-5 MOS maps to 0-1 by (s - 1) / 4.
    _write(tmp_path / "mos.csv", "audio,text,score\nx.wav,a,1\nx.wav,b,5\nx.wav,c,4\n")
    mos = load_manifest(tmp_path / "mos.csv", score_scale="1-5").pairs
    assert list(mos["human"]) == [0.0, 1.0, 0.75]
    assert list(load_manifest(tmp_path / "mos.csv", score_scale=(0, 5)).pairs["human"]) == [0.2, 1.0, 0.8]


@pytest.mark.parametrize(
    "content, match",
    [
        ("audio,text\nx.wav,a\n", "missing column"),
        ("audio,text,score\nx.wav,a,high\n", "non-numeric"),
        ("audio,text,score\nx.wav,a,20\n", "outside"),
        ("audio,text,score\n,a,1\n", "empty 'audio'"),
        ("audio,text,score,split\nx.wav,a,1,train\nx.wav,a,2,test\n", "disagree"),
    ],
)
def test_manifest_errors(tmp_path: Path, content: str, match: str):
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(DatasetError, match=match):
        load_rated(str(path))


def test_manifest_bad_files(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        load_rated(str(tmp_path / "missing.csv"))
    path = _write(tmp_path / "bad.jsonl", '{"audio": "x.wav", "text": "a", "score": 1}\n{oops\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_rated(str(path))
    with pytest.raises(DatasetError, match="score_scale"):
        load_manifest(path, score_scale="big")
