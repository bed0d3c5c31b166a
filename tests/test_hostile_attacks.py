"""Issue 11's acceptance, attacked as a hostile user would: odd paths, outputs aimed at
inputs in new ways, half-saved or mis-set model folders, bad flags. Each test builds its
files in tmp_path, runs the CLI in-process against the tiny real model and checks the exit
code, the message and the bytes of the files involved."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import noise_clip, write_manifest, write_wav

from humanclap.cli import main


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest(folder: Path, rows: list[dict], name: str = "m.csv") -> Path:
    return write_manifest(folder, rows, name, seed=lambda i, _: i)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- odd paths: they are just paths ---------------------------------------------------------
def test_spaces_unicode_newline_and_leading_dash_in_names_score(tiny_unfused, tmp_path, capsys, monkeypatch):
    names = ["a b/ü clip.wav", "new\nline.wav", "-dash.wav"]
    m = manifest(tmp_path, [{"audio": n, "text": t} for n, t in zip(names, ["a dog", "rain", "a bell"])])
    shutil.copy(m, tmp_path / "-m.csv")
    before = m.read_bytes()
    code, _, err = cli(capsys, "score", m, "--model", tiny_unfused, "-o", tmp_path / "o.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "o.csv")
    assert [r["audio"] for r in rows] == names and all(r["error"] == "" and r["clapscore"] for r in rows)
    # a manifest whose name starts with '-' is reachable after '--', with the same scores
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "score", "--model", tiny_unfused, "-o", "o2.csv", "--", "-m.csv")
    assert code == 0, err
    assert (tmp_path / "o2.csv").read_bytes() == (tmp_path / "o.csv").read_bytes()
    assert m.read_bytes() == before


@pytest.mark.parametrize("flag", ["manifest", "-o"])
def test_dash_is_not_stdin_or_stdout_but_a_clear_usage_error(tiny_unfused, tmp_path, capsys, monkeypatch, flag):
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    monkeypatch.chdir(tmp_path)
    args = ["-", "-o", "o.csv"] if flag == "manifest" else ["m.csv", "-o", "-"]
    code, out, err = cli(capsys, "score", *args, "--model", tiny_unfused)
    assert code == 2 and out == ""
    assert err.startswith("humanclap score: error: ") and "must end in .csv" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "x.wav"]
    assert m.exists()


# -- outputs aimed at inputs in new ways ----------------------------------------------------
def test_output_beside_the_cache_and_cache_files_as_outputs(tiny_unfused, tmp_path, capsys):
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    before = m.read_bytes()
    # the cache folder = the output's (and the manifest's) folder: both live side by side
    code, _, err = cli(capsys, "score", m, "--model", tiny_unfused, "-o", tmp_path / "o.csv", "--cache", tmp_path)
    assert code == 0, err
    assert (tmp_path / "embeddings.sqlite").is_file() and read_csv(tmp_path / "o.csv")[0]["error"] == ""
    db = (tmp_path / "embeddings.sqlite").read_bytes()
    # -o = the cache database, --cache = the manifest or an audio file: refused, untouched
    for args, message in (
        (["-o", tmp_path / "embeddings.sqlite", "--cache", tmp_path, "--overwrite"], "must end in .csv or .jsonl"),
        (["-o", tmp_path / "o3.csv", "--cache", m], "is a file, not a folder"),
        (["-o", tmp_path / "o4.csv", "--cache", tmp_path / "x.wav"], "is a file, not a folder"),
    ):
        code, _, err = cli(capsys, "score", m, "--model", tiny_unfused, *args)
        assert code == 2 and message in err and "Traceback" not in err
    assert m.read_bytes() == before and (tmp_path / "embeddings.sqlite").read_bytes() == db
    assert not (tmp_path / "o3.csv").exists() and not (tmp_path / "o4.csv").exists()


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_audio_root_that_is_not_a_folder_is_refused_once(tiny_unfused, tmp_path, capsys, kind):
    # Before: exit 1 with every row "file not found", as if each clip were at fault.
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    root = tmp_path / "x.wav" if kind == "file" else tmp_path / "nowhere"
    before = m.read_bytes()
    for command, out in (("score", ["-o", tmp_path / "o.csv"]), ("evaluate", ["-o", tmp_path / "ev"])):
        extra = ["--data", m] if command == "evaluate" else [m]
        code, _, err = cli(capsys, command, *extra, "--model", tiny_unfused, *out, "--audio-root", root)
        assert code == 2, err
        assert err.startswith(f"humanclap {command}: error: --audio-root {root} is ")
        assert ("a file" if kind == "file" else "missing") in err and "not a folder" in err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "ev").exists()
    assert m.read_bytes() == before


# -- model folders ----------------------------------------------------------------------------
def copy_model(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit:
        edit(dst)
    return dst


def set_extractor(key, value):
    def edit(folder: Path) -> None:
        path = folder / "preprocessor_config.json"
        cfg = json.loads(path.read_text())
        cfg[key] = value
        path.write_text(json.dumps(cfg))

    return edit


@pytest.mark.parametrize(
    "key, value",
    [
        ("sampling_rate", 0),
        ("sampling_rate", -16000),
        ("sampling_rate", "16k"),
        ("hop_length", 0),
        ("sampling_rate", 16000.0),  # was a numpy TypeError, exit 3
        ("frequency_max", 10),
    ],
)
def test_extractor_with_impossible_settings_is_refused_at_load(tiny_unfused, tmp_path, capsys, key, value):
    # Before: 0/-16000 gave every row "unreadable audio (Sample rate should be over 0)"
    # (exit 1, blaming the clips); "16k" was a TypeError traceback (exit 3).
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    model = copy_model(tiny_unfused, tmp_path / "model", set_extractor(key, value))
    before = m.read_bytes()
    code, _, err = cli(capsys, "score", m, "--model", model, "-o", tmp_path / "o.csv")
    assert code == 2, err
    assert err.startswith("humanclap score: error: ") and "preprocessor_config.json" in err
    assert "Traceback" not in err and not (tmp_path / "o.csv").exists() and m.read_bytes() == before


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: (f / "config.json").unlink(), "no config.json there"),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32})),
            "model_type is 'bert', not 'clap'",
        ),
        (lambda f: (f / "config.json").write_text("[1, 2]"), "must be a JSON object"),
    ],
)
def test_half_saved_or_foreign_model_folders_are_refused(tiny_unfused, tmp_path, capsys, edit, message):
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    model = copy_model(tiny_unfused, tmp_path / "model", edit)
    code, _, err = cli(capsys, "score", m, "--model", model, "-o", tmp_path / "o.csv")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_a_model_folder_of_symlinks_scores_like_the_original(tiny_unfused, tmp_path, capsys):
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    links = tmp_path / "links"
    links.mkdir()
    for f in tiny_unfused.iterdir():
        (links / f.name).symlink_to(f)
    assert cli(capsys, "score", m, "--model", tiny_unfused, "-o", tmp_path / "a.csv")[0] == 0
    assert cli(capsys, "score", m, "--model", links, "-o", tmp_path / "b.csv")[0] == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_hub_id_with_hub_offline_is_one_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    code, _, err = cli(capsys, "score", m, "--model", "laion/clap-htsat-unfused", "-o", tmp_path / "o.csv")
    assert code == 2 and "Traceback" not in err
    assert "could not load 'laion/clap-htsat-unfused'" in err and "--model /path/to/checkpoint" in err
    assert not (tmp_path / "o.csv").exists()


def test_extractor_window_too_long_for_the_model_is_refused_at_load(tiny_unfused, tmp_path, capsys):
    # Before: 48 kHz with the tiny model's 16 kHz config made every forward fail inside
    # transformers ("the wav size should be less than or equal to the swin input size"): exit 3.
    m = manifest(tmp_path, [{"audio": "x.wav", "text": "a dog"}])
    model = copy_model(tiny_unfused, tmp_path / "model", set_extractor("sampling_rate", 48000))
    code, _, err = cli(capsys, "score", m, "--model", model, "-o", tmp_path / "o.csv")
    assert code == 2 and "does not fit the model" in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


# -- train: the base model is an input too ----------------------------------------------------
def test_train_refuses_an_output_dir_that_holds_the_base_model(tiny_unfused, tmp_path, capsys):
    # Before: exit 0 and the base model's config/weights were replaced by the fine-tuned ones.
    rows = [
        {"audio": f"c{i}.wav", "text": t, "score": 0.2 * i, "split": "train"}
        for i, t in enumerate(["a dog", "rain", "a bell", "wind", "a car"])
    ]
    data = manifest(tmp_path, rows)
    base = copy_model(tiny_unfused, tmp_path / "base")
    nested = copy_model(tiny_unfused, tmp_path / "run" / "checkpoints" / "best")
    for model, out in ((base, base), (nested, tmp_path / "run")):
        before = {p.name: p.read_bytes() for p in model.iterdir()}
        code, _, err = cli(
            capsys,
            "train",
            "--model",
            model,
            "--data",
            data,
            "--output-dir",
            out,
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--val-split",
            "",
            "--test-split",
            "",
            "--no-progress",
        )
        assert code == 2 and "would overwrite the base model" in err and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_evaluate_refuses_a_huge_n_boot_before_loading_anything(tiny_unfused, tmp_path, capsys):
    # Before: a (10**9 x pairs) resample matrix: MemoryError (exit 3) or the OOM killer.
    from humanclap.defaults import MAX_N_BOOT

    rows = [{"audio": f"c{i}.wav", "text": t, "score": 0.3 * i} for i, t in enumerate(["a dog", "rain", "a bell"])]
    data = manifest(tmp_path, rows)
    before = data.read_bytes()
    code, _, err = cli(
        capsys,
        "evaluate",
        "--data",
        data,
        "--model",
        tiny_unfused,
        "-o",
        tmp_path / "ev",
        "--device",
        "cpu",
        "--n-boot",
        str(10**9),
        "--no-progress",
    )
    assert code == 2 and f"at most {MAX_N_BOOT}" in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists() and data.read_bytes() == before


def test_a_huge_text_scores_quickly_and_like_its_first_77_tokens(tmp_path, tiny_unfused, capsys):
    """A 12 MB caption used to keep the tokenizer busy for minutes: only its first
    MAX_TEXT_CHARS characters are tokenized, which gives the same score (77 tokens are read)."""
    import time

    from humanclap.defaults import MAX_TEXT_CHARS

    write_wav(tmp_path / "a.wav", noise_clip(0.5))
    huge = "a dog barks " * 1_000_000
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio": "a.wav", "text": huge})
        + "\n"
        + json.dumps({"audio": "a.wav", "text": huge[: MAX_TEXT_CHARS // 10]})
        + "\n"
    )
    t0 = time.perf_counter()
    code = main(["score", str(manifest), "--model", str(tiny_unfused), "-o", str(tmp_path / "o.jsonl")])
    assert time.perf_counter() - t0 < 60
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert code == 0 and rows[0]["error"] == rows[1]["error"] == ""
    assert rows[0]["cosine"] == rows[1]["cosine"]  # both are their first 77 tokens
