"""Hostile checkpoints, devices and caches: each is a clear error (exit 2) before anything is
scored, never a model with random weights, an empty tokenizer or a traceback mid-run."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav

from humanclap import CLAPScorer, ModelLoadError
from humanclap.cli import main
from humanclap.errors import UsageError
from humanclap.scoring.cache import check_cache_folder
from humanclap.scoring.checkpoint import check_tokenizer
from humanclap.scoring.clap.scorer import resolve_device
from humanclap.scoring.engine import EmbeddingEngine, open_cache

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "ckpt"))


def _job(tmp_path: Path, n: int = 3) -> Path:
    """A small manifest: n clips, one missing file."""
    rows = [
        {
            "audio": str(write_wav(tmp_path / f"c{i}.wav", noise_clip(0.3 + 0.1 * i, seed=i))),
            "text": ["a dog barks", "rain falls on a roof", "a bell rings"][i % 3],
        }
        for i in range(n)
    ]
    rows.append({"audio": str(tmp_path / "missing.wav"), "text": "a dog barks"})
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text"])
        w.writeheader()
        w.writerows(rows)
    return path


def _cli(capsys, *args) -> tuple[int, str]:
    code = main(["score", *map(str, args)])
    return code, capsys.readouterr().err


def _refused(folder: Path, match: str) -> str:
    with pytest.raises(ModelLoadError, match=match) as exc:
        CLAPScorer.from_pretrained(str(folder), device="cpu")
    return str(exc.value)


# -- 1. a model loads whole or not at all ---------------------------------------------------
def test_folder_without_tokenizer_is_refused_naming_the_files(tiny_unfused, tmp_path, capsys):
    folder = _copy(tiny_unfused, tmp_path)
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    msg = _refused(folder, "the tokenizer is missing")
    assert "tokenizer.json" in msg and "vocab.json + merges.txt" in msg
    assert "a complete checkpoint folder holds config.json, model.safetensors" in msg
    manifest = _job(tmp_path)
    before = manifest.read_bytes()
    code, err = _cli(capsys, manifest, "--model", folder, "-o", tmp_path / "out.csv")
    assert code == 2 and "the tokenizer is missing" in err and "Traceback" not in err
    assert not (tmp_path / "out.csv").exists() and manifest.read_bytes() == before


def test_an_empty_tokenizer_is_refused(tiny_unfused, tmp_path):
    import transformers
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # A tokenizer of the 5 special tokens alone, built the same way on every transformers.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bare = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials)}, merges=[], unk_token="<unk>"))
    empty = PreTrainedTokenizerFast(
        tokenizer_object=bare,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    with pytest.raises(ModelLoadError, match=r"tokenizer is empty or broken \(5 tokens"):
        check_tokenizer(empty, "bare")
    folder = _copy(tiny_unfused, tmp_path)
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    if int(transformers.__version__.split(".")[0]) >= 5:
        # What transformers 5 builds for a folder without tokenizer files: 5 special tokens
        # (4.x raises instead; the loader refuses such a folder before it gets here).
        empty = AutoTokenizer.from_pretrained(folder)
        with pytest.raises(ModelLoadError, match=r"tokenizer is empty or broken \(5 tokens"):
            check_tokenizer(empty, str(folder))
    check_tokenizer(AutoTokenizer.from_pretrained(tiny_unfused), "ok")  # a real one passes


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_weights_are_refused_naming_the_file(damage, tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"empty": b"", "truncated": data[:-100], "garbage": np.random.default_rng(0).bytes(4096)}[damage]
    )
    msg = _refused(folder, "model.safetensors: the weights file is")
    assert ("empty" in msg) == (damage == "empty")


def test_missing_weights_file_is_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    (folder / "model.safetensors").unlink()
    _refused(folder, r"no weights \(none of model.safetensors")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", r"config.json: the model config is not readable JSON"),
        ('["a", "list"]', r"config.json: the model config must be a JSON object"),
        ('{"model_type": "bert", "hidden_size": 32}', r"model_type is 'bert', not 'clap'"),
    ],
)
def test_bad_config_json_is_refused(content, match, tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    (folder / "config.json").write_text(content)
    _refused(folder, match)


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_weights_are_refused_not_initialised_at_random(tiny_unfused, tmp_path):
    # transformers 5 loads this with text_projection.linear1.bias at random and only logs it
    folder = _copy(tiny_unfused, tmp_path)
    _edit_weights(folder, lambda s: s.pop("text_projection.linear1.bias"))
    _refused(folder, r"1 weights missing from the weights \(would be random\): text_projection.linear1.bias")


def test_unexpected_weights_are_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    _edit_weights(folder, lambda s: s.__setitem__("text_model.extra_layer.weight", torch.zeros(3)))
    _refused(folder, "in the weights but not in the model config: text_model.extra_layer.weight")


def test_weights_of_another_shape_are_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["projection_dim"] = 24  # the weights are 16-d
    (folder / "config.json").write_text(json.dumps(config))
    _refused(
        folder,
        r"wrong shape for the model config: audio_projection.linear1.bias: \(16,\) in the weights, "
        r"\(24,\) in the model config.*must come from the same checkpoint",
    )


def test_unreadable_extractor_config_is_refused_not_replaced(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    (folder / "preprocessor_config.json").write_text("{oops")
    _refused(folder, "preprocessor_config.json: the feature extractor config is not readable JSON")


# -- 2. the revision covers every file that changes a score ----------------------------------
@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"])
def test_revision_changes_with_tokenizer_and_extractor_files(name, tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    a = CLAPScorer.from_pretrained(str(folder), device="cpu").info.revision
    data = json.loads((folder / name).read_text())
    if name == "tokenizer.json":  # swap two BPE merges: a valid tokenizer that splits differently
        merges = data["model"]["merges"]
        merges[0], merges[1] = merges[1], merges[0]
    else:
        data["humanclap_test_edit"] = 1  # an extra key: still a valid file
    (folder / name).write_text(json.dumps(data))
    assert CLAPScorer.from_pretrained(str(folder), device="cpu").info.revision != a


def test_unparseable_tokenizer_file_is_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "oops"')
    _refused(folder, "tokenizer.json|the tokenizer files cannot be loaded")


def test_cache_never_serves_text_embeddings_of_another_tokenizer(tiny_unfused, tmp_path, capsys):
    from humanclap.recipes.tiny import train_tokenizer

    folder = _copy(tiny_unfused, tmp_path)
    manifest, cache = _job(tmp_path), tmp_path / "cache"
    assert _cli(capsys, manifest, "--model", folder, "-o", tmp_path / "a.csv", "--cache", cache)[0] == 1
    # Another tokenizer of the same vocabulary size: the model still loads, texts split differently.
    train_tokenizer(["zebra xylophone quartz", "quiet jazz vibes"] * 5, vocab_size=300).save_pretrained(folder)
    code, err = _cli(capsys, manifest, "--model", folder, "-o", tmp_path / "b.csv", "--cache", cache)
    assert code == 1 and "cache hits" not in err  # revision changed: no entry applies
    code, _ = _cli(capsys, manifest, "--model", folder, "-o", tmp_path / "ref.csv")
    b, ref = (tmp_path / "b.csv").read_bytes(), (tmp_path / "ref.csv").read_bytes()
    assert b == ref and b != (tmp_path / "a.csv").read_bytes()


# -- 3. devices and dtypes -------------------------------------------------------------------
@pytest.mark.parametrize("device", ["foo", "gpu", "cpu:1", "cuda:x", "mps:0", ""])
def test_unknown_device_is_a_usage_error_listing_valid_forms(device):
    with pytest.raises(UsageError, match="valid forms: auto, cpu, cuda, cuda:N"):
        resolve_device(device)


def test_unavailable_devices_are_usage_errors():
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(UsageError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        with pytest.raises(UsageError, match="MPS is not available"):
            resolve_device("mps")
    assert resolve_device("CPU") == torch.device("cpu")


def test_bad_dtype_is_a_usage_error(tiny_unfused, tmp_path, capsys):
    with pytest.raises(UsageError, match="dtype must be one of fp32, bf16, fp16, got 'fp64'"):
        CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu", dtype="fp64")
    with pytest.raises(UsageError, match="fp16 is not supported on CPU"):
        CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu", dtype="fp16")
    code, err = _cli(capsys, _job(tmp_path), "--model", tiny_unfused, "--device", "foo")
    assert code == 2 and "--device 'foo' not understood; valid forms" in err


# -- 4. the cache ----------------------------------------------------------------------------
def _cache_refused(capsys, tmp_path, model, cache, match) -> None:
    manifest = _job(tmp_path)
    before = manifest.read_bytes()
    out = tmp_path / "out.csv"
    code, err = _cli(capsys, manifest, "--model", model, "-o", out, "--cache", cache)
    assert code == 2 and match in err and "Traceback" not in err, err
    assert not out.exists() and manifest.read_bytes() == before  # nothing was scored


def test_cache_path_that_is_a_file(tiny_unfused, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.write_text("I am a file")
    _cache_refused(capsys, tmp_path, tiny_unfused, cache, "is a file, not a folder")
    assert cache.read_text() == "I am a file"


def test_corrupt_cache_database(tiny_unfused, tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    garbage = np.random.default_rng(1).bytes(8192)
    (tmp_path / "cache/embeddings.sqlite").write_bytes(garbage)
    _cache_refused(capsys, tmp_path, tiny_unfused, tmp_path / "cache", "is not an SQLite database")
    assert (tmp_path / "cache/embeddings.sqlite").read_bytes() == garbage  # left as it was


@pytest.mark.skipif(
    AS_ROOT,
    reason="running as root: chmod does not stop root's writes, so a read-only folder or database cannot be simulated",
)
def test_unwritable_cache_folder_and_read_only_database(tiny_unfused, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"):
            check_cache_folder(folder)
    finally:
        folder.chmod(0o700)
    check_cache_folder(tmp_path / "db")  # creates a valid database
    db = tmp_path / "db/embeddings.sqlite"
    db.chmod(0o400)
    try:
        _cache_refused(capsys, tmp_path, tiny_unfused, tmp_path / "db", "is read-only")
    finally:
        db.chmod(0o600)


def test_sqlite_error_mid_run_switches_the_cache_off_not_the_job(tiny_unfused, tmp_path, caplog):
    class Broken:  # what a connection does once the disk fails or the file is deleted
        def execute(self, *args):
            raise sqlite3.OperationalError("disk I/O error")

        executemany = execute

        def close(self):
            pass

    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    files = [str(write_wav(tmp_path / f"c{i}.wav", noise_clip(0.4, seed=i))) for i in range(3)]
    texts = ["a dog barks", "a bell rings", "music plays"]
    engine = EmbeddingEngine(scorer, 2, open_cache(tmp_path / "cache", scorer))
    engine.cache._db = Broken()
    with caplog.at_level(logging.WARNING):
        engine.embed_unique(files, texts, progress=False)
    assert "disk I/O error" in engine.cache.disabled and "continuing without it" in caplog.text
    plain = EmbeddingEngine(scorer, 2)
    plain.embed_unique(files, texts, progress=False)
    for f in files:
        np.testing.assert_array_equal(engine.audio_emb[f], plain.audio_emb[f])


def test_missing_file_error_is_the_same_with_and_without_cache(tiny_unfused, tmp_path, capsys):
    manifest = _job(tmp_path)
    errors = []
    for extra in ([], ["--cache", tmp_path / "cache"], ["--cache", tmp_path / "cache"]):
        out = tmp_path / f"out{len(errors)}.jsonl"
        assert _cli(capsys, manifest, "--model", tiny_unfused, "-o", out, *extra)[0] == 1
        errors.append([json.loads(line)["error"] for line in out.read_text().splitlines()])
    assert errors[0] == errors[1] == errors[2]
    assert errors[0][-1].endswith("missing.wav: file not found (check the path or --audio-root)")
