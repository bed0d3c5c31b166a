"""Reference embeddings from the msclap package itself (run in the isolated parity env).

    python parity/msclap_reference.py OUT_DIR [--versions 2022 2023] [--seed 0]

For each release: builds msclap's own ``CLAP`` (``msclap.models.clap``) with the release's
yml settings and *random* weights (nothing is downloaded), perturbs its BatchNorm
statistics and norm weights so that no layer is an identity, saves the weights as msclap
does (``{"model": state_dict}`` -> ``OUT_DIR/CLAP_weights_<v>.pth``), and writes fixed
inputs (token ids, 44.1 kHz waveform arrays of the window length) with msclap's
embeddings of them to ``OUT_DIR/reference_<v>.npz``.

Harness-only replacements, nothing else of msclap is changed:
* ``msclap/__init__.py`` imports torchaudio (CLAPWrapper); the model modules do not. The
  package is registered without running its ``__init__`` and the model modules are
  imported from it.
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
import torch
import yaml


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


def build_reference(clap_module, root: Path, version: str, seed: int):
    args = yaml.safe_load((root / "configs" / f"config_{version}.yml").read_text())
    torch.manual_seed(seed)
    clap = clap_module.CLAP(
        audioenc_name=args["audioenc_name"], sample_rate=args["sampling_rate"], window_size=args["window_size"],
        hop_size=args["hop_size"], mel_bins=args["mel_bins"], fmin=args["fmin"], fmax=args["fmax"],
        classes_num=args["num_classes"], out_emb=args["out_emb"], text_model=args["text_model"],
        transformer_embed_dim=args["transformer_embed_dim"], d_proj=args["d_proj"])
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in clap.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return clap.eval(), args


def inputs(args: dict, version: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rate, window = args["sampling_rate"], args["duration"] * args["sampling_rate"]
    t = np.arange(window) / rate
    waves = np.stack([0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
                      + 0.05 * rng.standard_normal(window) for f in (220.0, 1800.0, 6500.0)]
                     + [0.5 * rng.standard_normal(window)]).astype(np.float32)
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
    return {"waveforms": waves, "input_ids": ids, "attention_mask": mask}


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
        x = inputs(args, version, a.seed)
        text = {"input_ids": torch.from_numpy(x["input_ids"]), "attention_mask": torch.from_numpy(x["attention_mask"])}
        if version == "2022":
            text["token_type_ids"] = torch.zeros_like(text["input_ids"])
        with torch.no_grad():
            text_emb = clap.caption_encoder(text).numpy()
            audio_emb = clap.audio_encoder(torch.from_numpy(x["waveforms"]))[0].numpy()
        torch.save({"model": clap.state_dict()}, a.out / f"CLAP_weights_{version}.pth")
        np.savez(a.out / f"reference_{version}.npz", text_emb=text_emb, audio_emb=audio_emb, **x)
        print(f"msclap {version}: {sum(p.numel() for p in clap.parameters()) / 1e6:.1f}M parameters, "
              f"audio {audio_emb.shape}, text {text_emb.shape} -> {a.out}", flush=True)


if __name__ == "__main__":
    main()
