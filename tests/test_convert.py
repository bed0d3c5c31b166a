"""`humanclap convert`: LAION-CLAP .pt -> transformers folder, offline, on tiny models.

A tiny random ``ClapModel`` is written in laion_clap's layout (``hf_to_laion`` plus the keys
LAION checkpoints carry that the converter drops: torchlibrosa filters, AudioSet head,
training MLPs, the old position_ids buffer), saved as a LAION training checkpoint
(``{"epoch", "name", "state_dict": {"module." + key: tensor}}``) and converted back. The
tiny geometry is registered as an extra architecture for the test; the real presets'
inference is checked on meta-device (shape-only) state dicts of full size.
"""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav
from safetensors.torch import load_file

from humanclap.cli import main
from humanclap.errors import ModelLoadError, UsageError
from humanclap.scoring import laion_convert as lc

# The geometry of humanclap.recipes.tiny (spectrogram 64, 1 s at 16 kHz, 16/32 wide, 2 stages).
TEST_ARCH = lc.HtsatArch(
    "HTSAT-test",
    embed_dim=16,
    depths=(1, 1),
    num_heads=(2, 2),
    window_size=4,
    spec_size=64,
    projection_dim=16,
    sampling_rate=16000,
    window_s=1,
    n_fft=512,
    hop_length=16000 // 62,
    fmax=8000,
)


def tiny_text(vocab: int) -> lc.TextArch:
    # tiny_clap_config keeps ClapTextConfig's layer-norm eps (1e-12); RoBERTa's preset says 1e-5
    return lc.TextArch(
        "roberta-test",
        vocab_size=vocab,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        layer_norm_eps=1e-12,
    )


def humanclap(*args) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*map(str, args)])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def laion_checkpoint(model_dir: Path, path: Path, edit=None, **save_kw) -> dict[str, torch.Tensor]:
    """Write ``model_dir``'s ClapModel as a laion_clap training checkpoint; returns its HF state dict."""
    from transformers import ClapModel

    hf = ClapModel.from_pretrained(model_dir).state_dict()
    sd = lc.hf_to_laion({k: v for k, v in hf.items() if not k.endswith("token_type_ids")})
    bins = TEST_ARCH.n_fft // 2 + 1
    sd.update(
        {  # what real checkpoints carry beside the model (dropped by the converter)
            "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.randn(bins, 1, TEST_ARCH.n_fft),
            "audio_branch.spectrogram_extractor.stft.conv_imag.weight": torch.randn(bins, 1, TEST_ARCH.n_fft),
            "audio_branch.logmel_extractor.melW": torch.rand(bins, 64),
            "audio_branch.tscam_conv.weight": torch.randn(527, 32, 2, 3),
            "audio_branch.tscam_conv.bias": torch.zeros(527),
            "audio_branch.head.weight": torch.randn(527, 527),
            "audio_branch.head.bias": torch.zeros(527),
            "text_transform.sequential.0.weight": torch.randn(16, 16),
            "text_transform.sequential.0.bias": torch.zeros(16),
            "audio_transform.sequential.3.weight": torch.randn(16, 16),
            "audio_transform.sequential.3.bias": torch.zeros(16),
        }
    )
    if edit:
        edit(sd)
    ckpt = {
        "epoch": 45,
        "name": "tiny",
        "best_metric": np.float64(0.5),
        "state_dict": {"module." + k: v for k, v in sd.items()},
    }
    torch.save(ckpt, path, **save_kw)
    return hf


@pytest.fixture
def registered(monkeypatch, tiny_unfused):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tiny_unfused))
    monkeypatch.setitem(lc.ARCHS, TEST_ARCH.name, TEST_ARCH)
    monkeypatch.setitem(lc.TEXTS, "roberta-test", tiny_text(vocab))
    return tiny_unfused  # its tokenizer files stand in for roberta-base's


