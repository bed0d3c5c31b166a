"""Audio loading, resampling, length rules and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from conftest import noise_clip, write_wav

from humanclap import AudioError
from humanclap.scoring.audio import load_audio


def test_stereo_16k_scores_like_manual_downmix_and_resample(scorer, tmp_path):
    stereo = noise_clip(0.8, rate=16000, channels=2)
    path = write_wav(tmp_path / "st.wav", stereo, 16000, "FLOAT")
    manual = soxr.resample(stereo.astype(np.float64).mean(axis=1), 16000, 48000, quality="HQ")
    scorer48 = scorer  # the tiny model runs at 16 kHz: check the 48 kHz path with load_audio
    np.testing.assert_allclose(load_audio(path, 48000), manual.astype(np.float32), atol=1e-6)
    mono16 = stereo.mean(axis=1)
    a = scorer48.cosine([path], ["a dog barks"])
    b = scorer48.cosine([(mono16, 16000)], ["a dog barks"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # a 44.1 kHz file goes through the resampler to the model's 16 kHz
    path44 = write_wav(tmp_path / "st44.wav", noise_clip(0.8, rate=44100, channels=2), 44100, "FLOAT")
    ref = soxr.resample(
        noise_clip(0.8, rate=44100, channels=2).astype(np.float64).mean(axis=1), 44100, 16000, quality="HQ"
    )
    np.testing.assert_allclose(
        scorer.cosine([path44], ["x y"]), scorer.cosine([(ref.astype(np.float32), 16000)], ["x y"]), atol=1e-6
    )


@pytest.mark.parametrize("subtype,tol", [("PCM_U8", 5e-2), ("PCM_16", 1e-3), ("PCM_24", 1e-5), ("FLOAT", 1e-6)])
def test_bit_depths_score_like_the_float_signal(scorer, tmp_path, subtype, tol):
    clip = noise_clip(0.6, seed=3)
    path = write_wav(tmp_path / f"{subtype}.wav", clip, 16000, subtype)
    got = scorer.cosine([path], ["a bell rings"])
    ref = scorer.cosine([(clip, 16000)], ["a bell rings"])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=tol)


def test_bad_files_raise_audio_error_naming_the_file(scorer, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    nan = noise_clip(0.3)
    nan[100] = np.nan
    nan_path = write_wav(tmp_path / "nan.wav", nan, 16000, "FLOAT")
    cases = {
        tmp_path / "missing.wav": "file not found",
        corrupt: "unreadable audio",
        empty: "empty audio",
        nan_path: "NaN or inf",
    }
    for path, message in cases.items():
        with pytest.raises(AudioError, match=message) as info:
            scorer.embed_audio([path])
        assert str(path) in str(info.value)
    with pytest.raises(AudioError, match="NaN or inf"):
        scorer.embed_audio([(np.array([0.0, np.inf, 0.0], dtype=np.float32), 16000)])


def test_very_short_clip_is_repeat_padded(scorer):
    short = noise_clip(0.05, seed=5)  # 800 samples; window is 16000
    tiled = np.pad(np.tile(short, 16000 // len(short)), (0, 16000 % len(short)))
    np.testing.assert_allclose(
        scorer.cosine([(short, 16000)], ["a"]), scorer.cosine([(tiled, 16000)], ["a"]), atol=1e-6
    )


def test_long_clip_unfused_uses_the_centre_window(scorer):
    long = noise_clip(60.0, seed=7)
    start = (len(long) - 16000) // 2
    centre = long[start : start + 16000]
    got = scorer.cosine([(long, 16000)], ["a"])
    np.testing.assert_allclose(got, scorer.cosine([(centre, 16000)], ["a"]), atol=1e-6)
    np.testing.assert_array_equal(got, scorer.cosine([(long, 16000)], ["a"]))  # no random crop


def test_long_clip_fused_is_deterministic_and_flagged_longer(fused_scorer):
    long = noise_clip(60.0, seed=7)
    feats, longer = fused_scorer.features(long)
    assert longer and feats.shape[0] == 4
    again, _ = fused_scorer.features(long)
    np.testing.assert_array_equal(feats, again)
    _, short_longer = fused_scorer.features(noise_clip(0.5))
    assert not short_longer
    # a long clip scores the same alone and next to short ones
    alone = fused_scorer.cosine([(long, 16000)], ["a"])
    mixed = fused_scorer.cosine([(noise_clip(0.5), 16000), (long, 16000)], ["b", "a"], batch_size=2)
    np.testing.assert_allclose(alone, mixed[1:], atol=1e-5)
