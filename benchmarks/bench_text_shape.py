"""Cost of fixed-shape text embedding (77 tokens, TEXT_CHUNK texts per pass) vs the
previous padding to the longest text of length-sorted batches of 32.

A LAION-sized text tower (RoBERTa-base: 12 layers, 768 wide, 512-d projection; random
weights, which cost the same as trained ones) with a byte-level BPE trained on the
captions (about one token per word, like RoBERTa's on AudioCaps-style captions of 4-25
words). Prints seconds per variant, the ratio to "before", and whether each variant gives
a text the same bits alone as inside the whole list.

    python benchmarks/bench_text_shape.py [--texts 1000] [--threads 2] [--chunks 8,16,32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

WORDS = (
    "a dog barks while man talks rain falls on the roof followed by thunder car horn honks then "
    "engine revs birds chirp in distance as wind blows woman speaks and baby cries music plays "
    "with drum beat guitar siren wails traffic passes people applaud cheer loudly water runs "
    "from tap into sink bell rings several times"
).split()


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(4, 26)))) for _ in range(n)]


def build_scorer(texts: list[str]):
    from transformers import ClapConfig, ClapModel, ClapTextConfig

    from humanclap.recipes.tiny import tiny_clap_config, tiny_feature_extractor, train_tokenizer
    from humanclap.scoring.audio import Preprocessing
    from humanclap.scoring.clap.scorer import CLAPScorer
    from humanclap.scoring.protocol import ModelInfo

    tok = train_tokenizer(texts, vocab_size=1000)
    text = ClapTextConfig(
        vocab_size=len(tok), max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2
    )  # RoBERTa-base sizes otherwise
    cfg = ClapConfig(
        text_config=text.to_dict(), audio_config=tiny_clap_config().audio_config.to_dict(), projection_dim=512
    )
    torch.manual_seed(0)
    fe = tiny_feature_extractor()
    info = ModelInfo("bench", "none", "local", Preprocessing.from_extractor(fe, False))
    return CLAPScorer(ClapModel(cfg).eval(), tok, fe, info, device="cpu")


@torch.no_grad()
def before(scorer, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """The previous embed_text: length-sorted batches of 32, padded to their longest text."""
    from humanclap.scoring.clap.scorer import text_embeddings

    lengths = [len(ids) for ids in scorer.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    out = np.zeros((len(texts), scorer.embedding_dim), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = scorer.tokenize([texts[j] for j in idx])
        out[idx] = text_embeddings(scorer.model, **enc).numpy()
    return out


def main() -> None:
    import humanclap.scoring.clap.scorer as scorer_module

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", default="8,16,32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = captions(args.texts)
    scorer = build_scorer(texts)
    tokens = [len(ids) for ids in scorer.tokenizer(texts)["input_ids"]]
    print(
        f"{len(texts)} texts, {np.mean(tokens):.1f} tokens on average (max {max(tokens)}), "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    t = time.perf_counter()
    ref = before(scorer, texts)
    base = time.perf_counter() - t
    alone_ref = before(scorer, texts[:1])[0]
    print(
        f"before (longest, sorted, 32): {base:7.2f} s  1.00x   text 0 alone == in list: "
        f"{np.array_equal(alone_ref, ref[0])}"
    )
    for chunk in [int(c) for c in args.chunks.split(",")]:
        scorer_module.TEXT_CHUNK = chunk
        t = time.perf_counter()
        out = scorer.embed_text(texts)
        sec = time.perf_counter() - t
        same = np.array_equal(scorer.embed_text(texts[:1])[0], out[0])
        print(
            f"after  (77 tokens, chunk {chunk:2d}): {sec:7.2f} s  {sec / base:4.2f}x   text 0 alone == "
            f"in list: {same}   max |after - before| {np.abs(out - ref).max():.1e}"
        )


if __name__ == "__main__":
    main()
