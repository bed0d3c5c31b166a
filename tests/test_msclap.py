"""MS CLAP 2022 / 2023, native: checkpoints in msclap's layout, the strict key check,
preprocessing, determinism, the Scorer protocol, ``load_scorer`` and ``humanclap score``.

Tiny random models of both releases (``humanclap.recipes.tiny_msclap``); parity with the
msclap package itself is checked in its own environment (``parity/msclap_compare.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav

from humanclap.errors import ModelLoadError, UsageError
from humanclap.recipes.tiny_msclap import build_tiny_msclap, tiny_msclap
from humanclap.scoring import load_scorer
from humanclap.scoring.engine import EmbeddingEngine
from humanclap.scoring.msclap import MSClapConfig, MSClapModel, MSClapScorer, infer_version, load_pth, save_pth
from humanclap.scoring.msclap.frontend import Spectrogram
from humanclap.scoring.protocol import Scorer

RATE = 44100
VERSIONS = ["2022", "2023"]


@pytest.fixture(scope="module", params=VERSIONS)
def folder(request, tmp_path_factory):
    return build_tiny_msclap(tmp_path_factory.mktemp(f"msclap{request.param}"), request.param, seed=1)


@pytest.fixture(scope="module")
def scorer(folder):
    return load_scorer(str(folder), device="cpu")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- checkpoints ------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_pth_in_msclap_layout_round_trips(tmp_path, version):
    model = tiny_msclap(version, seed=2)
    keys = set(model.state_dict())
    # msclap's module tree: the same top-level names and tower prefixes
    tower = "audio_encoder.base.htsat." if version == "2023" else "audio_encoder.base.conv_block1."
    assert any(k.startswith(tower) for k in keys) and "logit_scale" in keys
    assert (
        "audio_encoder.base.%sspectrogram_extractor.stft.conv_real.weight" % ("htsat." if version == "2023" else "")
        in keys
    )
    save_pth(model, tmp_path / "w.pth")
    raw = torch.load(tmp_path / "w.pth", weights_only=True)
    assert set(raw["model"]) == keys and infer_version(raw["model"]) == version
    back = load_pth(tmp_path / "w.pth")
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    wave = torch.from_numpy(noise_clip(model.config.duration, RATE, seed=3))[None]
    ids, mask = torch.tensor([[5, 6, 7, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        assert torch.equal(model.get_audio_features(wave), back.get_audio_features(wave))
        assert torch.equal(model.get_text_features(ids, mask), back.get_text_features(ids, mask))


def test_folder_round_trip_keeps_msclap_keys(tmp_path):
    model = tiny_msclap("2023", seed=4)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "msclap" and cfg["version"] == "2023" and cfg["mel_sampling_rate"] == 32000
    back = MSClapModel.from_pretrained(tmp_path)
    assert back.config == model.config
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def _write(tmp_path, state, name="w.pth", **extra):
    path = tmp_path / name
    torch.save({"model": state, **extra}, path)
    return path


def test_strict_key_check_names_missing_and_unexpected_keys(tmp_path):
    model = tiny_msclap("2022", seed=0)
    state = dict(model.state_dict())
    cfg = model.config.to_dict()
    dropped = "caption_encoder.projection.linear2.weight"
    del state[dropped]
    state["audio_encoder.base.extra.weight"] = torch.zeros(2)
    path = _write(tmp_path, state, msclap_config=cfg)
    before = _sha(path)
    with pytest.raises(ModelLoadError) as err:
        load_pth(path)
    msg = str(err.value)
    assert "1 missing key(s): " + dropped in msg and "1 unexpected key(s): audio_encoder.base.extra.weight" in msg
    assert _sha(path) == before  # the input is never touched
    # the buffers older transformers saved with the text tower are not weights: accepted
    ok = dict(model.state_dict())
    ok["caption_encoder.base.embeddings.position_ids"] = torch.arange(8)[None]
    load_pth(_write(tmp_path, ok, "ok.pth", msclap_config=cfg))
    # a shape mismatch is named too
    bad = dict(model.state_dict())
    bad["audio_encoder.projection.linear1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ModelLoadError, match=r"wrong shape .*audio_encoder.projection.linear1.weight \(3, 3\)"):
        load_pth(_write(tmp_path, bad, "bad.pth", msclap_config=cfg))


def test_release_is_inferred_from_keys_and_checked(tmp_path):
    path = _write(tmp_path, tiny_msclap("2023").state_dict())
    with pytest.raises(ModelLoadError, match="holds MS CLAP 2023 weights .* but version 2022 was asked for"):
        load_pth(path, "2022")
    # msclap's own file has no config: the release's real sizes are expected, and named
    with pytest.raises(ModelLoadError, match=r"does not match MS CLAP 2023 \(HTSAT \+ gpt2\).*missing key"):
        load_pth(path)
    with pytest.raises(ModelLoadError, match="cannot tell the MS CLAP release"):
        load_pth(_write(tmp_path, {"logit_scale": torch.zeros(())}, "x.pth"))
    with pytest.raises(ModelLoadError, match="unknown MS CLAP version '2024'"):
        load_pth(path, "2024")


def test_pickled_objects_are_refused_and_files_left_alone(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": tiny_msclap("2022").state_dict(), "args": argparse.Namespace(lr=1)}, path)
    before = _sha(path)
    with pytest.raises(ModelLoadError, match="refused: the file holds code, not only tensors.*state_dict"):
        load_pth(path)
    assert _sha(path) == before
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        load_pth(tmp_path / "junk.pth")
    with pytest.raises(ModelLoadError, match="no such checkpoint file"):
        load_pth(tmp_path / "none.pth")


# -- front end ---------------------------------------------------------------------------
def test_conv_stft_equals_torch_stft():
    """torchlibrosa's conv-STFT is a periodic-Hann, centred, reflect-padded STFT."""
    x = torch.from_numpy(noise_clip(0.2, RATE, seed=5))[None]
    power = Spectrogram(1024, 320)(x)[0, 0]
    ref = (
        torch.stft(
            x.double(),
            1024,
            320,
            window=torch.hann_window(1024, periodic=True, dtype=torch.float64),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        .abs()
        .pow(2)[0]
        .T
    )
    assert power.shape == ref.shape
    np.testing.assert_allclose(power.double().numpy(), ref.numpy(), rtol=1e-3, atol=1e-4 * float(ref.max()))


def test_release_settings():
    c22, c23 = MSClapConfig.release("2022"), MSClapConfig.release("2023")
    assert (c22.window_samples, c23.window_samples) == (5 * RATE, 7 * RATE)
    assert (c22.mel_sampling_rate, c23.mel_sampling_rate) == (44100, 32000)  # msclap's htsat config
    assert (c22.text_len, c23.text_len, c22.text_model, c23.text_model) == (100, 77, "bert", "gpt2")
    assert (c22.out_emb, c23.out_emb, c22.d_proj, c23.d_proj) == (2048, 768, 1024, 1024)


# -- the scorer ---------------------------------------------------------------------------
def test_scorer_protocol_and_preprocessing(scorer, tmp_path):
    assert isinstance(scorer, Scorer) and isinstance(scorer, MSClapScorer)
    window = scorer.window
    assert scorer.info.preprocessing.long_clip_rule == "centre-crop" and scorer.info.source == "local"
    short = write_wav(tmp_path / "short.wav", noise_clip(0.3, RATE, seed=1), RATE)
    long = write_wav(tmp_path / "long.wav", noise_clip(2.5, RATE, seed=2), RATE, subtype="FLOAT")
    s_wave = scorer.load(short)
    feats, longer = scorer.features(s_wave)  # tiled as msclap, then cut
    assert not longer and feats.shape == (window,)
    assert np.array_equal(feats[: len(s_wave)], s_wave) and np.array_equal(feats[len(s_wave) : 2 * len(s_wave)], s_wave)
    wave = scorer.load(long)
    feats, longer = scorer.features(wave)
    start = (len(wave) - window) // 2
    assert longer and np.array_equal(feats, wave[start : start + window])  # centre, not random
    lf, l_longer = scorer.load_features(long)  # reads only the centre window
    assert l_longer and np.array_equal(lf, feats)
    # a 16 kHz file is resampled to 44.1 kHz
    assert scorer.load(write_wav(tmp_path / "r16.wav", noise_clip(0.5, 16000), 16000)).shape == (22050,)


def test_same_clip_alone_or_in_a_batch_gives_the_same_bits(scorer, tmp_path):
    paths = [str(write_wav(tmp_path / f"c{i}.wav", noise_clip(0.4 + 0.7 * i, RATE, seed=i), RATE)) for i in range(5)]
    alone = EmbeddingEngine(scorer, batch_size=4)
    alone.embed_unique([paths[3]], [], progress=False)
    together = EmbeddingEngine(scorer, batch_size=4)
    together.embed_unique(paths[::-1], [], progress=False)
    assert np.array_equal(alone.audio_emb[paths[3]], together.audio_emb[paths[3]])
    texts = ["a dog barks", "rain falls on a roof followed by thunder", "a bell rings several times"]
    assert np.array_equal(scorer.embed_text(texts[1:2]), scorer.embed_text(texts)[1:2])
    emb = scorer.embed_text(texts)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    assert scorer.embed_text([]).shape == (0, scorer.embedding_dim)


def test_text_tokens_and_pooling_follow_msclap(folder):
    s = load_scorer(str(folder), device="cpu")
    cfg = s.model.config
    enc = s.tokenize(["a dog barks"])
    ids = enc["input_ids"][0].tolist()
    n = int(enc["attention_mask"][0].sum())
    assert len(ids) == cfg.text_len and ids[n:] == [0] * (cfg.text_len - n)
    if cfg.text_model == "gpt2":
        assert ids[n - 1] == s.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        assert s.tokenizer.pad_token == "!" and s.tokenizer.pad_token_id == 0
    else:
        assert ids[0] == s.tokenizer.cls_token_id and ids[n - 1] == s.tokenizer.sep_token_id
    # the pooled hidden state, computed by hand
    tower = s.model.caption_encoder
    with torch.no_grad():
        hidden = tower.base(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0][0]
        pos = n - 1 if cfg.text_model == "gpt2" else 0
        expected = torch.nn.functional.normalize(tower.projection(hidden[pos])[None], dim=-1)
    np.testing.assert_allclose(s.embed_text(["a dog barks"]), expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="empty text"):
        s.embed_text(["  "])


# -- loading by spec -----------------------------------------------------------------------
def test_load_scorer_dispatches_by_spec(tmp_path, tiny_unfused):
    from humanclap.scoring.clap.scorer import CLAPScorer

    assert isinstance(load_scorer(str(tiny_unfused), device="cpu"), CLAPScorer)
    pth = build_tiny_msclap(tmp_path / "pth", "2022", pth=True)
    s = load_scorer(str(pth), device="cpu")  # tokenizer files beside the .pth
    assert isinstance(s, MSClapScorer) and s.model.config.version == "2022" and s.info.model_id == str(pth)
    with pytest.raises(ModelLoadError, match="holds MS CLAP 2022 weights"):
        load_scorer(str(pth), device="cpu", msclap_version="2023")
    with pytest.raises(UsageError, match="apply only to MS CLAP models"):
        load_scorer(str(tiny_unfused), device="cpu", msclap_version="2022")


def test_hub_release_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_scorer("msclap-2023", device="cpu")
    msg = str(err.value)
    assert "microsoft/msclap/CLAP_weights_2023.pth" in msg and "cannot be reached" in msg
    assert "--model /path/to/CLAP_weights_2023.pth" in msg and "tokenizer" in msg


def test_missing_tokenizer_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "w.pth"
    save_pth(tiny_msclap("2023"), path)
    with pytest.raises(ModelLoadError, match=r"needs the 'gpt2' tokenizer.*tokenizer files .* checkpoint's folder"):
        load_scorer(str(path), device="cpu")


# -- the CLI -----------------------------------------------------------------------------
@pytest.mark.parametrize("as_pth", [False, True])
def test_score_cli_with_a_tiny_msclap(tmp_path, capsys, as_pth):
    from humanclap.cli import main

    model = build_tiny_msclap(tmp_path / "m", "2023", seed=3, pth=as_pth)
    wavs = [write_wav(tmp_path / f"a{i}.wav", noise_clip(0.5 + i, RATE, seed=i), RATE) for i in range(3)]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "audio,text\n"
        + "".join(f"{w},a dog barks {i}\n" for i, w in enumerate(wavs))
        + f"{tmp_path / 'missing.wav'},rain\n"
    )
    before = manifest.read_bytes()
    out = tmp_path / "scores.jsonl"
    code = main(["score", str(manifest), "--model", str(model), "-o", str(out), "--device", "cpu", "--batch-size", "2"])
    cap = capsys.readouterr()
    assert code == 1, cap.err  # one row failed: the missing file
    assert manifest.read_bytes() == before
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and "file not found" in (rows[3].get("error") or "")
    s = load_scorer(str(model), device="cpu")
    a = s.embed_audio([str(w) for w in wavs])
    t = s.embed_text([f"a dog barks {i}" for i in range(3)])
    expected = np.maximum((a * t).sum(1), 0)
    got = [r["clapscore"] for r in rows[:3]]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_the_stft_window_is_scipys_hann_to_the_bit_without_importing_scipy_signal():
    from scipy.signal import get_window

    from humanclap.scoring.msclap.frontend import hann

    for n in (8, 400, 1024, 2048):
        assert hann(n).tobytes() == get_window("hann", n, fftbins=True).tobytes()