@pytest.mark.parametrize("fused", [False, True])
def test_round_trip_is_exact_and_loads_everywhere(fused, registered, tiny_unfused, tiny_fused, tmp_path):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    src = tiny_fused if fused else tiny_unfused
    ckpt = tmp_path / "tiny.pt"
    hf = laion_checkpoint(src, ckpt)
    before = sha(ckpt)
    r = humanclap("convert", ckpt, tmp_path / "out", "--text", "roberta-test", "--tokenizer", registered)
    assert r.code == 0, r.err
    assert f"inferred from the weights: arch=HTSAT-test, fusion={'on' if fused else 'off'}" in r.err
    assert "3 torchlibrosa STFT/mel filters" in r.err and "4 AudioSet classification head" in r.err
    assert sha(ckpt) == before  # the input is never touched
    out = tmp_path / "out"
    # the tokenizer files are whatever this transformers' save_pretrained writes (5.x:
    # tokenizer.json + tokenizer_config.json; 4.x adds vocab.json, merges.txt, special_tokens_map.json)
    AutoTokenizer.from_pretrained(registered).save_pretrained(tmp_path / "tok")
    tokenizer_files = [p.name for p in (tmp_path / "tok").iterdir()]
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer_files)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            *tokenizer_files,
            "conversion.json",
            ".humanclap-run.json",
        ]
    )
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) == set(hf)
    assert all(torch.equal(saved[k], hf[k]) for k in hf), [k for k in hf if not torch.equal(saved[k], hf[k])]
    model, info = ClapModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.audio_config.enable_fusion is fused
    fe = ClapFeatureExtractor.from_pretrained(out)
    assert (fe.sampling_rate, fe.truncation, fe.frequency_min) == (16000, "fusion" if fused else "rand_trunc", 50)
    meta = json.loads((out / "conversion.json").read_text())
    assert meta["arch"] == "HTSAT-test" and meta["fused"] is fused and meta["source"] == "tiny.pt"


