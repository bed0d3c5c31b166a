"""humanclap side of the LAION parity check: runs in humanclap's own environment.

    python parity/laion_compare.py DIR [--families NAME ...]   # DIR: what laion_reference.py wrote

For each family it converts ``DIR/<family>.pt`` with ``humanclap convert`` (the CLI, in-process),
loads the folder with ``CLAPScorer.from_pretrained`` and prints one gated row per number
(``probes.Gate``; exit 1 if any is over its bound):

* the reference's embeddings of two different probe clips differ (else nothing below means much);
* the front end, from the same waveform arrays: humanclap's features (``scoring/fbank.py``,
  the fused whole-clip mel + 3 chunks) against laion_clap's own preprocessing (torchlibrosa
  log-mel unfused, torchaudio ``mel_fusion`` fused), in dB, and ``is_longer``;
* the towers: humanclap's model on the reference's features and the same token ids, bound 1e-5
  (max |de| of the unit vectors, 1 - cos, max |dcos| of the audio-text cosines);
* end to end: humanclap's model on humanclap's features, bound ``END_TO_END``: the front ends
  differ by float rounding (float64 numpy here, float32 torch there), which matters only in
  mel bins near the -100 dB floor (clean tones, the chirp).

The tokenizer written into the converted folders is a placeholder (roberta-base's cannot be
downloaded here): the texts are compared on token ids, so it is never used.
``HUMANCLAP_PARITY_MUTATION`` (see probes.py) injects a known bug into humanclap's side; the
comparison must then fail (parity/run.sh checks that it does).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import probes
import torch

from humanclap.cli import main as humanclap
from humanclap.recipes.tiny import train_tokenizer
from humanclap.scoring import fbank
from humanclap.scoring.audio import clip_features
from humanclap.scoring.clap.scorer import CLAPScorer, text_embeddings

FAMILIES = ["HTSAT-tiny-unfused", "HTSAT-tiny-fused", "HTSAT-base-unfused", "HTSAT-base-fused"]
TOL = 1e-5
# humanclap's log-mel (transformers' extractor, float64 numpy) against laion_clap's (float32 torch),
# same waveform. Where the mel is well above the -100 dB floor they agree to float32 rounding;
# in the bins of clean tones and chirps that hold the STFT's rounding noise near the floor,
# the float32 side is that noise (up to 3.3 dB off there, measured on these probes, this VM).
LOUD_DB = -60.0
FEATURE_DB = {"loud": 0.1, "all": 5.0}
# ... which moves the end-to-end embedding (measured: max|de| 1.8e-4, 1-cos 6.6e-7). With margin:
END_TO_END = {"de": 5e-4, "1-cos": 5e-6, "dcos": 2e-4}
QKV_BIAS = re.compile(r"audio.*attention\.self\.(query|key|value)\.bias$")


def apply_mutation(scorer: CLAPScorer, mutation: str | None) -> None:
    """The model-side and front-end mutations (time reversal is applied to the clips)."""
    if mutation == "no-qkv-bias":
        with torch.no_grad():
            hit = [p.zero_() for name, p in scorer.model.named_parameters() if QKV_BIAS.search(name)]
        assert hit, "no audio attention query/key/value bias found: update QKV_BIAS"
    if mutation == "log-floor-1e-5":
        fbank.MEL_FLOOR = fbank.DB_MIN = 1e-5


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embedding_rows(gate: probes.Gate, label: str, audio, text, ref_a, ref_t, bound: dict[str, float]) -> None:
    audio, ref_a = unit(audio), unit(ref_a)
    gate.row(f"{label} audio max|de|", float(np.abs(audio - ref_a).max()), bound["de"])
    gate.row(f"{label} audio max|1-cos|", float(np.abs(1 - (audio * ref_a).sum(-1)).max()), bound["1-cos"])
    gate.row(f"{label} audio-text max|dcos|", float(np.abs(audio @ text.T - ref_a @ ref_t.T).max()), bound["dcos"])


def family_rows(gate: probes.Gate, name: str, folder: Path, x, mutation: str | None) -> None:
    scorer = CLAPScorer.from_pretrained(str(folder), device="cpu")
    apply_mutation(scorer, mutation)
    ref_t, ref_a = unit(x["text_emb"]), unit(x["audio_emb"])
    gate.row(
        f"{name} reference: largest cosine of two clips' embeddings",
        probes.pairwise_max_cosine(ref_a),
        probes.DISTINCT_COSINE,
        "(distinct clips must give distinct embeddings)",
    )
    clips = [x[f"clip_{i}"] for i in range(len(x["clip_names"]))]
    if mutation == "time-reverse":
        clips = [np.ascontiguousarray(c[::-1]) for c in clips]
    ours = [clip_features(c, scorer.feature_extractor, scorer.fused) for c in clips]
    feats = np.stack([f for f, _ in ours])
    gate.row(
        f"{name} is_longer mismatches",
        float(sum(bool(mine) != bool(theirs) for (_, mine), theirs in zip(ours, x["longer"]))),
        0.0,
    )
    diff = np.abs(feats - x["features"])
    gate.row(
        f"{name} log-mel (from the waveform) max|dB|, bins > {LOUD_DB:g} dB",
        float(diff[x["features"] > LOUD_DB].max()),
        FEATURE_DB["loud"],
    )
    gate.row(
        f"{name} log-mel (from the waveform) max|dB|, all bins",
        float(diff.max()),
        FEATURE_DB["all"],
        "(float32 rounding noise near the floor)",
    )
    with torch.no_grad():
        text = unit(
            text_embeddings(
                scorer.model, torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])
            ).numpy()
        )
    gate.row(f"{name} text max|de|", float(np.abs(text - ref_t).max()), TOL)
    gate.row(f"{name} text max|1-cos|", float(np.abs(1 - (text * ref_t).sum(-1)).max()), TOL)
    # the towers on the reference's own features; then everything humanclap's own
    towers = scorer.embed_features([(x["features"][i], bool(x["longer"][i])) for i in range(len(clips))])
    embedding_rows(
        gate,
        f"{name} towers (reference's features)",
        towers,
        text,
        ref_a,
        ref_t,
        {"de": TOL, "1-cos": TOL, "dcos": TOL},
    )
    end_to_end = scorer.embed_features(ours)
    embedding_rows(gate, f"{name} end to end (humanclap's features)", end_to_end, text, ref_a, ref_t, END_TO_END)


def compare(work_dir: Path, tmp: Path, families: list[str], mutation: str | None) -> int:
    tok_dir = tmp / "tokenizer"
    train_tokenizer(["placeholder tokenizer for the parity run"]).save_pretrained(tok_dir)
    gate = probes.Gate()
    for name in families:
        t0 = time.perf_counter()
        out = tmp / name
        code = humanclap(["convert", str(work_dir / f"{name}.pt"), str(out), "--tokenizer", str(tok_dir)])
        if code != 0:
            print(f"{name}: humanclap convert exited {code}")
            return 2
        t1 = time.perf_counter()
        family_rows(gate, name, out, np.load(work_dir / f"{name}.npz"), mutation)
        print(f"{name}: convert {t1 - t0:.1f} s, compare {time.perf_counter() - t1:.1f} s", flush=True)
    return gate.finish()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work", type=Path, nargs="?", default=Path("parity-out/laion"))
    p.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    a = p.parse_args()
    mutation = probes.mutation()
    if mutation:
        print(f"mutation injected into humanclap's side: {mutation} (this run must FAIL)")
    with tempfile.TemporaryDirectory(prefix="laion-parity-") as tmp:  # converted folders: ~3 GB
        return compare(a.work, Path(tmp), a.families, mutation)


if __name__ == "__main__":
    sys.exit(main())
