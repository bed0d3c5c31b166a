"""humanclap side of the LAION parity check: runs in humanclap's own environment.

    python parity/laion_compare.py DIR        # DIR: what laion_reference.py wrote

For each family it converts ``DIR/<family>.pt`` with ``humanclap convert`` (the CLI, in-process),
loads the folder with ``CLAPScorer.from_pretrained``, embeds the reference's inputs (the same
token ids and the same log-mel arrays) through the scorer's model and prints, per family and
tower, max |Δ| of the L2-normalised embeddings and 1 - cos(reference, ours); plus max |Δ| of
the audio-text cosine matrix (what CLAPScore is made of). Exits 1 unless all are <= 1e-5.

The tokenizer written into the converted folders is a placeholder (roberta-base's cannot be
downloaded here): the texts are compared on token ids, so it is never used.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from humanclap.cli import main as humanclap
from humanclap.recipes.tiny import train_tokenizer
from humanclap.scoring.scorer import CLAPScorer, text_embeddings

FAMILIES = ["HTSAT-tiny-unfused", "HTSAT-tiny-fused", "HTSAT-base-unfused", "HTSAT-base-fused"]
TOLERANCE = 1e-5


def ours(folder: Path, x) -> tuple[np.ndarray, np.ndarray]:
    scorer = CLAPScorer.from_pretrained(str(folder), device="cpu")
    with torch.no_grad():
        text = text_embeddings(scorer.model, torch.from_numpy(x["input_ids"]),
                               torch.from_numpy(x["attention_mask"])).numpy()
    # The scorer's own audio path from features on: (features, is_longer) per clip -> one batch.
    audio = scorer.embed_features([(x["mel"][i], bool(x["longer"][i])) for i in range(len(x["mel"]))])
    return text, audio


def main(work: str) -> int:
    with tempfile.TemporaryDirectory(prefix="laion-parity-") as tmp:  # converted folders: ~3 GB
        return compare(Path(work), Path(tmp))


def compare(work_dir: Path, tmp: Path) -> int:
    tok_dir = tmp / "tokenizer"
    train_tokenizer(["placeholder tokenizer for the parity run"]).save_pretrained(tok_dir)
    rows, worst = [], 0.0
    for name in FAMILIES:
        x = np.load(work_dir / f"{name}.npz")
        t0 = time.perf_counter()
        out = tmp / name
        code = humanclap(["convert", str(work_dir / f"{name}.pt"), str(out), "--tokenizer", str(tok_dir)])
        if code != 0:
            print(f"{name}: humanclap convert exited {code}")
            return 1
        t1 = time.perf_counter()
        text, audio = ours(out, x)
        t2 = time.perf_counter()
        ref_t, ref_a = x["text_emb"], x["audio_emb"]
        d = {
            "text max|Δ|": float(np.abs(text - ref_t).max()),
            "text 1-cos": float((1 - np.sum(text * ref_t, axis=1)).max()),
            "audio max|Δ|": float(np.abs(audio - ref_a).max()),
            "audio 1-cos": float((1 - np.sum(audio * ref_a, axis=1)).max()),
            "cos(a,t) max|Δ|": float(np.abs(audio @ text.T - ref_a @ ref_t.T).max()),
        }
        worst = max(worst, max(abs(v) for v in d.values()))
        rows.append((name, d, t1 - t0, t2 - t1))
    keys = list(rows[0][1])
    print(f"{'family':20s} " + " ".join(f"{k:>15s}" for k in keys) + f" {'convert s':>10s} {'embed s':>8s}")
    for name, d, tc, te in rows:
        print(f"{name:20s} " + " ".join(f"{d[k]:15.2e}" for k in keys) + f" {tc:10.1f} {te:8.1f}")
    ok = worst <= TOLERANCE
    print(f"worst {worst:.2e} {'<=' if ok else '>'} {TOLERANCE:.0e}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "parity-out/laion"))
