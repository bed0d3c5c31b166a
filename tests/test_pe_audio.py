"""PE-Audio (transformers ``PeAudioModel``) as a scoring family, on tiny random models built
from transformers' own config classes (``humanclap.recipes.tiny_pe_audio``) and loaded back
through ``load_scorer``: parity with ``PeAudioModel`` itself, the length rule, bit-identical
embeddings alone and among others, the match probability, bad folders, and the clear error
on a transformers without ``pe_audio`` (the old stack, 4.57)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav

from humanclap.errors import ModelLoadError
from humanclap.scoring.pe_audio import is_pe_audio_spec, pe_audio_available

NEEDS = "PE-Audio needs transformers >= 5.0 (transformers.models.pe_audio); this stack lacks it"
needs_pe_audio = pytest.mark.skipif(not pe_audio_available(), reason=NEEDS)
pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000  # the tiny model's rate (hop 320)


@pytest.fixture(scope="module")
def tiny_pe(tmp_path_factory) -> Path:
    if not pe_audio_available():
        pytest.skip(NEEDS)
    from humanclap.recipes.tiny_pe_audio import build_tiny_pe_audio

    return build_tiny_pe_audio(tmp_path_factory.mktemp("tiny_pe"), seed=0)


@pytest.fixture(scope="module")
def pe(tiny_pe):
    from humanclap.scoring import load_scorer

    return load_scorer(str(tiny_pe), device="cpu")


def clips(seed: int = 0, lengths=(RATE, RATE // 4, RATE + 123, 777, 2 * RATE + 5)):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n).astype(np.float32), RATE) for n in lengths]


def test_old_stack_is_a_clear_load_error_naming_the_version(tmp_path, monkeypatch):
    """Runs on every stack: without transformers.models.pe_audio (transformers 4.57), a
    PE-Audio folder or hub id is a ModelLoadError saying which transformers it needs."""
    import humanclap.scoring.pe_audio.loading as loading
    from humanclap.scoring import load_scorer

    monkeypatch.setattr(loading, "pe_audio_available", lambda: False)
    folder = tmp_path / "pe"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "pe_audio"}))
    for spec in (str(folder), "facebook/pe-av-large"):
        with pytest.raises(ModelLoadError, match=r"transformers >= 5\.0.*this environment has transformers \S+"):
            load_scorer(spec, device="cpu")


def test_specs_recognised(tmp_path):
    assert is_pe_audio_spec("facebook/pe-av-large") and is_pe_audio_spec("facebook/pe-a-frame-small")
    assert not is_pe_audio_spec("laion/clap-htsat-unfused") and not is_pe_audio_spec("msclap-2023")
    for model_type, expected in (("clap", False), ("pe_audio", True), ("pe_audio_video", True)):
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert is_pe_audio_spec(str(tmp_path / model_type)) is expected


@needs_pe_audio
def test_embeddings_and_logit_are_pe_audio_models_own(pe):
    """Audio: bit-identical to PeAudioModel.forward on PeAudioFeatureExtractor's output for
    the clip alone; text: to float rounding (humanclap pads to a 16-token bucket); the
    match logit is forward's logits_audio_text (scale * raw dot + bias)."""
    import torch

    assert type(pe).__name__ == "PeAudioScorer" and pe.info.source == "local"
    assert pe.info.revision.startswith("sha256:") and pe.info.preprocessing.sampling_rate == RATE
    wave = clips()[1][0]
    enc = pe.feature_extractor([wave], sampling_rate=RATE, return_tensors="pt")
    tok = pe.tokenizer(["a dog barks"], return_tensors="pt")
    with torch.no_grad():
        out = pe.model(
            input_ids=tok["input_ids"],
            attention_mask=tok["attention_mask"],
            input_values=enc["input_values"],
            padding_mask=enc["padding_mask"],
        )
    ours = pe.audio_head_outputs([pe.features(wave)])[0]
    assert np.array_equal(ours, out.audio_embeds[0].numpy())
    assert np.abs(pe.text_head_outputs(["a dog barks"])[0] - out.text_audio_embeds[0].numpy()).max() < 1e-6
    logit = pe.match_logit([(wave, RATE)], ["a dog barks"])[0]
    assert logit == pytest.approx(out.logits_audio_text.item(), abs=1e-6)
    both = pe.score_both([(wave, RATE)], ["a dog barks"])
    assert both["match_probability"][0] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)
    assert both["clapscore"][0] == pe.score([(wave, RATE)], ["a dog barks"])[0]
    e = pe.embed_audio([(wave, RATE)])
    assert e.shape == (1, pe.embedding_dim) and np.linalg.norm(e) == pytest.approx(1, abs=1e-6)


