"""Reference embeddings from the msclap package itself (run in the isolated parity env).

    python parity/msclap_reference.py OUT_DIR [--versions 2022 2023] [--seed 0]

For each release: builds msclap's own ``CLAP`` (``msclap.models.clap``) with the release's
yml settings and *random* weights (nothing is downloaded), gives every tensor but the fixed
front end a random perturbation (Linear/conv biases and norm weights included), measures the
BatchNorm statistics on the probe audio, saves the weights as msclap does (``{"model":
state_dict}`` -> ``OUT_DIR/CLAP_weights_<v>.pth``), and writes to ``OUT_DIR/reference_<v>.npz``
the probe clips (``parity/probes.py``: tones, noise, silence, a chirp, clips shorter and
longer than the window), the window msclap's own ``load_audio_into_tensor`` makes of each,
token ids, and msclap's embeddings of them.

Harness-only replacements, nothing else of msclap is changed:
* ``msclap/__init__.py`` imports torchaudio (CLAPWrapper); the model modules do not. The
  package is registered without running its ``__init__`` and the model modules are
  imported from it; ``load_audio_into_tensor`` is taken from CLAPWrapper.py's source.
* its random crop of a long clip takes the middle start (humanclap's rule), see probes.MiddleChoice.
* msclap's text encoder calls ``AutoModel.from_pretrained('gpt2' | 'bert-base-uncased')``;
  here that builds the same architecture from its default config with random weights.
Inputs are token ids, not text (the real tokenizers cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import probes
import torch
import yaml
from probes import MiddleChoice, reference_function


def import_msclap_models():
    spec = importlib.util.find_spec("msclap")
    if spec is None:
        sys.exit("msclap is not installed in this environment (pip install --no-deps 'msclap==1.3.*')")
    pkg = types.ModuleType("msclap")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["msclap"] = pkg  # skip msclap/__init__.py (it imports torchaudio)
    import msclap.models.clap as clap_module
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    class OfflineAutoModel:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            if "gpt2" in name:
                return GPT2Model(GPT2Config())
            if "bert" in name:
                return BertModel(BertConfig())
            raise ValueError(f"no offline stand-in for {name}")

    clap_module.AutoModel = OfflineAutoModel
    return clap_module, Path(spec.submodule_search_locations[0])


FRONT_END = ("spectrogram_extractor", "logmel_extractor")  # fixed DFT kernels and mel filters: never perturbed


@torch.no_grad()
def perturb(clap, seed: int) -> None:
    """A random change to every tensor of the model but its fixed front end: weights, every
    Linear/conv bias (zero after msclap's init: a port that dropped one would pass), norm
    weights and biases (1 and 0: a swapped or missing norm would pass)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in clap.state_dict().items():
        if not t.is_floating_point() or any(f in name for f in FRONT_END) or name.endswith(("attn_mask", ".attn.bias")):
            continue
        scale = float(t.abs().mean())
        t.add_(torch.randn(t.shape, generator=g) * (0.2 * scale if scale > 0 else 0.05))


@torch.no_grad()
def measure_batch_norm(clap, waveforms: torch.Tensor) -> None:
    """BatchNorm running statistics measured on the probe audio (one pass, BatchNorm layers
    alone in train mode, cumulative average): random statistics of order 1 against dB-scale
    log-mels saturate CNN14 so that every clip gets the same embedding."""
    norms = [m for m in clap.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    clap.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    clap.audio_encoder(waveforms)
    clap.eval()


def build_reference(clap_module, root: Path, version: str, seed: int):
    args = yaml.safe_load((root / "configs" / f"config_{version}.yml").read_text())
    torch.manual_seed(seed)
    clap = clap_module.CLAP(
        audioenc_name=args["audioenc_name"],
        sample_rate=args["sampling_rate"],
        window_size=args["window_size"],
        hop_size=args["hop_size"],
        mel_bins=args["mel_bins"],
        fmin=args["fmin"],
        fmax=args["fmax"],
        classes_num=args["num_classes"],
        out_emb=args["out_emb"],
        text_model=args["text_model"],
        transformer_embed_dim=args["transformer_embed_dim"],
        d_proj=args["d_proj"],
    )
    perturb(clap, seed + 1)
    return clap.eval(), args


def msclap_window(root: Path, clip: np.ndarray, rate: int, duration: int) -> np.ndarray:
    """msclap's own ``CLAPWrapper.load_audio_into_tensor`` (tile and cut a short clip, crop a
    long one; the crop at the middle, see probes.MiddleChoice), on an array instead of a file."""

    class Reader:
        @staticmethod
        def read_audio(path, resample=False):
            return torch.from_numpy(clip), rate

    fn = reference_function(
        root / "CLAPWrapper.py", "load_audio_into_tensor", {"np": np, "torch": torch, "random": MiddleChoice}
    )
    return fn(Reader, None, duration).numpy()


def inputs(root: Path, args: dict, version: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rate, duration = args["sampling_rate"], args["duration"]
    probe = probes.clips(rate, duration * rate)
    waves = np.stack([msclap_window(root, c, rate, duration) for c in probe.values()])
    clip_arrays = {f"clip_{i}": c for i, c in enumerate(probe.values())}
    length = args["text_len"]
    ids = np.zeros((4, length), dtype=np.int64)
    for i, n in enumerate((5, 12, 30, length)):
        if version == "2023":  # GPT-2: words, then <|endoftext|>; pad '!' (0) after
            ids[i, : n - 1] = rng.integers(1, 50256, n - 1)
            ids[i, n - 1] = 50256
            if i == 2:
                ids[i, 7] = 0  # a '!' inside the text: msclap's pooling quirk
        else:  # BERT: [CLS] words [SEP], [PAD] = 0 after
            ids[i, :n] = np.concatenate([[101], rng.integers(1000, 30000, n - 2), [102]])
    mask = (np.arange(length)[None] < np.array([5, 12, 30, length])[:, None]).astype(np.int64)
    return {
        "waveforms": waves.astype(np.float32),
        "clip_names": np.array(list(probe)),
        "input_ids": ids,
        "attention_mask": mask,
        **clip_arrays,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--versions", nargs="+", default=["2022", "2023"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    clap_module, root = import_msclap_models()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for version in a.versions:
        clap, args = build_reference(clap_module, root, version, a.seed)
        x = inputs(root, args, version, a.seed)
        measure_batch_norm(clap, torch.from_numpy(x["waveforms"]))
        text = {"input_ids": torch.from_numpy(x["input_ids"]), "attention_mask": torch.from_numpy(x["attention_mask"])}
        if version == "2022":
            text["token_type_ids"] = torch.zeros_like(text["input_ids"])
        with torch.no_grad():
            text_emb = clap.caption_encoder(text).numpy()
            audio_emb = clap.audio_encoder(torch.from_numpy(x["waveforms"]))[0].numpy()
            tower = getattr(clap.audio_encoder.base, "htsat", clap.audio_encoder.base)
            log_mel = tower.logmel_extractor(tower.spectrogram_extractor(torch.from_numpy(x["waveforms"]))).numpy()
        torch.save({"model": clap.state_dict()}, a.out / f"CLAP_weights_{version}.pth")
        np.savez(a.out / f"reference_{version}.npz", text_emb=text_emb, audio_emb=audio_emb, log_mel=log_mel, **x)
        print(
            f"msclap {version}: {sum(p.numel() for p in clap.parameters()) / 1e6:.1f}M parameters, "
            f"audio {audio_emb.shape}, text {text_emb.shape} -> {a.out}; largest cosine between two clips' "
            f"embeddings {probes.pairwise_max_cosine(audio_emb):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
