"""CLAPScorer against transformers directly, batch/order invariance, clipping, loading."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

from humanclap import CLAPScorer, ModelLoadError
from humanclap.scoring.clap.scorer import TEXT_MAX_LENGTH

TEXTS = [
    "a dog barks",
    "rain falls on a roof",
    "a bell rings",
    "music plays",
    "a siren wails",
    "birds chirp",
    "a car horn honks",
    "people applaud",
    "water runs",
    "a woman speaks",
]


def reference_cosines(folder, waves, texts, fused):
    """Independent computation: stock extractor + ClapModel, no humanclap code involved."""
    model = ClapModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    fe = ClapFeatureExtractor.from_pretrained(folder)
    with torch.no_grad():
        feats = fe(
            waves, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation="fusion" if fused else "rand_trunc"
        )
        # clips are shorter than the window: LAION marks none as longer (the stock extractor
        # marks a random one when none is, which is the batch dependence we avoid)
        feats["is_longer"][:] = False
        a = model.get_audio_features(**feats)
        t = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    a = torch.nn.functional.normalize(getattr(a, "pooler_output", a), dim=-1)
    t = torch.nn.functional.normalize(getattr(t, "pooler_output", t), dim=-1)
    return (a * t).sum(-1).numpy()


@pytest.mark.parametrize("fused", [False, True])
def test_scores_equal_transformers_directly(fused, tiny_unfused, tiny_fused):
    folder = tiny_fused if fused else tiny_unfused
    waves = [noise_clip(0.3 + 0.07 * i, seed=i) for i in range(len(TEXTS))]
    scorer = CLAPScorer.from_pretrained(str(folder), device="cpu")
    ours = scorer.cosine([(w, 16000) for w in waves], TEXTS, batch_size=4)
    ref = reference_cosines(folder, waves, TEXTS, fused)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_batch_size_and_order_do_not_change_scores(fused, tiny_unfused, tiny_fused):
    scorer = CLAPScorer.from_pretrained(str(tiny_fused if fused else tiny_unfused), device="cpu")
    # mix short, exact-window and long clips so fused batches contain both kinds
    audio = [(noise_clip(s, seed=i), 16000) for i, s in enumerate([0.2, 1.0, 2.5, 0.5, 3.0, 0.05, 1.7, 0.9])]
    texts = TEXTS[: len(audio)]
    base = scorer.cosine(audio, texts, batch_size=1)
    for bs in (3, 8):
        np.testing.assert_allclose(scorer.cosine(audio, texts, batch_size=bs), base, atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(audio))
    shuffled = scorer.cosine([audio[i] for i in perm], [texts[i] for i in perm], batch_size=3)
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)


def test_clapscore_clips_negative_cosines_at_zero(tiny_unfused):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    audio = [(noise_clip(0.5, seed=i), 16000) for i in range(6)]
    texts = TEXTS[:6]

    def flip_text_projection():  # negates every text embedding, hence every cosine
        with torch.no_grad():
            lin = scorer.model.text_projection.linear2
            lin.weight.neg_()
            lin.bias.neg_()

    cos = scorer.cosine(audio, texts)
    if not (cos < 0).any():
        flip_text_projection()
        cos = scorer.cosine(audio, texts)
    assert (cos < 0).any()
    np.testing.assert_array_equal(scorer.score(audio, texts), np.maximum(cos, 0))
    flip_text_projection()
    cos2 = scorer.cosine(audio, texts)
    np.testing.assert_allclose(cos2, -cos, atol=1e-6)
    np.testing.assert_array_equal(scorer.score(audio, texts), np.maximum(cos2, 0))
    assert (scorer.score(audio, texts) > 0).any()


def test_embeddings_are_unit_norm_and_api_shapes(tiny_unfused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    path = write_wav(tmp_path / "a.wav", noise_clip(0.4))
    e_a = scorer.embed_audio([path, (noise_clip(0.4), 16000)])
    e_t = scorer.embed_text(["a dog barks"])
    assert e_a.shape == (2, scorer.embedding_dim) and e_t.shape == (1, scorer.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(e_a, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(e_a[0], e_a[1], atol=1e-4)  # PCM_16 quantisation only
    assert scorer.score([path], ["a dog barks"]).dtype == np.float32


def test_long_text_is_cut_to_77_tokens_with_a_warning(tiny_unfused, caplog):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    long_text = " ".join(["dog barks loudly"] * 60)
    with caplog.at_level(logging.WARNING):
        enc = scorer.tokenize([long_text, "a dog"])
    assert enc["input_ids"].shape == (2, TEXT_MAX_LENGTH)
    assert "text cut to 77 tokens" in caplog.text
    with pytest.raises(ValueError, match="empty text"):
        scorer.tokenize(["  "])


def test_missing_preprocessor_config_is_derived_from_model_config(tiny_fused, tmp_path, caplog):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_fused, folder)
    (folder / "preprocessor_config.json").unlink()
    with caplog.at_level(logging.WARNING):
        scorer = CLAPScorer.from_pretrained(str(folder), device="cpu")
    assert "has no preprocessor_config.json" in caplog.text
    fe = scorer.feature_extractor
    assert (fe.sampling_rate, fe.nb_max_samples, fe.truncation) == (48000, 480000, "fusion")
    assert (fe.frequency_min, fe.frequency_max) == (50, 14000)


def test_unfused_checkpoint_never_uses_fusion_truncation(tiny_unfused, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_unfused, folder)
    fe = ClapFeatureExtractor.from_pretrained(folder)
    fe.truncation = "fusion"  # what a stock ClapFeatureExtractor() writes
    fe.save_pretrained(folder)
    scorer = CLAPScorer.from_pretrained(str(folder), device="cpu")
    assert scorer.feature_extractor.truncation == "rand_trunc"
    assert scorer.embed_audio([(noise_clip(0.5), 16000)]).shape[0] == 1


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="not a CLAP checkpoint folder"):
        CLAPScorer.from_pretrained(str(tmp_path))
    # HF_HUB_OFFLINE=1 (set in conftest) stands in for "no network": the Hub is not mocked.
    with pytest.raises(ModelLoadError, match="pass a local folder"):
        CLAPScorer.from_pretrained("laion/clap-htsat-unfused")


def test_local_revision_changes_with_weights(tiny_unfused, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_unfused, folder)
    a = CLAPScorer.from_pretrained(str(folder), device="cpu").info.revision
    model = ClapModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_scale_a.add_(1.0)
    model.save_pretrained(folder)
    b = CLAPScorer.from_pretrained(str(folder), device="cpu").info.revision
    assert a.startswith("sha256:") and a != b
