"""Small random MS CLAP models offline (tests, benchmarks, parity): either as a humanclap
folder (``config.json`` + ``model.safetensors`` + tokenizer) or as an msclap-layout
``.pth`` with the tokenizer files beside it.

The tokenizers are trained with ``tokenizers`` in the shape of msclap's: a byte-level
BPE like GPT-2's (``'!'`` is id 0, ``<|endoftext|>`` the last id) for 2023, a WordPiece
like ``bert-base-uncased`` (``[PAD]`` is id 0) for 2022.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from humanclap.recipes.tiny import DEFAULT_CORPUS
from humanclap.scoring.msclap import MSClapConfig, MSClapModel, save_pth


def train_msclap_tokenizer(version: str, texts: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 300):
    """A tiny tokenizer of the kind the release uses (GPT-2 BPE for 2023, BERT WordPiece for 2022)."""
    texts = list(texts)
    with tempfile.TemporaryDirectory() as tmp:
        if version == "2022":
            from transformers import BertTokenizerFast

            # Written, not trained: the tokenizers WordPiece trainer breaks ties in a
            # different order in every process, so a trained vocabulary (and with it the
            # tiny model's every text embedding) changed from run to run. Whole words of
            # the corpus, then single characters and their '##' continuations, so that any
            # lower-case text still tokenizes.
            words = sorted({w for t in texts for w in t.lower().split()})
            chars = sorted(
                {c for t in texts for c in t.lower() if not c.isspace()}
                | set(string.ascii_lowercase + string.digits + string.punctuation)
            )
            vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
            vocab += [w for w in words if w not in vocab][: max(0, vocab_size - len(vocab))]
            Path(tmp, "vocab.txt").write_text("\n".join(vocab) + "\n")
            return BertTokenizerFast(f"{tmp}/vocab.txt", do_lower_case=True, model_max_length=512)
        from tokenizers import ByteLevelBPETokenizer
        from transformers import GPT2TokenizerFast

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=vocab_size - 1, min_frequency=1, special_tokens=[])
        bpe.save_model(tmp)
        vocab = json.loads(Path(tmp, "vocab.json").read_text())
        vocab["<|endoftext|>"] = len(vocab)  # last, as in GPT-2, so that '!' keeps id 0
        Path(tmp, "vocab.json").write_text(json.dumps(vocab))
        return GPT2TokenizerFast(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=1024)


def tiny_msclap(version: str, seed: int = 0, vocab_size: int | None = None) -> MSClapModel:
    """A random tiny MS CLAP of the release's architecture (eval mode)."""
    import dataclasses

    cfg = MSClapConfig.tiny(version)
    if vocab_size is not None:
        cfg = dataclasses.replace(cfg, text_config={**cfg.text_config, "vocab_size": vocab_size})
    torch.manual_seed(seed)
    model = MSClapModel(cfg).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as a trained model's
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model


def build_tiny_msclap(out_dir: str | Path, version: str = "2023", seed: int = 0, pth: bool = False) -> Path:
    """Write a tiny MS CLAP with its tokenizer to ``out_dir``; return the folder, or the
    ``.pth`` (msclap's layout, ``CLAP_weights_<version>.pth``) when ``pth``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_msclap_tokenizer(version)
    model = tiny_msclap(version, seed, vocab_size=len(tokenizer))
    tokenizer.save_pretrained(out)
    if pth:
        save_pth(model, out / f"CLAP_weights_{version}.pth")
        return out / f"CLAP_weights_{version}.pth"
    model.save_pretrained(out)
    return out
