"""Compare humanclap's native MS CLAP with msclap's reference outputs (humanclap's env).

    python parity/msclap_compare.py REF_DIR [--versions 2022 2023]

``REF_DIR`` is what ``parity/msclap_reference.py`` wrote in the isolated environment. For
each release: load ``CLAP_weights_<v>.pth`` through humanclap (``load_pth``: weights_only,
strict key check), cut each probe clip to the window with humanclap's scorer, embed it and the
same token ids, and print one gated row per number (``probes.Gate``; exit 1 if any is over
its bound):

* the reference's embeddings of two different clips differ (else nothing below means much);
* the window humanclap cuts equals msclap's ``load_audio_into_tensor``'s, sample for sample;
* log-mel (dB) and embeddings with humanclap's STFT computed as msclap computes it (two
  1024-tap convolutions): bound 1e-5 (``max|1-cos|``, ``max|de|`` of the unit vectors,
  ``max|dcos|`` of the audio-text cosines);
* the same with the STFT as humanclap ships it (an FFT: the same transform, other float32
  rounding): bound ``FFT_BOUND``, the float32 rounding of msclap's own convolutions (see the
  README and tests/test_msclap.py);
* the STFT kernels and mel filters humanclap builds (``frontend.py``) against the ones
  torchlibrosa/librosa put in the checkpoint, and the embeddings with humanclap's own.

``HUMANCLAP_PARITY_MUTATION`` (see probes.py) injects a known bug into humanclap's side; the
comparison must then fail (parity/run.sh checks that it does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import probes
import torch

from humanclap.scoring.msclap import MSClapModel, frontend, load_pth
from humanclap.scoring.msclap.scorer import MSClapScorer

TOL = 1e-5
# humanclap's FFT-STFT against msclap's convolutions: on clean tones and chirps the mel bins
# far from the signal hold float32 rounding noise of the STFT (near the -100 dB floor), which
# the FFT and the convolutions round differently. Measured on this harness's probes: up to
# 0.36 dB and 3.3e-5 (max|de|, 2022); another float32 order of the very same convolution
# (unfold + matmul) differs from msclap's by as much. Bound with margin:
FFT_BOUND = {"dB": 1.0, "de": 2e-4, "1-cos": 1e-6, "dcos": 2e-4}
KERNEL_TOL = 1e-6  # frontend.STFT.uses_fft's own tolerance for "these kernels are the DFT"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def windows(model: MSClapModel, ref, mutation: str | None) -> np.ndarray:
    """The window humanclap's scorer cuts from each probe clip (its ``features``: tile, or centre crop)."""
    cut = SimpleNamespace(window=model.config.window_samples)
    clips = [ref[f"clip_{i}"] for i in range(len(ref["clip_names"]))]
    if mutation == "time-reverse":
        clips = [np.ascontiguousarray(c[::-1]) for c in clips]
    return np.stack([MSClapScorer.features(cut, c)[0] for c in clips])


def audio_tower(model: MSClapModel):
    base = model.audio_encoder.base
    return getattr(base, "htsat", base)