@needs_pe_audio
def test_a_clip_has_the_same_bits_alone_and_among_others(pe, tmp_path):
    """Clips of five lengths (a short clip would be zero-padded beside a long one by the
    stock extractor): alone, all together, reversed, and through the score engine."""
    from humanclap.scoring.engine import EmbeddingEngine

    items = clips()
    alone = np.stack([pe.embed_audio([c])[0] for c in items])
    assert np.array_equal(alone, pe.embed_audio(items))
    assert np.array_equal(alone[::-1], pe.embed_audio(items[::-1]))
    paths = [str(write_wav(tmp_path / f"c{i}.wav", c[0], subtype="FLOAT")) for i, c in enumerate(items)]
    engine = EmbeddingEngine(pe, batch_size=3)
    engine.embed_unique(paths, ["a dog barks"], progress=False)
    assert np.array_equal(np.stack([engine.audio_emb[p] for p in paths]), alone)
    texts = ["a dog barks", "rain falls on a roof followed by thunder " * 4, "bell", "a car horn honks"]
    t_alone = np.stack([pe.embed_text([t])[0] for t in texts])
    assert np.array_equal(t_alone, pe.embed_text(texts)) and np.array_equal(t_alone[::-1], pe.embed_text(texts[::-1]))


@needs_pe_audio
def test_length_rule_whole_clip_up_to_30_s_then_the_centre(pe, tmp_path):
    from humanclap.scoring.pe_audio.preprocessing import MAX_SECONDS

    n = (MAX_SECONDS + 1) * RATE + 7
    wave = (0.1 * np.sin(np.arange(n) / 50.0)).astype(np.float32)
    feats, longer = pe.features(wave)
    start = (n - MAX_SECONDS * RATE) // 2
    assert longer and feats.shape == (2, MAX_SECONDS * RATE)
    assert np.array_equal(feats[0], wave[start : start + MAX_SECONDS * RATE]) and feats[1].min() == 1
    # a long file is read only at its centre, with the same result
    path = write_wav(tmp_path / "long.wav", wave, subtype="FLOAT")
    f2, longer2 = pe.load_features(str(path))
    assert longer2 and np.array_equal(f2, feats)
    short, was_longer = pe.features(wave[:1000])  # reflect-padded to whole frames, as the extractor does
    assert not was_longer and short.shape == (2, 1280)
    assert np.array_equal(short[0], pe.feature_extractor([wave[:1000]], sampling_rate=RATE)["input_values"][0][0])


@needs_pe_audio
def test_score_cli_and_meta(pe, tiny_pe, tmp_path):
    from humanclap.cli import main as cli_main

    items = clips()
    paths = [str(write_wav(tmp_path / f"c{i}.wav", c[0], subtype="FLOAT")) for i, c in enumerate(items)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio,text\n" + "".join(f"{p},a dog barks\n" for p in paths))
    out = tmp_path / "s.jsonl"
    assert cli_main(["score", str(manifest), "--model", str(tiny_pe), "-o", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ref = pe.cosine(paths, ["a dog barks"] * len(paths))
    assert np.abs(np.array([r["cosine"] for r in rows]) - ref).max() <= 1e-6
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert "whole clip up to 30 s" in json.dumps(meta)


@needs_pe_audio
@pytest.mark.parametrize("damage", ["tokenizer", "extractor", "weights", "hop"])
def test_incomplete_or_mismatched_folders_are_refused(tiny_pe, tmp_path, damage):
    from humanclap.scoring import load_scorer

    folder = tmp_path / "pe"
    shutil.copytree(tiny_pe, folder)
    if damage == "tokenizer":
        (folder / "tokenizer.json").unlink()
    elif damage == "extractor":
        (folder / "preprocessor_config.json").unlink()
    elif damage == "weights":
        (folder / "model.safetensors").write_bytes(b"\0" * 10)
    else:
        cfg = json.loads((folder / "preprocessor_config.json").read_text())
        (folder / "preprocessor_config.json").write_text(json.dumps({**cfg, "hop_length": 321}))
    with pytest.raises(
        ModelLoadError,
        match={
            "tokenizer": "tokenizer",
            "extractor": "preprocessor_config",
            "weights": "model.safetensors",
            "hop": "hop_length",
        }[damage],
    ):
        load_scorer(str(folder), device="cpu")