@pytest.mark.parametrize("fused", [False, True])
def test_converted_folder_scores_like_the_original(fused, registered, tiny_unfused, tiny_fused, tmp_path):
    src = tiny_fused if fused else tiny_unfused
    laion_checkpoint(src, tmp_path / "t.pt")
    assert (
        humanclap(
            "convert", tmp_path / "t.pt", tmp_path / "conv", "--text", "roberta-test", "--tokenizer", registered
        ).code
        == 0
    )
    rows = ["audio,text"]
    for i, seconds in enumerate([0.4, 1.0, 2.5]):  # short, exact window, long (fusion branch)
        write_wav(tmp_path / f"c{i}.wav", noise_clip(seconds, seed=i))
        rows.append(f"c{i}.wav,a dog barks {'loudly ' * i}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    for name, model in (("a", src), ("b", tmp_path / "conv")):
        r = humanclap(
            "score",
            tmp_path / "m.csv",
            "--model",
            model,
            "-o",
            tmp_path / f"{name}.csv",
            "--device",
            "cpu",
            "--no-progress",
        )
        assert r.code == 0, r.err
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_converted_folder_is_a_base_for_training(registered, tmp_path):
    from test_train import make_rated_manifest

    laion_checkpoint(registered, tmp_path / "t.pt")
    assert (
        humanclap(
            "convert", tmp_path / "t.pt", tmp_path / "conv", "--text", "roberta-test", "--tokenizer", registered
        ).code
        == 0
    )
    r = humanclap(
        "train",
        "--model",
        tmp_path / "conv",
        "--data",
        make_rated_manifest(tmp_path / "rated"),
        "--output-dir",
        tmp_path / "trained",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--train-params",
        "projections",
        "--no-progress",
    )
    assert r.code == 0, r.err
    assert "best epoch: 1 of 1" in r.err
    assert (tmp_path / "trained/model.safetensors").is_file()


def test_a_protocol_4_pickle_is_read_through_the_allow_list(registered, tmp_path):
    hf = laion_checkpoint(registered, tmp_path / "p4.pt", pickle_protocol=4)
    r = humanclap("convert", tmp_path / "p4.pt", tmp_path / "out", "--text", "roberta-test", "--tokenizer", registered)
    assert r.code == 0, r.err
    saved = load_file(str(tmp_path / "out/model.safetensors"))
    assert all(torch.equal(saved[k], hf[k]) for k in hf)


def test_a_checkpoint_with_code_in_it_is_refused(registered, tmp_path):
    import argparse

    ckpt = tmp_path / "evil.pt"
    laion_checkpoint(registered, ckpt)
    obj = torch.load(ckpt, weights_only=False)
    obj["args"] = argparse.Namespace(lr=1e-4)  # any global outside the allow-list
    for protocol in (2, 4):
        torch.save(obj, ckpt, pickle_protocol=protocol)
        r = humanclap("convert", ckpt, tmp_path / "out", "--text", "roberta-test", "--tokenizer", registered)
        assert r.code == 2 and "argparse.Namespace" in r.err and "refused" in r.err, r.err
        assert not (tmp_path / "out").exists()


def _drop(key):
    return lambda sd: sd.pop(key)


def _add(key, value):
    return lambda sd: sd.__setitem__(key, value)


@pytest.mark.parametrize(
    "edit,flags,message",
    [
        (
            _add("audio_branch.extra_layer.weight", torch.zeros(3)),
            [],
            "1 unexpected: audio_branch.extra_layer.weight (-> audio_model.audio_encoder.extra_layer.weight)",
        ),
        (
            _add("vision_branch.proj", torch.zeros(3)),
            [],
            "1 keys of the checkpoint have no place in ClapModel (nothing was written): vision_branch.proj",
        ),
        (_drop("text_branch.pooler.dense.weight"), [], "1 missing: text_model.pooler.dense.weight"),
        (
            _add("text_projection.0.weight", torch.zeros(16, 31)),
            [],
            "wrong shape (checkpoint vs model): text_projection.0.weight -> text_projection.linear1.weight: "
            "(16, 31) vs (16, 32)",
        ),
        (
            _add("audio_branch.patch_embed.proj.weight", torch.zeros(24, 1, 4, 4)),
            [],
            "unknown HTS-AT architecture (embed dim 24, depths [1, 1]); supported: HTSAT-tiny (embed dim 96",
        ),
        (
            None,
            ["--arch", "HTSAT-base"],
            "--arch HTSAT-base does not match the checkpoint (embed dim 16, depths [1, 1]",
        ),
        (None, ["--arch", "HTSAT-huge"], "unknown --arch 'HTSAT-huge'; supported: HTSAT-tiny, HTSAT-base"),
        (None, ["--fusion"], "--fusion was given but the checkpoint is unfused"),
        (None, ["--text", "bert"], "unknown --text 'bert'; supported: roberta"),
        (
            _add("audio_branch.logmel_extractor.melW", torch.zeros(257, 128)),
            [],
            "front end differs from HTSAT-test's (audio_branch.logmel_extractor.melW has shape (257, 128)",
        ),
        (
            lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("audio_branch.patch_embed.proj")],
            [],
            "audio tower is not HTS-AT",
        ),
    ],
)
def test_refusals_name_the_problem_and_write_nothing(edit, flags, message, registered, tmp_path):
    ckpt = tmp_path / "c.pt"
    laion_checkpoint(registered, ckpt, edit=edit)
    before = sha(ckpt)
    text = [] if "--text" in flags else ["--text", "roberta-test"]
    r = humanclap("convert", ckpt, tmp_path / "out", *text, "--tokenizer", registered, *flags)
    assert r.code == 2, r.err
    assert r.err.startswith("humanclap convert: error: ") and message in r.err, r.err
    assert r.err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "out").exists() and sha(ckpt) == before


