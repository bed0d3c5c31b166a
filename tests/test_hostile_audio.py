"""Hostile audio input: degenerate lengths, huge samples, long multichannel files (bounded
memory), paths that are not files, and malformed in-memory items. Every file is written
here with soundfile; every failure must be an AudioError that names the problem."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import noise_clip, write_wav

from humanclap import AudioError, CLAPScorer
from humanclap.scoring import audio as audio_mod
from humanclap.scoring import audio_file
from humanclap.scoring.audio import (
    MAX_ABS_SAMPLE,
    audio_bytes_hash,
    clip_features,
    load_audio,
    load_clip_features,
    read_audio,
)


def features_of(s: CLAPScorer, item):
    return load_clip_features(item, s.feature_extractor, s.fused)


# -- 1. degenerate lengths -------------------------------------------------------------------


def test_one_sample_at_48k_is_too_short_for_a_16k_model(scorer, tmp_path):
    path = write_wav(tmp_path / "one.wav", np.array([0.5], dtype=np.float32), 48000, "FLOAT")
    message = r"too short: 1 samples at 48000 Hz = 0 samples at the model's rate \(16000 Hz\)"
    for call in (
        lambda: load_audio(path, 16000),
        lambda: features_of(scorer, path),
        lambda: scorer.embed_audio([path]),
    ):
        with pytest.raises(AudioError, match=message) as info:
            call()
        assert str(path) in str(info.value) and "at least 2 samples" in str(info.value)
    with pytest.raises(AudioError, match="too short: 1 samples at 48000 Hz"):
        features_of(scorer, (np.array([0.5], dtype=np.float32), 48000))
    # two samples are enough: soxr rounds 2/3 of a sample up to one
    two = write_wav(tmp_path / "two.wav", np.array([0.5, -0.5], dtype=np.float32), 48000, "FLOAT")
    assert load_audio(two, 16000).shape == (1,)
    with pytest.raises(AudioError, match="empty waveform"):
        clip_features(np.zeros(0, dtype=np.float32), scorer.feature_extractor, False)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_degenerate_lengths_give_finite_features(scorer, fused_scorer, tmp_path, fused):
    s = fused_scorer if fused else scorer
    window = s.feature_extractor.nb_max_samples
    shapes = set()
    for n in (1, 2, 3, window - 1, window, window + 1, 2 * window + 1):
        clip = noise_clip(n / 16000, seed=n % 7)
        assert clip.shape == (n,)
        path = write_wav(tmp_path / f"n{n}.wav", clip, 16000, "FLOAT")
        feats, longer = features_of(s, path)
        assert np.isfinite(feats).all(), n
        assert longer == (n > window), n
        ref, _ = clip_features(clip, s.feature_extractor, fused)
        np.testing.assert_array_equal(feats, ref)  # same rate: the file path is exact
        shapes.add(feats.shape)
        assert np.isfinite(s.cosine([path], ["a dog barks"])).all()
    assert len(shapes) == 1  # every length gives the model's one input shape


def test_too_short_file_marks_its_row_and_the_job_goes_on(scorer, tmp_path):
    from humanclap.scoring.job import ScoreJob

    write_wav(tmp_path / "good.wav", noise_clip(0.5), 16000)
    write_wav(tmp_path / "one48k.wav", np.array([0.5], dtype=np.float32), 48000, "FLOAT")
    write_wav(tmp_path / "huge.wav", noise_clip(0.5) * np.float32(1e6), 16000, "FLOAT")
    (tmp_path / "folder.wav").mkdir()
    os.symlink(tmp_path / "loop.wav", tmp_path / "loop.wav")
    names = ["good.wav", "one48k.wav", "huge.wav", "folder.wav", "loop.wav", "good.wav"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio,text\n" + "".join(f"{n},a dog barks\n" for n in names))
    for cache in (None, str(tmp_path / "cache")):  # the cache hashes files first: same messages
        out = tmp_path / f"out{cache is None}.csv"
        summary = ScoreJob(scorer, batch_size=2, cache_dir=cache).run(manifest, output=out)
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["audio"] for r in rows] == names
        errors = [r["error"] for r in rows]
        assert errors[0] == errors[5] == "" and rows[0]["clapscore"] != ""
        for error, expected in zip(errors[1:5], ["too short", "max |x| = ", "is a directory", "symlink loop"]):
            assert expected in error, (expected, error)
        assert summary.failed == 4 and summary.scored == 2


# -- 2. huge samples ---------------------------------------------------------------------------


def test_huge_samples_are_refused_with_their_magnitude(scorer, fused_scorer, tmp_path):
    clip = noise_clip(0.5, seed=2)
    for amp in (1e3, 1e18, 1e35):
        for s in (scorer, fused_scorer):
            with pytest.raises(AudioError, match=r"max \|x\| = .*expected \[-1, 1\]") as info:
                features_of(s, (clip * np.float32(amp) / np.abs(clip).max(), 16000))
            assert f"{amp:.3g}" in str(info.value)
    path = write_wav(tmp_path / "huge.wav", clip * np.float32(1e35), 16000, "FLOAT")
    with pytest.raises(AudioError, match=r"max \|x\| = ") as info:
        features_of(scorer, path)
    assert str(path) in str(info.value)
    # integer PCM stored as float says how to fix it; an int16 array (e.g. scipy.io.wavfile)
    # is scaled by its dtype, as soundfile scales an int16 wav
    pcm = np.round(clip * 32767).astype(np.int16)
    with pytest.raises(AudioError, match="divide it by 32768"):
        features_of(scorer, (pcm.astype(np.float32), 16000))
    np.testing.assert_array_equal(
        features_of(scorer, (pcm, 16000))[0], features_of(scorer, (pcm.astype(np.float32) / 32768, 16000))[0]
    )


def test_float_wav_a_little_over_full_scale_still_scores(scorer, fused_scorer, tmp_path):
    loud = noise_clip(0.5, seed=4) * np.float32(2.0 / 0.3)  # peaks ~2.3: float headroom, not a bug
    assert 1 < np.abs(loud).max() < MAX_ABS_SAMPLE
    path = write_wav(tmp_path / "loud.wav", loud, 16000, "FLOAT")
    for s in (scorer, fused_scorer):
        feats, _ = features_of(s, path)
        assert np.isfinite(feats).all()
        np.testing.assert_allclose(s.cosine([path], ["a"]), s.cosine([(loud, 16000)], ["a"]), atol=1e-6)


def test_non_finite_features_are_an_audio_error_even_without_the_range_rule(scorer, monkeypatch):
    # The backstop: whatever passes the sample checks, features must come out finite.
    monkeypatch.setattr(audio_mod, "MAX_ABS_SAMPLE", float("inf"))
    huge = np.full(16000, 3e38, dtype=np.float32)  # finite, but the spectrogram overflows
    with pytest.raises(
        AudioError, match=r"features are not finite \(max \|x\| = 3e\+38, expected samples in \[-1, 1\]"
    ):
        clip_features(huge, scorer.feature_extractor, False)


# -- 3. bounded memory per file ----------------------------------------------------------------


def _frames_read(monkeypatch) -> list:
    """Spy on the block reader: the number of source frames each read returned."""
    seen, real = [], audio_file.mono_blocks

    def spy(*args, **kwargs):
        for block in real(*args, **kwargs):
            seen.append(block.shape[0])
            yield block

    monkeypatch.setattr(audio_file, "mono_blocks", spy)
    return seen


def test_whole_file_read_is_bit_identical_to_decoding_it_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_file, "BLOCK_FRAMES", 1000)  # many blocks, odd boundaries
    for rate, target in ((48000, 16000), (44100, 48000), (16000, 16000)):
        clip = noise_clip(1.3, rate=rate, channels=3, seed=1)
        path = write_wav(tmp_path / f"c{rate}.wav", clip, rate, "PCM_24")
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        ref = data.mean(axis=1, dtype=np.float64)
        if rate != target:
            ref = soxr.resample(ref, rate, target, quality="HQ")
        np.testing.assert_array_equal(load_audio(path, target), ref.astype(np.float32))


@pytest.mark.parametrize("rate,subtype", [(48000, "PCM_16"), (44100, "FLOAT"), (16000, "PCM_16"), (8000, "FLOAT")])
def test_long_clip_unfused_reads_only_the_centre_window(scorer, tmp_path, monkeypatch, rate, subtype):
    ext = scorer.feature_extractor
    clip = noise_clip(30.0, rate=rate, channels=2, seed=3)
    path = write_wav(tmp_path / "long.wav", clip, rate, subtype)
    full = clip_features(load_audio(path, 16000), ext, False)
    seen = _frames_read(monkeypatch)
    feats, longer = features_of(scorer, path)
    assert longer and full[1]
    window_src = ext.nb_max_samples * rate // 16000
    step = rate // np.gcd(rate, 16000)  # the read starts on the resampler grid: up to one step early
    assert sum(seen) <= window_src + 2 * audio_file.RESAMPLER_MARGIN_S * rate + step + 2
    if rate == 16000:
        np.testing.assert_array_equal(feats, full[0])  # no resampler: exactly the same samples
    else:
        # soxr HQ computes in float32 internally, so a segment and the whole file round
        # differently: ~1.5e-7 on the waveform (measured), which is <1e-4 dB on the log-mel
        # where there is signal, up to ~4e-3 dB in bands that hold only resampler noise
        # near the -100 dB floor (upsampling 8 kHz leaves 4-8 kHz empty)
        n = load_audio(path, 16000).shape[0]
        centre = load_audio(path, 16000)[(n - ext.nb_max_samples) // 2 :][: ext.nb_max_samples]
        with audio_file.open_audio(path) as f:
            window, total = audio_file.read_centre_window(f, str(path), 16000, ext.nb_max_samples)
        assert total == n
        np.testing.assert_allclose(window, centre, rtol=0, atol=5e-7)
        loud = full[0] > -60
        np.testing.assert_allclose(feats[loud], full[0][loud], rtol=0, atol=5e-4)
        np.testing.assert_allclose(feats, full[0], rtol=0, atol=1e-2)
    np.testing.assert_allclose(scorer.cosine([path], ["a"]), scorer.cosine([(clip, rate)], ["a"]), atol=1e-5)


def test_lossy_or_unseekable_files_fall_back_to_streaming_the_whole_file(scorer, tmp_path, monkeypatch):
    clip = noise_clip(25.0, rate=48000, seed=6)
    path = write_wav(tmp_path / "long.ogg", clip, 48000, "VORBIS")
    seen = _frames_read(monkeypatch)
    feats, longer = features_of(scorer, path)
    assert longer and sum(seen) == clip.shape[0]
    np.testing.assert_array_equal(feats, clip_features(load_audio(path, 16000), scorer.feature_extractor, False)[0])


def test_fused_whole_clip_mel_in_chunks_equals_one_call(fused_scorer, monkeypatch):
    ext = fused_scorer.feature_extractor
    clip = noise_clip(9.0, seed=8)
    one_call = ext._np_extract_fbank_features(clip.astype(np.float64), ext.mel_filters)
    monkeypatch.setattr(audio_mod, "MEL_CHUNK_FRAMES", 37)  # many chunks, none aligned to anything
    chunked = audio_mod.whole_clip_mel(ext, clip)
    assert chunked.shape == one_call.shape and chunked.dtype == one_call.dtype
    np.testing.assert_allclose(chunked, one_call, rtol=0, atol=1e-4)
    feats, longer = clip_features(clip, ext, True)
    monkeypatch.setattr(audio_mod, "MEL_CHUNK_FRAMES", 10**9)
    ref, _ = clip_features(clip, ext, True)
    assert longer
    np.testing.assert_allclose(feats, ref, rtol=0, atol=1e-4)


RSS_CHILD = textwrap.dedent("""
    import sys
    from transformers import ClapFeatureExtractor
    from humanclap.scoring.audio import load_clip_features, read_audio
    mode = sys.argv[2]
    ext = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000)  # LAION: 48 kHz, 10 s
    ext.truncation = "fusion" if mode == "fused" else "rand_trunc"
    ext._np_extract_fbank_features(ext.mel_filters[:, 0].astype("float64"), ext.mel_filters)  # warm up numpy/fft
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (imports raised it)
        f.write("5")
    before = status("VmRSS")
    if mode == "whole":
        read_audio(sys.argv[1])
    else:
        load_clip_features(sys.argv[1], ext, mode == "fused")
    print((status("VmHWM") - before) // 1024)
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux: resets and reads VmHWM in /proc")
def test_peak_memory_of_a_long_96k_6ch_file_is_bounded(tmp_path):
    # 1 minute at 96 kHz x 6 channels: decoding it whole takes 138 MB as float32, and the
    # old path held that plus a float64 mono copy and the resampled one (~220 MB). See
    # benchmarks/bench_audio_memory.py for the 10-minute measurement (2.2 GB before).
    path = tmp_path / "big.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", 96000, 6, subtype="PCM_16") as f:
        for _ in range(6):
            f.write((0.1 * rng.standard_normal((960000, 6))).astype(np.float32))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    growth = {}
    for mode in ("whole", "unfused", "fused"):
        run = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, str(path), mode], capture_output=True, text=True, env=env, timeout=300
        )
        assert run.returncode == 0, run.stderr[-2000:]
        growth[mode] = int(run.stdout.split()[-1])
    print("peak RSS growth (MB):", growth)
    assert growth["whole"] > 130, growth  # the measurement sees a whole-file decode
    # unfused: a ~10 s window; fused: one 48 kHz mono float32 copy (11.5 MB) + mel chunks
    assert growth["unfused"] < 40, growth
    assert growth["fused"] < 80, growth