def test_a_loaded_model_draws_no_random_weights_and_equals_the_saved_one(tmp_path):
    """Loading builds the model under no_init_weights (fast) and fills every tensor from the file."""
    import torch

    from humanclap.recipes.tiny_msclap import tiny_msclap
    from humanclap.scoring.msclap.model import MSClapModel

    for version in ("2022", "2023"):
        model = tiny_msclap(version, seed=3)
        model.save_pretrained(tmp_path / version)
        torch.manual_seed(0)
        before = torch.rand(1)
        torch.manual_seed(0)
        loaded = MSClapModel.from_pretrained(tmp_path / version)
        assert torch.rand(1).item() == before.item()  # the global RNG was not drawn from
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), name
        wave = torch.randn(2, model.config.window_samples) * 0.1
        with torch.no_grad():
            assert torch.equal(model.eval().get_audio_features(wave), loaded.get_audio_features(wave))
        assert torch.nn.Linear(4, 4).weight.abs().sum() > 0  # init works again afterwards


def test_the_fft_stft_equals_msclaps_convolutions_and_other_kernels_keep_the_convolutions():
    """FFT only where it computes msclap's transform: the DFT x Hann kernels of every release."""
    import torch
    import torch.nn.functional as F

    from humanclap.scoring.msclap.frontend import STFT

    stft = STFT(1024, 320)
    wave = torch.randn(2, 44100) * 0.1

    def conv(x):
        x = F.pad(x[:, None, :], (512, 512), mode="reflect")
        return stft.conv_real(x)[:, None].transpose(2, 3), stft.conv_imag(x)[:, None].transpose(2, 3)

    assert stft.uses_fft()
    for fast, slow in zip(stft(wave), conv(wave)):
        torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-4)  # float32 rounding of 1024-term sums
    with torch.no_grad():
        stft.conv_imag.weight[3, 0, 7] += 0.01  # a checkpoint whose kernels are not the DFT
    assert not stft.uses_fft()
    for a, b in zip(stft(wave), conv(wave)):
        assert torch.equal(a, b)