def test_output_folder_and_tokenizer_checks(registered, tmp_path, monkeypatch):
    ckpt = tmp_path / "c.pt"
    laion_checkpoint(registered, ckpt)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/keep.txt").write_text("mine")
    r = humanclap("convert", ckpt, tmp_path / "busy", "--text", "roberta-test", "--tokenizer", registered)
    assert r.code == 2 and "is not an empty folder" in r.err
    assert (tmp_path / "busy/keep.txt").read_text() == "mine"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # roberta-base in no cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache/hub"))
    r = humanclap("convert", ckpt, tmp_path / "out", "--text", "roberta-test")
    assert r.code == 2 and "huggingface-cli download roberta-base" in r.err and "--tokenizer DIR" in r.err, r.err
    r = humanclap("convert", ckpt, tmp_path / "out", "--text", "roberta-test", "--tokenizer", tmp_path)
    assert r.code == 2 and "no tokenizer files there" in r.err
    r = humanclap("convert", tmp_path / "none.pt", tmp_path / "out")
    assert r.code == 2 and "no such checkpoint file" in r.err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    r = humanclap("convert", tmp_path / "junk.pt", tmp_path / "out")
    assert r.code == 2 and "not a readable PyTorch checkpoint" in r.err, r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["HTSAT-tiny", "HTSAT-base"])
@pytest.mark.parametrize("fused", [False, True])
def test_real_architectures_are_inferred_from_full_size_shapes(arch, fused):
    from transformers import ClapModel

    with torch.device("meta"):  # shapes only: no memory, no time
        sd = ClapModel(lc.clap_config(lc.ARCHS[arch], lc.TEXTS["roberta"], fused)).state_dict()
    laion = lc.hf_to_laion(sd)
    found, is_fused, inferred = lc.infer_layout(laion)
    assert (found.name, is_fused) == (arch, fused)
    assert inferred == [f"arch={arch}", f"fusion={'on' if fused else 'off'}"]
    mapped, _, unknown = lc.laion_to_hf(laion)
    assert unknown == [] and set(mapped) == set(sd)
    assert found.audio_hidden_size == {"HTSAT-tiny": 768, "HTSAT-base": 1024}[arch]
    with pytest.raises(UsageError, match="does not match"):
        lc.infer_layout(laion, arch="HTSAT-base" if arch == "HTSAT-tiny" else "HTSAT-tiny")
    if fused:  # LAION's other fusion types have no ClapModel counterpart
        laion["audio_branch.patch_embed.fusion_model.local_att2.0.weight"] = torch.zeros(1, device="meta")
        with pytest.raises(ModelLoadError, match="iAFF"):
            lc.infer_layout(laion)


def test_real_config_values():
    cfg = lc.clap_config(lc.ARCHS["HTSAT-base"], lc.TEXTS["roberta"], True)
    a, t = cfg.audio_config, cfg.text_config
    assert (a.patch_embeds_hidden_size, list(a.depths), list(a.num_attention_heads), a.window_size) == (
        128,
        [2, 2, 12, 2],
        [4, 8, 16, 32],
        8,
    )
    assert (a.hidden_size, a.spec_size, a.enable_fusion, a.fusion_type, cfg.projection_dim) == (
        1024,
        256,
        True,
        "aff_2d",
        512,
    )
    assert (t.layer_norm_eps, t.vocab_size, t.max_position_embeddings, t.num_attention_heads) == (1e-5, 50265, 514, 12)
    fe = lc.feature_extractor(lc.ARCHS["HTSAT-tiny"], False)
    assert (
        fe.sampling_rate,
        fe.hop_length,
        fe.nb_max_samples,
        fe.feature_size,
        fe.frequency_min,
        fe.frequency_max,
        fe.truncation,
        fe.padding,
    ) == (48000, 480, 480000, 64, 50, 14000, "rand_trunc", "repeatpad")


def test_convert_leaves_a_users_dot_old_folder_alone(registered, tiny_unfused, tmp_path):
    """io.atomic_dir used to delete OUT.old before its swap: a user's folder of that name."""
    ckpt = tmp_path / "tiny.pt"
    laion_checkpoint(tiny_unfused, ckpt)
    users = tmp_path / "mymodel.old"
    users.mkdir()
    (users / "keep.bin").write_bytes(b"precious")
    r = humanclap("convert", ckpt, tmp_path / "mymodel", "--text", "roberta-test", "--tokenizer", registered)
    assert r.code == 0, r.err
    assert (users / "keep.bin").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mymodel", "mymodel.old", "tiny.pt"]