@torch.no_grad()
def embed(model: MSClapModel, ref, waves: np.ndarray, fft: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log-mel dB, audio, text) of humanclap's model, its STFT by FFT or by msclap's convolutions."""
    saved = frontend.STFT.uses_fft
    if not fft:
        frontend.STFT.uses_fft = lambda self: False  # the convolution path: msclap's own arithmetic
    try:
        tower, x = audio_tower(model), torch.from_numpy(waves)
        mel = frontend.log_mel(tower.spectrogram_extractor, tower.logmel_extractor, x).numpy()
        audio = model.get_audio_features(x).numpy()
    finally:
        frontend.STFT.uses_fft = saved
    text = model.get_text_features(torch.from_numpy(ref["input_ids"]), torch.from_numpy(ref["attention_mask"]))
    return mel, unit(audio), unit(text.numpy())


def embedding_rows(gate: probes.Gate, label: str, audio, text, ref_a, ref_t, bound: dict[str, float]) -> None:
    gate.row(f"{label} audio max|de|", float(np.abs(audio - ref_a).max()), bound["de"])
    gate.row(f"{label} audio max|1-cos|", float(np.abs(1 - (audio * ref_a).sum(-1)).max()), bound["1-cos"])
    gate.row(f"{label} audio-text max|dcos|", float(np.abs(audio @ text.T - ref_a @ ref_t.T).max()), bound["dcos"])


def front_end_rows(gate: probes.Gate, version: str, model: MSClapModel) -> MSClapModel:
    """Kernels and filters humanclap builds vs the checkpoint's; returns the model with humanclap's own."""
    fresh, loaded = MSClapModel(model.config).state_dict(), model.state_dict()
    for label, suffix in (
        ("STFT kernels", ("stft.conv_real.weight", "stft.conv_imag.weight")),
        ("mel filters", ("logmel_extractor.melW",)),
    ):
        keys = [k for k in loaded if k.endswith(suffix)]
        gate.row(
            f"MS CLAP {version} {label} (humanclap's vs checkpoint's) max|d|",
            max(float((fresh[k] - loaded[k]).abs().max()) for k in keys),
            KERNEL_TOL,
        )
    with torch.no_grad():
        params = dict(model.named_parameters())
        for k in loaded:
            if k.endswith(("stft.conv_real.weight", "stft.conv_imag.weight", "logmel_extractor.melW")):
                params[k].copy_(fresh[k])
    return model


def apply_mutation(model: MSClapModel, mutation: str | None) -> None:
    """The model-side mutations (the input-side one is in :func:`windows`)."""
    if mutation == "no-qkv-bias":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("qkv.bias"):
                    p.zero_()
    if mutation == "log-floor-1e-5":
        frontend.AMIN = 1e-5


def compare(gate: probes.Gate, ref_dir: Path, version: str, mutation: str | None) -> None:
    ref = np.load(ref_dir / f"reference_{version}.npz")
    ref_a, ref_t, ref_mel = unit(ref["audio_emb"]), unit(ref["text_emb"]), ref["log_mel"]
    tag = f"MS CLAP {version}"
    gate.row(
        f"{tag} reference: largest cosine of two clips' embeddings",
        probes.pairwise_max_cosine(ref_a),
        probes.DISTINCT_COSINE,
        "(distinct clips must give distinct embeddings)",
    )
    model = load_pth(ref_dir / f"CLAP_weights_{version}.pth", version)
    apply_mutation(model, mutation)
    waves = windows(model, ref, mutation)
    gate.row(
        f"{tag} window cut from the clips max|d|",
        float(np.abs(waves - ref["waveforms"]).max()),
        0.0,
        "(tile / centre crop, vs msclap's load_audio_into_tensor)",
    )
    mel, audio, text = embed(model, ref, waves, fft=False)
    gate.row(f"{tag} text max|de|", float(np.abs(text - ref_t).max()), TOL)
    gate.row(f"{tag} text max|1-cos|", float(np.abs(1 - (text * ref_t).sum(-1)).max()), TOL)
    gate.row(f"{tag} log-mel, conv STFT max|dB|", float(np.abs(mel - ref_mel).max()), 1e-3)
    embedding_rows(gate, f"{tag} conv STFT", audio, text, ref_a, ref_t, {"de": TOL, "1-cos": TOL, "dcos": TOL})
    mel, audio, _ = embed(model, ref, waves, fft=True)
    gate.row(f"{tag} log-mel, FFT STFT (shipped) max|dB|", float(np.abs(mel - ref_mel).max()), FFT_BOUND["dB"])
    embedding_rows(gate, f"{tag} FFT STFT (shipped)", audio, text, ref_a, ref_t, FFT_BOUND)
    model = front_end_rows(gate, version, model)
    _, audio, _ = embed(model, ref, waves, fft=False)
    embedding_rows(
        gate, f"{tag} own front end, conv STFT", audio, text, ref_a, ref_t, {"de": TOL, "1-cos": TOL, "dcos": TOL}
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ref_dir", type=Path)
    p.add_argument("--versions", nargs="+", default=["2022", "2023"])
    a = p.parse_args()
    mutation = probes.mutation()
    if mutation:
        print(f"mutation injected into humanclap's side: {mutation} (this run must FAIL)")
    gate = probes.Gate()
    for version in a.versions:
        compare(gate, a.ref_dir, version, mutation)
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())