def test_the_fft_stfts_log_mel_differs_from_the_convolutions_only_near_the_floor():
    """The bound the README states for the FFT path, on a clean chirp (its far mel bins hold
    float32 rounding noise of the STFT, near the -100 dB floor): at most 1 dB anywhere, and
    no difference beyond float32 rounding where the mel is 60 dB above the floor."""
    import torch.nn.functional as F

    from humanclap.scoring.msclap.frontend import LogmelFilterBank, log_mel

    spec, mel = Spectrogram(1024, 320), LogmelFilterBank(44100, 1024, 64, 50, 14000)
    t = np.arange(3 * RATE) / RATE
    chirp = torch.tensor(0.5 * np.sin(2 * np.pi * (50 * t + (14000 - 50) / (2 * t[-1]) * t**2)), dtype=torch.float32)[
        None
    ]
    stft = spec.stft
    assert stft.uses_fft()
    fast = log_mel(spec, mel, chirp)
    x = F.pad(chirp[:, None, :], (512, 512), mode="reflect")
    conv = mel(stft.conv_real(x)[:, None].transpose(2, 3) ** 2 + stft.conv_imag(x)[:, None].transpose(2, 3) ** 2)
    diff = (fast - conv).abs()
    assert float(diff.max()) <= 1.0, "the FFT path's log-mel is off by more than the README's bound"
    assert float(diff.max()) > 1e-3  # the probe does reach the near-floor bins (else it tests nothing)
    loud = conv > -40.0
    assert float(diff[loud].max()) <= 1e-3, "the FFT path differs where rounding cannot explain it"
