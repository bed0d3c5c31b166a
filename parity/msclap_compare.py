"""Compare humanclap's native MS CLAP with msclap's reference outputs (humanclap's env).

    python parity/msclap_compare.py REF_DIR [--tol 1e-5]

``REF_DIR`` is what ``parity/msclap_reference.py`` wrote in the isolated environment. For
each release: load ``CLAP_weights_<v>.pth`` through humanclap (``load_pth``: weights_only,
strict key check), embed the same token ids and waveform arrays, and report per tower

* ``max|1-cos|``: 1 - cosine between humanclap's and msclap's embedding of each input;
* ``max|dcos|``: the largest change of an audio-text cosine (what CLAPScore is made of);
* ``max|de|``: the largest element difference of the L2-normalised embeddings;

and, for the front end, the largest difference between the STFT kernels and mel filters
humanclap computes (``frontend.py``) and the ones torchlibrosa/librosa built into the
reference checkpoint. Exit 1 when any number exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from humanclap.scoring.msclap import MSClapModel, load_pth


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def compare(ref_dir: Path, version: str) -> dict[str, float]:
    ref = np.load(ref_dir / f"reference_{version}.npz")
    model = load_pth(ref_dir / f"CLAP_weights_{version}.pth", version)
    with torch.no_grad():
        ids, mask = torch.from_numpy(ref["input_ids"]), torch.from_numpy(ref["attention_mask"])
        text = model.get_text_features(ids, mask).numpy()
        audio = model.get_audio_features(torch.from_numpy(ref["waveforms"])).numpy()
    ours_a, ours_t, ref_a, ref_t = unit(audio), unit(text), unit(ref["audio_emb"]), unit(ref["text_emb"])
    out = {
        "audio max|1-cos|": float(np.max(np.abs(1 - (ours_a * ref_a).sum(-1)))),
        "text max|1-cos|": float(np.max(np.abs(1 - (ours_t * ref_t).sum(-1)))),
        "audio max|de|": float(np.max(np.abs(ours_a - ref_a))),
        "text max|de|": float(np.max(np.abs(ours_t - ref_t))),
        "audio-text max|dcos|": float(np.max(np.abs(ours_a @ ours_t.T - ref_a @ ref_t.T))),
    }
    # the front end humanclap builds itself, against torchlibrosa/librosa's in the checkpoint
    fresh = MSClapModel(model.config).state_dict()
    loaded = model.state_dict()
    for name, suffix in (("stft kernels max|d|", "stft.conv_real.weight"), ("stft kernels max|d|", "stft.conv_imag.weight"),
                         ("mel filters max|d|", "logmel_extractor.melW")):
        key = next(k for k in loaded if k.endswith(suffix))
        out[name] = max(out.get(name, 0.0), float((fresh[key] - loaded[key]).abs().max()))
    # the front end's bits matter only through the embeddings: recompute them with the fresh front end
    with torch.no_grad():
        for k in loaded:
            if k.endswith(("stft.conv_real.weight", "stft.conv_imag.weight", "logmel_extractor.melW")):
                dict(model.named_parameters())[k].copy_(fresh[k])
        audio2 = F.normalize(model.get_audio_features(torch.from_numpy(ref["waveforms"])), dim=-1).numpy()
    out["audio max|1-cos| (own front end)"] = float(np.max(np.abs(1 - (audio2 * ref_a).sum(-1))))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ref_dir", type=Path)
    p.add_argument("--versions", nargs="+", default=["2022", "2023"])
    p.add_argument("--tol", type=float, default=1e-5)
    a = p.parse_args()
    worst = 0.0
    for version in a.versions:
        result = compare(a.ref_dir, version)
        for name, value in result.items():
            # the kernels/filters are reported; what is held to the tolerance is the embeddings
            gated = not name.startswith(("stft", "mel"))
            flag = "FAIL" if gated and value > a.tol else "ok"
            print(f"MS CLAP {version}  {name:36s} {value:.3e}  {flag}")
            if gated:
                worst = max(worst, value)
    print(f"worst {worst:.3e} (tolerance {a.tol:g})")
    return 0 if worst <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
