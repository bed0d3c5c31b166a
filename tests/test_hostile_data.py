"""Hostile input to the dataset side: synth flags and reference files, XACLE's two column
namings. Each case is built here and asserts the exit code, the message and what was written."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from humanclap.cli import main as cli_main
from humanclap.data import load_rated
from humanclap.synth.dataset import real_histograms


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_synth_refuses_non_positive_workers_before_writing(tmp_path, capsys, workers):
    out = tmp_path / "synth"
    assert cli_main(["synth", "-o", str(out), "--size", "small", "--workers", workers]) == 2
    assert "workers must be at least 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("content", ["", "wavname,text,score,anchor label,in RELATE dataset\n", "a,b\n1,2\n"])
def test_synth_refuses_a_reference_csv_without_rated_pairs(tmp_path, capsys, content):
    rel = tmp_path / "REL.csv"
    rel.write_text(content)
    assert cli_main(["synth", "-o", str(tmp_path / "s"), "--size", "small", "--real-rel-csv", str(rel)]) == 2
    err = capsys.readouterr().err
    assert "nan" not in err.lower() and str(rel) in err
    with pytest.raises(ValueError):
        real_histograms(rel)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_xacle_accepts_the_dataset_readme_column_names(tmp_path, caplog):
    meta = tmp_path / "meta_data"
    _write(meta / "train.csv", "wave_file_name,text,score,listener_id\na.wav,A dog,10,007\na.wav,A dog,6,012\n")
    _write(meta / "validation_average.csv", "wave_file_name,text,average_semantic_alignement_score\nc.wav,A bell,5.5\n")
    with caplog.at_level(logging.INFO, logger="humanclap.data.xacle"):
        data = load_rated(f"xacle:{tmp_path}")
    pairs = data.pairs.set_index("wavname")
    assert pairs.loc["a.wav", "human"] == pytest.approx(0.8)
    assert pairs.loc["c.wav", "human"] == pytest.approx(0.55)
    assert "average_semantic_alignement_score" in caplog.text and "wave_file_name" in caplog.text


def test_xacle_refuses_both_namings_at_once(tmp_path):
    _write(
        tmp_path / "meta_data" / "validation_average.csv",
        "wav_file_name,wave_file_name,text,average_score\na.wav,a.wav,x,5\n",
    )
    with pytest.raises(ValueError, match="keep one naming"):
        load_rated(f"xacle:{tmp_path}")
