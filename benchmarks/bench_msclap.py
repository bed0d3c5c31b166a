"""Throughput of MS CLAP 2023 through `humanclap score` against the naive msclap loop.

Real-size MS CLAP 2023 (HTS-AT + GPT-2) with random weights: the ``.pth`` that
``parity/msclap_reference.py`` writes (msclap's own model, msclap's checkpoint layout).
64 clips of 2-7 s at 44.1 kHz (no resampling on either side, no clip longer than the 7 s
window, so msclap's preprocessing is deterministic and equals ours), 8 distinct captions.
Both sides run as whole processes in this run (start-up and model loading included):

* ours:  ``humanclap score manifest.csv --model CLAP_weights_2023.pth -o out.csv``
* naive: ``msclap``'s ``CLAPWrapper.get_audio_embeddings([file])`` one file at a time and
  ``get_text_embeddings`` of the captions, in the isolated parity environment (torchaudio
  replaced by a soundfile reader there, the only harness change; the weights are the same
  ``.pth``; a tiny GPT-2-style tokenizer stands in for ``gpt2``'s on both sides).

Prints both wall times, the ratio and max |d cos| over the rows.

    python benchmarks/bench_msclap.py --ref-python /path/to/parity-env/bin/python \\
        --weights REF_DIR/CLAP_weights_2023.pth [--clips 64] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 44100
CAPTIONS = [
    "a dog barks while a man talks",
    "rain falls on a roof followed by thunder",
    "a car horn honks then an engine revs",
    "birds chirp in the distance as wind blows",
    "a woman speaks and a baby cries",
    "music plays with a drum beat and a guitar",
    "a siren wails as traffic passes by",
    "people applaud and cheer loudly",
]


def naive_msclap(weights: str, tok_dir: str, manifest: str, out: str) -> None:
    """The msclap side (runs in the parity env; never imports humanclap)."""
    import types

    import soundfile as sf
    import torch
    import transformers  # noqa: F401  (before the stub: it probes torchaudio's spec at import)

    ta = types.ModuleType("torchaudio")
    tr = types.ModuleType("torchaudio.transforms")

    def load(path):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), rate

    def no_resample(*a, **k):
        raise RuntimeError("the benchmark's clips are at 44.1 kHz already")

    ta.load, tr.Resample, ta.transforms = load, no_resample, tr
    sys.modules.update({"torchaudio": ta, "torchaudio.transforms": tr})
    import msclap.CLAPWrapper as wrapper
    import msclap.models.clap as clap_module
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    class OfflineAutoModel:  # the architecture from its config; the .pth supplies the weights
        @staticmethod
        def from_pretrained(name, *a, **k):
            return GPT2Model(GPT2Config())

    class OfflineTokenizer:
        @staticmethod
        def from_pretrained(name, *a, **k):
            return AutoTokenizer.from_pretrained(tok_dir)

    clap_module.AutoModel, wrapper.AutoTokenizer = OfflineAutoModel, OfflineTokenizer
    clap = wrapper.CLAPWrapper(model_fp=weights, version="2023", use_cuda=False)
    rows = list(csv.DictReader(open(manifest)))
    audio = {}
    for r in rows:  # one file at a time, as third-party scripts call it
        if r["audio"] not in audio:
            audio[r["audio"]] = clap.get_audio_embeddings([r["audio"]], resample=True)[0]
    texts = sorted({r["text"] for r in rows})
    text = dict(zip(texts, clap.get_text_embeddings(texts)))
    cos = [float(torch.nn.functional.cosine_similarity(audio[r["audio"]], text[r["text"]], dim=0)) for r in rows]
    Path(out).write_text(json.dumps(cos))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref-python", help="python of the parity env (msclap installed)")
    p.add_argument("--weights", help="CLAP_weights_2023.pth from parity/msclap_reference.py")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--workdir")
    p.add_argument("--naive-msclap", nargs=4, metavar=("WEIGHTS", "TOKDIR", "MANIFEST", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.naive_msclap:
        naive_msclap(*a.naive_msclap)
        return
    if not (a.ref_python and a.weights):
        p.error("--ref-python and --weights are needed")
    import soundfile as sf

    from humanclap.recipes.tiny_msclap import train_msclap_tokenizer

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_msclap_"))
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    pth = model_dir / "CLAP_weights_2023.pth"
    if not pth.exists():
        pth.symlink_to(Path(a.weights).resolve())
    train_msclap_tokenizer("2023", CAPTIONS).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(a.clips):
        n = int(rng.uniform(2.0, 7.0) * RATE)
        t = np.arange(n) / RATE
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(n)
        path = work / "audio" / f"clip{i:03d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
        rows.append({"audio": str(path), "text": CAPTIONS[i % len(CAPTIONS)]})
    manifest = work / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text"])
        w.writeheader()
        w.writerows(rows)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "humanclap.cli",
            "score",
            str(manifest),
            "--model",
            str(pth),
            "-o",
            str(work / "ours.csv"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        check=True,
        env=env,
    )
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(
        [a.ref_python, __file__, "--naive-msclap", str(pth), str(model_dir), str(manifest), str(work / "naive.json")],
        check=True,
        env=env,
    )
    naive_s = time.perf_counter() - t0

    ours = np.array([float(r["cosine"]) for r in csv.DictReader(open(work / "ours.csv"))])
    naive = np.array(json.loads((work / "naive.json").read_text()))
    print(f"MS CLAP 2023, {a.clips} clips, CPU threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(
        f"humanclap score: {ours_s:.1f} s   naive msclap loop: {naive_s:.1f} s   "
        f"ratio {naive_s / ours_s:.2f}x   max |d cos| {np.max(np.abs(ours - naive)):.2e}"
    )


if __name__ == "__main__":
    main()
