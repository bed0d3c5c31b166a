"""The embedding engine, the Scorer protocol, CLAPScore and the native MS CLAP scorer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav

from humanclap import AudioError, CLAPScorer
from humanclap.evaluation.evaluate import score_pairs
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.engine import EmbeddingEngine, features_of, open_cache
from humanclap.scoring.msclap import MSClapScorer
from humanclap.scoring.protocol import Scorer

TEXTS = ["a dog barks", "rain falls on a roof", "a bell rings"]


# -- CLAPScore -------------------------------------------------------------------------
def test_clapscore_numpy_float_and_torch():
    out = clapscore(np.array([-0.5, 0.0, 0.25], dtype=np.float64))
    assert out.dtype == np.float32 and out.tolist() == [0.0, 0.0, 0.25]
    assert clapscore(-0.1) == 0.0 and isinstance(clapscore(0.3), np.float32)
    cos = torch.tensor([-0.5, 0.25, 0.75], requires_grad=True)
    score = clapscore(cos)
    assert isinstance(score, torch.Tensor) and score.dtype == cos.dtype
    score.sum().backward()  # the graph is kept: no gradient where the cosine was clipped
    assert cos.grad.tolist() == [0.0, 1.0, 1.0]


def test_clapscore_is_one_function_and_does_not_import_torch():
    import humanclap
    from humanclap.scoring import scorer

    assert humanclap.clapscore is clapscore and scorer.clapscore is clapscore
    code = (
        "import sys; from humanclap.scoring.clapscore import clapscore; "
        "import humanclap.scoring.hub, humanclap.evaluation.tables; "
        "assert 'torch' not in sys.modules; print(clapscore([-1.0, 0.5]).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[0.0, 0.5]", out.stderr


# -- the engine ------------------------------------------------------------------------
def _files(tmp_path, n=5):
    return [str(write_wav(tmp_path / f"c{i}.wav", noise_clip(0.3 + 0.1 * i, seed=i))) for i in range(n)]


def _counting(scorer):
    """Count decoded items and embedded texts on a scorer instance."""
    calls = {"load": [], "texts": []}
    load, embed_text = scorer.load_features, scorer.embed_text
    scorer.load_features = lambda item: calls["load"].append(str(item)) or load(item)
    scorer.embed_text = lambda texts: calls["texts"].extend(texts) or embed_text(texts)
    return calls


def test_clap_scorer_satisfies_the_protocol(tiny_unfused):
    assert isinstance(CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu"), Scorer)
    assert not isinstance(object(), Scorer)


def test_engine_embeds_each_unique_item_once_and_records_bad_files(tiny_unfused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    calls = _counting(scorer)
    files = _files(tmp_path)
    (tmp_path / "corrupt.wav").write_bytes(b"not audio")
    paths = files + files[:3] + [str(tmp_path / "missing.wav"), str(tmp_path / "corrupt.wav")]
    texts = [TEXTS[i % 3] for i in range(len(paths))]
    engine = EmbeddingEngine(scorer, batch_size=2)
    engine.embed_unique(paths, texts + ["  "], progress=False)
    assert sorted(calls["load"]) == sorted(set(calls["load"])) and len(calls["load"]) == 7
    assert calls["texts"] == TEXTS  # blank texts are never embedded
    assert engine.counts() == {"texts_embedded": 3, "audio_decoded": 7, "audio_embedded": 5, "audio_failed": 2}
    assert "file not found" in str(engine.audio_err[paths[-2]])
    assert "unreadable" in str(engine.audio_err[paths[-1]])
    assert engine.cosine(paths[-1], "a bell rings")[0] is None
    assert engine.cosine(files[0], " ") == (None, "empty text")
    # the same numbers as the scorer's own API, and unit norm
    ref = scorer.embed_audio(files, batch_size=2)
    np.testing.assert_allclose(np.stack([engine.audio_emb[f] for f in files]), ref, atol=1e-6)
    cos, err = engine.cosine(files[1], TEXTS[0])
    assert err == "" and cos == pytest.approx(float(ref[1] @ scorer.embed_text([TEXTS[0]])[0]), abs=1e-6)
    with pytest.raises(ValueError, match="batch-size must be at least 1"):
        EmbeddingEngine(scorer, batch_size=0)


def test_engine_pipeline_yields_batches_in_order_after_embedding(tiny_unfused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    files = _files(tmp_path)
    engine = EmbeddingEngine(scorer, batch_size=2)
    batches = [files[0:2], files[2:4], files[4:5] + files[0:1]]
    seen = []
    for b in engine.embed_audio_batches(batches):
        assert all(p in engine.audio_emb for p in batches[b])  # ready when yielded
        seen.append(b)
    assert seen == [0, 1, 2] and list(engine.embed_audio_batches([])) == []


def test_engine_cache_skips_all_work_and_gives_the_same_vectors(tiny_unfused, tmp_path):
    files = _files(tmp_path / "a")
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    first = EmbeddingEngine(scorer, 2, open_cache(tmp_path / "cache", scorer))
    first.embed_unique(files, TEXTS, progress=False)
    calls = _counting(scorer)
    second = EmbeddingEngine(scorer, 2, open_cache(tmp_path / "cache", scorer))
    second.embed_unique(files, TEXTS, progress=False)
    assert calls == {"load": [], "texts": []} and second.cache.hits == len(files) + len(TEXTS)
    for f in files:
        np.testing.assert_array_equal(first.audio_emb[f], second.audio_emb[f])


def test_features_of_is_the_engine_feature_stage(tiny_fused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_fused), device="cpu")
    path = _files(tmp_path, 1)[0]
    feats, longer = features_of(scorer, path)
    ref, ref_longer = scorer.features(scorer.load(path))
    np.testing.assert_array_equal(feats, ref)
    assert longer == ref_longer
    prep = EmbeddingEngine(scorer).prepare([path])
    np.testing.assert_array_equal(prep[path][0], ref)
    with pytest.raises(AudioError, match="file not found"):
        features_of(scorer, tmp_path / "missing.wav")


# -- MS CLAP ---------------------------------------------------------------------------
def test_msclap_scorer_implements_the_protocol_consistently(tmp_path):
    """The native MS CLAP (a tiny random 2023 model) through the same engine as CLAPScorer."""
    from humanclap.recipes.tiny_msclap import build_tiny_msclap
    from humanclap.scoring import load_scorer

    scorer = load_scorer(str(build_tiny_msclap(tmp_path / "m", "2023", seed=3)), device="cpu")
    assert isinstance(scorer, Scorer) and isinstance(scorer, MSClapScorer) and not isinstance(scorer, CLAPScorer)
    assert scorer.info.preprocessing.long_clip_rule == "centre-crop"
    rate, window = scorer.sampling_rate, scorer.window  # 44.1 kHz, a 1 s window
    short = write_wav(tmp_path / "short.wav", noise_clip(0.3, seed=1))
    long = write_wav(tmp_path / "long.wav", noise_clip(1.5, seed=2))
    wave = scorer.load(long)  # resampled from 16 kHz
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == int(1.5 * rate)
    # long clips: the centre window (msclap draws a random one); short ones: tiled
    feats, longer = scorer.features(wave)
    start = (len(wave) - window) // 2
    assert longer and np.array_equal(feats, wave[start : start + window])
    assert np.array_equal(scorer.features(wave)[0], feats)  # same clip, same crop
    s_wave = scorer.load(short)
    s_feats, s_longer = scorer.features(s_wave)
    n = len(s_wave)
    assert not s_longer and len(s_feats) == window and np.array_equal(s_feats[n : 2 * n], s_wave)

    texts = ["a dog barks", "rain"]
    scores, errors, counts = score_pairs(
        scorer, [str(long), str(short), str(tmp_path / "x.wav")], [*texts, "a bell"], batch_size=2, progress=False
    )
    assert errors[:2] == ["", ""] and "file not found" in errors[2] and np.isnan(scores[2])
    with torch.no_grad():
        a = torch.nn.functional.normalize(
            scorer.model.get_audio_features(torch.from_numpy(np.stack([feats, s_feats]))), dim=-1
        )
        t = torch.nn.functional.normalize(scorer.model.get_text_features(**scorer.tokenize(texts)), dim=-1)
    expected = np.maximum((a * t).sum(-1).numpy(), 0)
    np.testing.assert_allclose(scores[:2], expected, atol=1e-6)
    assert counts["audio_embedded"] == 2 and counts["audio_failed"] == 1
    emb = scorer.embed_text(texts)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    assert scorer.embed_text([]).shape == (0, scorer.embedding_dim)


def test_msclap_scorer_without_its_weights_is_a_clear_load_error():
    """msclap is no longer needed; what can be missing offline is the checkpoint."""
    from humanclap.errors import ModelLoadError

    with pytest.raises(
        ModelLoadError, match=r"CLAP_weights_2023.pth\) is not in the local Hugging Face cache.*--model /path/to"
    ):
        MSClapScorer.from_pretrained("msclap-2023", device="cpu")


# -- how a CPU job spends its forwards (bench_score.py measures the time) --------------------
def test_a_cpu_job_decodes_in_turn_and_embeds_many_steps_texts_in_full_passes(scorer, tmp_path, monkeypatch):
    """Decoding beside CPU forwards made them 1.7x slower (their threads wait on each other),
    and embedding texts step by step ran a 16-text pass for every 4 rows."""
    import csv
    import threading

    from humanclap.scoring.clap.scorer import TEXT_BUCKETS, TEXT_CHUNK
    from humanclap.scoring.job import ScoreJob

    words = ["dog", "rain", "bell", "car", "bird", "wind", "door", "siren"]
    texts = [f"a {a} and a {b}" for a in words for b in words[:5]]  # 40 distinct texts
    assert {next(b for b in TEXT_BUCKETS if n <= b) for n in scorer.token_counts(texts)} == {16}
    for i in range(5):
        write_wav(tmp_path / f"c{i}.wav", noise_clip(0.5, seed=i))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text"])
        w.writerows([f"c{i % 5}.wav", t] for i, t in enumerate(texts))
    passes, threads = [], set()
    original_text, original_prepare = scorer.model.get_text_features, EmbeddingEngine.prepare
    monkeypatch.setattr(
        scorer.model, "get_text_features", lambda *a, **k: passes.append(k["input_ids"].shape) or original_text(*a, **k)
    )
    monkeypatch.setattr(
        EmbeddingEngine,
        "prepare",
        lambda self, paths: threads.add(threading.current_thread().name) or original_prepare(self, paths),
    )
    ScoreJob(scorer, batch_size=4).run(tmp_path / "m.csv", tmp_path / "o.csv", progress=False)
    assert threads == {threading.main_thread().name}
    assert passes == [(TEXT_CHUNK, 16)] * 3  # 40 texts: 3 passes, not one per 4-row step
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    alone = scorer.embed_text([texts[17]])[0]
    audio = scorer.embed_audio([str(tmp_path / "c2.wav")])[0]
    assert float(rows[17]["cosine"]) == pytest.approx(float(alone @ audio), abs=1e-6)
