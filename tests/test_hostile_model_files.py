"""Hostile model files (issue 16, items 3 and 6): each is one ``ModelLoadError`` at load (exit 2),
never a hang, an internal error (exit 3) or a model that scores with silently changed weights.

* a model file that is a FIFO or a device (reading it would block forever or never end);
* integer/bool tensors where the model has float weights (they were cast and scored);
* a tokenizer with more tokens than the text tower's embedding table (IndexError per text);
* MS CLAP configs with zero, negative or absurd sizes and rates (errors on every clip);
* messages: a pickle refusal says what was refused and never advises ``weights_only=False``;
  a shape mismatch names the tensor and both shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_manifest
from safetensors.torch import load_file, save_file

from humanclap import ModelLoadError, load_scorer
from humanclap.recipes.tiny_msclap import build_tiny_msclap, tiny_msclap
from humanclap.scoring.clap.laion_checkpoint import read_state_dict
from humanclap.scoring.msclap import MSClapModel, is_msclap_folder, load_pth

PICKLE_REFUSAL = "refused: the file holds code, not only tensors"


class Blocked(BaseException):
    """Raised by the alarm: not an OSError (a TimeoutError is), which loaders catch."""


@pytest.fixture(autouse=True)
def no_hang():
    """A load that blocks on a FIFO fails the test after 30 s instead of hanging the suite
    (SIGALRM interrupts a blocked open())."""

    def stop(*_):
        raise Blocked("the load blocked: a FIFO or device was opened")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def ms_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("msclap")
    return {v: build_tiny_msclap(root / v, v) for v in ("2022", "2023")}


@pytest.fixture(scope="module")
def ms_pth(tmp_path_factory) -> Path:
    return build_tiny_msclap(tmp_path_factory.mktemp("msclap_pth"), "2023", pth=True)


def _copy(src: Path, tmp_path: Path, name: str = "ckpt") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def _refused(spec: Path, match: str) -> str:
    with pytest.raises(ModelLoadError, match=match) as exc:
        load_scorer(str(spec), device="cpu")
    return str(exc.value)


def _cli_score(tmp_path: Path, model: Path, texts=("a dog barks", "rain falls")) -> subprocess.CompletedProcess:
    """``humanclap score`` in a subprocess (a hang or an exit 3 is what was wrong), 2 clips."""
    manifest = write_manifest(tmp_path / "job", [{"audio": f"c{i}.wav", "text": t} for i, t in enumerate(texts)])
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "humanclap.cli",
            "score",
            str(manifest),
            "--model",
            str(model),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- 1. a model file that is not a regular file ------------------------------------------------
def _make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize(
    "name", ["config.json", "preprocessor_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
)
def test_fifo_in_a_clap_folder_is_refused_not_waited_on(name, tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    _make_fifo(folder / name)
    msg = _refused(folder, rf"{name} is a FIFO \(named pipe\), not a file")
    assert "Replace it with the real file" in msg


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_fifo_in_an_msclap_folder_is_refused(name, ms_folders, tmp_path):
    folder = _copy(ms_folders["2023"], tmp_path)
    _make_fifo(folder / name)
    _refused(folder, rf"{name} is a FIFO \(named pipe\), not a file")
    if name == "config.json":
        assert not is_msclap_folder(folder)  # the predicate never opens it either


def test_fifo_or_device_as_pth_or_pt_is_refused(ms_pth, tmp_path):
    folder = _copy(ms_pth.parent, tmp_path)
    fifo = folder / "w.pth"
    _make_fifo(fifo)
    _refused(fifo, r"w.pth is a FIFO \(named pipe\), not a file")
    with pytest.raises(ModelLoadError, match=r"is a FIFO \(named pipe\), not a file"):
        load_pth(fifo)
    _make_fifo(folder / "tokenizer.json")  # the tokenizer beside a real .pth
    _refused(folder / ms_pth.name, r"tokenizer.json is a FIFO \(named pipe\), not a file")
    os.symlink("/dev/zero", tmp_path / "zero.pt")
    with pytest.raises(ModelLoadError, match=r"zero.pt is a character device, not a file"):
        read_state_dict(tmp_path / "zero.pt")


def test_device_as_weights_is_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    (folder / "model.safetensors").unlink()
    os.symlink("/dev/zero", folder / "model.safetensors")
    _refused(folder, r"model.safetensors is a character device, not a file")


def test_cli_with_a_fifo_config_exits_2_at_once(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    _make_fifo(folder / "config.json")
    run = _cli_score(tmp_path, folder)  # hung forever before
    assert run.returncode == 2, run.stderr
    assert "config.json is a FIFO (named pipe), not a file" in run.stderr and "Traceback" not in run.stderr


# -- 2. integer or bool tensors where float weights belong --------------------------------------
def _edit_weights(path: Path, edit) -> None:
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


@pytest.mark.parametrize("dtype, label", [(torch.int32, "I32"), (torch.bool, "BOOL")])
def test_integer_weights_in_a_clap_folder_are_refused(dtype, label, tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    key = "audio_projection.linear1.weight"
    _edit_weights(folder / "model.safetensors", lambda s: s.__setitem__(key, (s[key] * 100).to(dtype)))
    msg = _refused(folder, f"{key} is {label}")
    assert "floating point" in msg


def test_integer_buffers_and_half_precision_weights_still_load(tiny_unfused, tmp_path):
    # position_ids, token_type_ids, relative_position_index, num_batches_tracked are integer in
    # the model too; a float16 copy of a float weight is a float (cast as before).
    folder = _copy(tiny_unfused, tmp_path)
    key = "audio_projection.linear1.weight"
    _edit_weights(folder / "model.safetensors", lambda s: s.__setitem__(key, s[key].half()))
    assert load_scorer(str(folder), device="cpu").embedding_dim == 16


@pytest.mark.parametrize("version", ["2022", "2023"])
def test_integer_weights_in_an_msclap_folder_are_refused(version, ms_folders, tmp_path):
    folder = _copy(ms_folders[version], tmp_path)
    key = "caption_encoder.projection.linear1.weight"
    _edit_weights(folder / "model.safetensors", lambda s: s.__setitem__(key, s[key].to(torch.int64)))
    _refused(folder, rf"{key} is torch.int64.*floating point")


def test_integer_weights_in_an_msclap_pth_are_refused(tmp_path):
    state = tiny_msclap("2022").state_dict()  # num_batches_tracked buffers stay int64: allowed
    state["audio_encoder.base.bn0.weight"] = torch.ones_like(state["audio_encoder.base.bn0.weight"], dtype=torch.uint8)
    path = tmp_path / "w.pth"
    torch.save({"model": state, "msclap_config": tiny_msclap("2022").config.to_dict()}, path)
    with pytest.raises(ModelLoadError, match=r"audio_encoder.base.bn0.weight is torch.uint8"):
        load_pth(path)


# -- 3. a tokenizer larger than the embedding table --------------------------------------------
def _grow_tokenizer(folder: Path, extra: int = 10) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens([f"zzword{i}" for i in range(extra)])
    tok.save_pretrained(folder)
    return len(tok)


def test_tokenizer_larger_than_the_clap_embedding_table_is_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    size = _grow_tokenizer(folder)
    msg = _refused(folder, rf"the tokenizer has {size} tokens .* the text tower's embedding table has 300 rows")
    assert "same checkpoint" in msg


@pytest.mark.parametrize("version", ["2022", "2023"])
def test_tokenizer_larger_than_the_msclap_embedding_table_is_refused(version, ms_folders, tmp_path):
    folder = _copy(ms_folders[version], tmp_path)
    size = _grow_tokenizer(folder)
    _refused(folder, rf"the tokenizer has {size} tokens .* embedding table has \d+ rows")


def test_cli_with_a_too_large_tokenizer_exits_2_not_3(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    _grow_tokenizer(folder)
    run = _cli_score(tmp_path, folder, texts=("a dog barks zzword9", "rain falls"))  # was IndexError, exit 3
    assert run.returncode == 2, run.stderr
    assert "embedding table has 300 rows" in run.stderr and "Traceback" not in run.stderr


# -- 4. MS CLAP configs with absurd sizes and rates ---------------------------------------------
BAD_CONFIGS = [
    ("sampling_rate", 0),
    ("sampling_rate", -5),
    ("sampling_rate", "44k"),
    ("sampling_rate", 10**7),
    ("duration", 0),
    ("duration", -1),
    ("duration", 100000),
    ("window_size", 0),
    ("hop_size", 0),
    ("hop_size", 1e9),
    ("mel_bins", 0),
    ("text_len", 0),
    ("text_len", 100000),
    ("d_proj", 0),
    ("d_proj", 10**9),
    ("fmax", 0),
    ("fmin", -10),
    ("mel_sampling_rate", 0),
    ("classes_num", 0),
    ("out_emb", True),
    ("transformer_embed_dim", 0),
    ("cnn14_channels", []),
    ("text_config", {"vocab_size": -1}),
    ("htsat", {"spec_size": 0}),
]


@pytest.mark.parametrize("field, value", BAD_CONFIGS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_CONFIGS])
def test_bad_msclap_config_is_one_load_error(field, value, ms_folders, tmp_path):
    version = "2022" if field == "cnn14_channels" else "2023"
    folder = _copy(ms_folders[version], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=rf"config.json: {field}"):
        MSClapModel.from_pretrained(folder)


def test_bad_config_inside_an_msclap_pth_is_refused(tmp_path):
    model = tiny_msclap("2023")
    config = {**model.config.to_dict(), "sampling_rate": 0}
    torch.save({"model": model.state_dict(), "msclap_config": config}, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError, match=r"w.pth: sampling_rate is 0, not an integer in 1000..192000"):
        load_pth(tmp_path / "w.pth")


def test_the_releases_and_tiny_configs_pass_the_checks():
    from humanclap.scoring.msclap.checks import check_config
    from humanclap.scoring.msclap.model import MSClapConfig

    for version in ("2022", "2023"):
        check_config(MSClapConfig.release(version), "release")
        check_config(MSClapConfig.tiny(version), "tiny")


def test_cli_with_a_zero_window_msclap_config_exits_2_not_3(ms_folders, tmp_path):
    folder = _copy(ms_folders["2023"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "window_size": 0}))
    run = _cli_score(tmp_path, folder)  # was ZeroDivisionError, exit 3
    assert run.returncode == 2, run.stderr
    assert "window_size is 0" in run.stderr and "Traceback" not in run.stderr


# -- 5. messages -----------------------------------------------------------------------------
def test_pickled_code_in_an_msclap_pth_is_refused_without_weights_only_advice(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": tiny_msclap("2022").state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ModelLoadError, match=PICKLE_REFUSAL) as exc:
        load_pth(path)
    assert "argparse.Namespace" in str(exc.value) and "weights_only=False" not in str(exc.value)


def test_pickled_code_in_a_laion_pt_is_refused_without_weights_only_advice(tmp_path):
    path = tmp_path / "laion.pt"
    torch.save({"state_dict": {"a": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ModelLoadError, match=PICKLE_REFUSAL) as exc:
        read_state_dict(path)
    assert "argparse.Namespace" in str(exc.value) and "weights_only=False" not in str(exc.value)


def test_pickled_code_in_a_clap_pytorch_model_bin_is_refused(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "evil": argparse.Namespace(lr=1)}, folder / "pytorch_model.bin")
    msg = _refused(folder, PICKLE_REFUSAL)
    assert "pytorch_model.bin" in msg and "weights_only=False" not in msg


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tiny_unfused, tmp_path):
    folder = _copy(tiny_unfused, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "projection_dim": 24}))  # the weights are 16-d
    msg = _refused(folder, r"audio_projection.linear1.bias: \(16,\) in the weights, \(24,\) in the model config")
    assert "report" not in msg and "same checkpoint" in msg


def test_a_mismatch_reported_by_name_alone_gets_its_shapes(tiny_unfused, tmp_path):
    # transformers 4.x lists mismatched tensors by name only; the shapes come from the file's
    # header and the model
    from transformers import ClapModel

    from humanclap.scoring.checkpoint import check_loading_info

    folder = _copy(tiny_unfused, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "projection_dim": 24}))
    model = ClapModel.from_pretrained(folder, ignore_mismatched_sizes=True)
    with pytest.raises(ModelLoadError, match=r"text_projection.linear1.bias: \(16,\) in the weights, \(24,\) in"):
        check_loading_info({"mismatched_keys": ["text_projection.linear1.bias"]}, str(folder), model, folder)
