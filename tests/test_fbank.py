"""The fast log-mel (scoring/fbank.py) has the bits of transformers' ClapFeatureExtractor.

Compared against the extractor itself (whatever transformers version runs the tests), for
the LAION extractor settings (48 kHz, 10 s, both filter banks) and the tiny test models',
on clips of many lengths: one sample, shorter than one FFT window, whole repeats, exactly
the window, and the float64 input the whole-clip fusion path feeds it.
"""

from __future__ import annotations

import numpy as np
import pytest

from humanclap.recipes.tiny import tiny_feature_extractor
from humanclap.scoring.clap.fbank import log_mel, window_features


def laion_extractor(fused: bool):
    from transformers import ClapFeatureExtractor

    # the settings of laion/clap-htsat-unfused and -fused (their preprocessor_config.json)
    return ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="fusion" if fused else "rand_trunc",
        padding="repeatpad",
    )


def clips(window: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = [1, 7, 300, 1023, 1024, 4801, window // 3, window // 2 + 17, window - 1, window]
    out = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    t = np.arange(window) / 48000
    out.append((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))  # a pure tone
    out.append(np.zeros(window // 4, dtype=np.float32))  # silence: every bin at the floor
    return out


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("size", ["laion", "tiny"])
def test_window_features_have_the_extractors_bits(fused, size):
    extractor = laion_extractor(fused) if size == "laion" else tiny_feature_extractor(fused=fused)
    window = int(extractor.nb_max_samples)
    for clip in clips(window):
        stock = extractor(
            clip,
            sampling_rate=extractor.sampling_rate,
            truncation="fusion" if fused else "rand_trunc",
            padding="repeatpad",
            return_tensors="np",
        )["input_features"][0].astype(np.float32)
        fast = window_features(extractor, clip, fused)
        assert fast.dtype == stock.dtype and fast.shape == stock.shape, clip.shape
        assert fast.tobytes() == stock.tobytes(), f"{clip.shape[0]} samples differ"


def test_log_mel_of_a_float64_whole_clip_has_the_extractors_bits():
    extractor = laion_extractor(True)
    clip = np.random.default_rng(1).uniform(-1, 1, 48000 * 13 + 5)  # float64, longer than the window
    stock = extractor._np_extract_fbank_features(clip, extractor.mel_filters)
    assert log_mel(extractor, clip, extractor.mel_filters).tobytes() == stock.tobytes()


def test_window_features_refuse_a_clip_longer_than_the_window():
    extractor = tiny_feature_extractor()
    with pytest.raises(ValueError, match="exceed"):
        window_features(extractor, np.zeros(int(extractor.nb_max_samples) + 1, np.float32), False)