# -- 4. paths that are not audio files -----------------------------------------------------------


def _all_path_calls(scorer, path):
    return [
        lambda: load_audio(path, 16000),
        lambda: features_of(scorer, path),
        lambda: read_audio(path),
        lambda: audio_bytes_hash(path),
        lambda: scorer.embed_audio([path]),
    ]


@pytest.mark.parametrize(
    "kind,message",
    [
        ("directory", "is a directory"),
        ("loop", "symlink loop"),
        ("broken", "broken symlink"),
        ("fifo", "not a regular file"),
        ("missing", "file not found"),
        ("under_file", "file not found"),
    ],
)
def test_paths_that_are_not_audio_files_say_what_they_are(scorer, tmp_path, kind, message):
    path = tmp_path / f"{kind}.wav"
    if kind == "directory":
        path.mkdir()
    elif kind == "loop":
        os.symlink(tmp_path / "other.wav", path)
        os.symlink(path, tmp_path / "other.wav")
    elif kind == "broken":
        os.symlink(tmp_path / "gone.wav", path)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    elif kind == "under_file":
        write_wav(tmp_path / "clip.wav", noise_clip(0.2))
        path = tmp_path / "clip.wav" / "x.wav"
    for call in _all_path_calls(scorer, path):
        with pytest.raises(AudioError, match=message) as info:
            call()
        assert str(path) in str(info.value)


