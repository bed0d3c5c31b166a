"""Exactly reproducible scores: the same bits whatever --batch-size, whatever the other rows
of the manifest, alone or in a batch, cached or not (fixed forward shapes, see scorer.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noise_clip, write_wav

from humanclap import CLAPScorer
from humanclap.cli import main
from humanclap.scoring.clap.scorer import AUDIO_CHUNK, TEXT_BUCKETS, TEXT_CHUNK
from humanclap.scoring.engine import EmbeddingEngine, open_cache

SHORT = [
    "a dog barks",
    "rain",
    "a bell rings",
    "music plays with a drum beat",
    "birds chirp",
    "a siren wails as traffic passes by",
    "people applaud",
    "water runs",
]
LONG = [
    " ".join(["rain falls on a roof followed by thunder and a car horn honks"] * 4),
    " ".join(["birds chirp in the distance as wind blows"] * 5),
    "a woman speaks and a baby cries while music plays with a drum beat and a guitar " * 2,
]
# Clip lengths in seconds around the tiny models' 1 s window: fused batches mix long and short.
SECONDS = [0.2, 1.0, 2.5, 0.5, 3.0, 0.05, 1.7, 0.9, 0.4, 1.3, 0.7]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det")
    rows = []
    for i, sec in enumerate(SECONDS):
        write_wav(root / f"c{i}.wav", noise_clip(sec, seed=i))
        rows.append({"audio": f"c{i}.wav", "text": (SHORT + LONG)[i % len(SHORT + LONG)]})
    rows.append({"audio": "c3.wav", "text": SHORT[0]})  # a file and a text used twice
    path = root / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("fused", [False, True])
def test_score_bytes_identical_across_batch_sizes(fused, manifest, tiny_unfused, tiny_fused, tmp_path, capsys):
    model = tiny_fused if fused else tiny_unfused
    outputs = {}
    for bs in (1, 3, 8, 64):
        out = tmp_path / f"bs{bs}.csv"
        assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--batch-size", str(bs)]) == 0
        outputs[bs] = out.read_bytes()
    capsys.readouterr()
    assert outputs[1] == outputs[3] == outputs[8] == outputs[64]
    assert outputs[1].count(b"\n") == len(SECONDS) + 2  # header + every row scored


def test_text_alone_equals_text_among_long_texts(tiny_unfused):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    crowd = LONG * 7 + SHORT  # more than one chunk; the text lands mid-chunk, then at its start
    for text in ("a dog barks", "rain"):
        alone = scorer.embed_text([text])[0]
        for at in (5, TEXT_CHUNK, len(crowd)):
            among = scorer.embed_text(crowd[:at] + [text] + crowd[at:])[at]
            assert alone.tobytes() == among.tobytes()


def test_each_length_bucket_gives_a_text_the_same_bits_alone_and_among_others(tiny_unfused):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    # one text per bucket and one cut at 77 tokens, so every bucket is used
    words = "rain falls on a roof followed by thunder and a car horn honks then a dog barks".split()
    by_words = {n: " ".join((words * 10)[:n]) for n in range(1, 120)}
    counts = dict(zip(by_words, scorer.token_counts(list(by_words.values()))))
    # the longest text that still fits each bucket (its pad is then the fullest)
    texts = [by_words[max(n for n, c in counts.items() if c <= b)] for b in TEXT_BUCKETS] + [" ".join(words * 10)]
    buckets = [next(b for b in TEXT_BUCKETS if n <= b) for n in scorer.token_counts(texts)]
    assert buckets == [*TEXT_BUCKETS, 77]
    crowd = SHORT + LONG + texts[::-1]
    together = scorer.embed_text(crowd)
    for text in texts:
        alone = scorer.embed_text([text])[0]
        assert alone.tobytes() == together[crowd.index(text)].tobytes()
        # the bucket only changes float rounding: the same embedding as padded to 77
        padded = scorer.tokenize([text] * TEXT_CHUNK, fixed_length=True)
        from humanclap.scoring.clap.scorer import text_embeddings

        with torch.no_grad():
            full = text_embeddings(scorer.model, **padded)[0].numpy()
        np.testing.assert_allclose(alone, full, atol=1e-6)


def test_a_text_longer_than_its_pad_is_refused_not_cut(tiny_unfused):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    with pytest.raises(ValueError, match="does not fit a 16-token pad"):
        scorer.tokenize([LONG[0]], fixed_length=16)


@pytest.mark.parametrize("fused", [False, True])
def test_clip_alone_equals_clip_in_a_full_batch(fused, tiny_unfused, tiny_fused):
    scorer = CLAPScorer.from_pretrained(str(tiny_fused if fused else tiny_unfused), device="cpu")
    feats = [scorer.features(noise_clip(sec, seed=i)) for i, sec in enumerate(SECONDS)]
    for k in (0, 2):  # a short clip, and a long one (fused: the fusion branch)
        alone = scorer.embed_features([feats[k]])[0]
        batch = [f for i, f in enumerate(feats) if i != k][: AUDIO_CHUNK - 1]
        for at in (0, 3, AUDIO_CHUNK - 1):
            full = scorer.embed_features(batch[:at] + [feats[k]] + batch[at:], pad_to=AUDIO_CHUNK)
            assert alone.tobytes() == full[at].tobytes()


def test_engine_bits_do_not_depend_on_its_batch_size_or_the_cache(manifest, tiny_fused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_fused), device="cpu")
    files = [str(manifest.parent / f"c{i}.wav") for i in range(len(SECONDS))]
    texts = SHORT + LONG
    runs = []
    for bs, cache in ((1, None), (64, None), (3, tmp_path / "cache"), (5, tmp_path / "cache")):
        engine = EmbeddingEngine(scorer, bs, open_cache(cache, scorer) if cache else None)
        # the cached run embeds only a subset of texts: neighbours must not matter
        engine.embed_unique(files, texts[::2] if bs == 3 else texts, progress=False)
        engine.embed_texts(texts)
        runs.append(engine)
    assert runs[3].cache.hits == len(files) + len(texts)  # everything came from the cache
    for engine in runs[1:]:
        for f in files:
            assert engine.audio_emb[f].tobytes() == runs[0].audio_emb[f].tobytes()
        for t in texts:
            assert engine.text_emb[t].tobytes() == runs[0].text_emb[t].tobytes()


def test_cache_key_carries_the_numerics(tiny_unfused, tmp_path):
    scorer = CLAPScorer.from_pretrained(str(tiny_unfused), device="cpu")
    numerics = scorer.numerics
    assert numerics["audio_chunk"] == AUDIO_CHUNK and numerics["text_chunk"] == TEXT_CHUNK
    assert numerics["text_length"] == 77 and numerics["device"].startswith("cpu") and numerics["torch"]
    assert numerics["text_buckets"] == list(TEXT_BUCKETS)

    class OtherDevice(CLAPScorer):  # what a run on another device/build would key by
        @property
        def numerics(self) -> dict:
            return {**super().numerics, "device": "cuda:Some GPU"}

    first = EmbeddingEngine(scorer, 4, open_cache(tmp_path / "cache", scorer))
    first.embed_texts(SHORT)
    other = OtherDevice(scorer.model, scorer.tokenizer, scorer.feature_extractor, scorer.info, device="cpu")
    second = EmbeddingEngine(other, 4, open_cache(tmp_path / "cache", other))
    second.embed_texts(SHORT)
    assert second.cache.hits == 0 and second.cache.misses == len(SHORT)
    np.testing.assert_array_equal(
        np.stack([first.text_emb[t] for t in SHORT]), np.stack([second.text_emb[t] for t in SHORT])
    )