def test_unreadable_file_says_permission_denied(scorer, tmp_path, monkeypatch):
    path = write_wav(tmp_path / "locked.wav", noise_clip(0.2))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the access check answer as for a user
        real = os.access
        monkeypatch.setattr(audio_file.os, "access", lambda p, mode: False if str(p) == str(path) else real(p, mode))
    try:
        for call in _all_path_calls(scorer, path):
            with pytest.raises(AudioError, match="permission denied: the file exists but this user cannot read it"):
                call()
    finally:
        path.chmod(0o644)


# -- 5. in-memory items ----------------------------------------------------------------------------

GOOD = noise_clip(0.2)


@pytest.mark.parametrize(
    "item,message",
    [
        ((GOOD, 0), "invalid sample rate 0"),
        ((GOOD, -16000), "invalid sample rate -16000"),
        ((GOOD, 16000.5), "invalid sample rate 16000.5"),
        ((GOOD, float("nan")), "invalid sample rate nan"),
        ((GOOD, "16000"), "sample rate must be a number of Hz.*got str"),
        ((GOOD, None), "sample rate must be a number of Hz.*got NoneType"),
        ((GOOD, True), "sample rate must be a number of Hz.*got bool"),
        ((np.array(["a", "b"]), 16000), "samples must be real numbers.*got <U1"),
        ((np.array([{"a": 1}, None], dtype=object), 16000), "samples must be real numbers.*got object"),
        ((GOOD.astype(np.complex64), 16000), "samples must be real numbers.*got complex64"),
        ((GOOD > 0, 16000), "samples must be real numbers.*got bool"),
        ((["0.1", "x"], 16000), "samples must be real numbers"),
        (
            (np.zeros((100, 2, 2), dtype=np.float32), 16000),
            r"array must be \(samples,\) or \(samples, channels\), got shape \(100, 2, 2\)",
        ),
        ((np.float32(0.5), 16000), r"got shape \(\)"),
        ((np.zeros(0, dtype=np.float32), 16000), r"empty audio \(0 samples\)"),
        ((np.zeros((0, 2), dtype=np.float32), 16000), r"empty audio \(0 samples\)"),
        ((np.zeros((100, 0), dtype=np.float32), 16000), "0 channels"),
        ((np.zeros((2, 16000), dtype=np.float32), 16000), r"looks like \(channels, samples\)"),
        ((np.array([0.0, np.nan], dtype=np.float32), 16000), "NaN or inf"),
        ((GOOD, 16000, "extra"), r"paths or \(array, sample_rate\) tuples"),
        (42, r"paths or \(array, sample_rate\) tuples, got int"),
    ],
)
def test_bad_in_memory_items_raise_audio_error(scorer, item, message):
    for call in (
        lambda: load_audio(item, 16000),
        lambda: features_of(scorer, item),
        lambda: scorer.embed_audio([item]),
    ):
        with pytest.raises(AudioError, match=message):
            call()


def test_odd_but_valid_in_memory_items_score_like_float32(scorer):
    ref = scorer.cosine([(GOOD, 16000)], ["a"])
    for item in (
        (GOOD.astype(np.float64), 16000.0),
        (GOOD.tolist(), np.int64(16000)),
        (np.array(GOOD.tolist(), dtype=object), 16000),
        (GOOD[:, None], 16000),
    ):
        np.testing.assert_allclose(scorer.cosine([item], ["a"]), ref, atol=1e-6)
