"""Reference side of the LAION parity check: runs in the isolated env of make_env.sh.

    DIR/bin/python parity/laion_reference.py OUT_DIR

For HTSAT-tiny and HTSAT-base, fused and unfused, it builds laion_clap's own ``CLAP`` model with
random weights (seeded), saves it as a LAION training checkpoint (``{"epoch", "name",
"state_dict": {"module." + key: tensor}, ...}`` with the ``position_ids`` buffer and a numpy scalar,
as the released files have), and saves in ``OUT_DIR/<family>.npz`` the reference embeddings of
fixed inputs: text on token ids (no tokenizer: it would come from the Hub), audio on the
same log-mel arrays humanclap is given (the reference's torchlibrosa front end is bypassed, see
below). The one thing replaced is the Hub: ``RobertaModel.from_pretrained('roberta-base')``
returns a randomly initialised RobertaModel with roberta-base's config.

How laion_clap is imported: its package ``__init__`` files pull in training code, librosa
loading, wget and torchvision's image transforms; the harness imports the model modules
(``clap_module/model.py``, ``htsat.py``, ...) as a bare package, as ``hook.py`` itself does
(``from clap_module import ...`` with the folder on sys.path), and builds ``CLAP(**cfg)`` from
``model_configs/HTSAT-*.json`` exactly as ``factory.create_model`` does for a non-OpenAI model.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

FAMILIES = [("HTSAT-tiny", False), ("HTSAT-tiny", True), ("HTSAT-base", False), ("HTSAT-base", True)]
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
FRAMES, MELS, N_TEXT, N_AUDIO = 1001, 64, 3, 3  # 10 s at 48 kHz / hop 480 -> 1001 frames


def family_name(arch: str, fused: bool) -> str:
    return f"{arch}-{'fused' if fused else 'unfused'}"


def import_clap_module():
    """laion_clap's clap_module as a bare package: its model modules without the package __init__."""
    spec = importlib.util.find_spec("laion_clap")
    root = Path(next(iter(spec.submodule_search_locations))) / "clap_module"
    pkg = types.ModuleType("clap_module")
    pkg.__path__ = [str(root)]
    sys.modules["clap_module"] = pkg
    return importlib.import_module("clap_module.model"), root


def patch_hub(seed_box: list[int]) -> None:
    """The Hub is the one thing replaced: roberta-base becomes a seeded random RobertaModel."""
    import transformers

    def from_pretrained(cls, name, *args, **kwargs):
        assert name == "roberta-base", name
        torch.manual_seed(seed_box[0] + 1)
        return cls(transformers.RobertaConfig(**ROBERTA_BASE))

    transformers.RobertaModel.from_pretrained = classmethod(from_pretrained)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    """Make every tensor the converter maps informative: norms, biases and BN statistics too
    (a swapped LayerNorm with weight 1 and bias 0 would otherwise go unnoticed)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or "spectrogram_extractor" in name or "logmel_extractor" in name \
                or name.endswith("attn_mask"):
            continue
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        else:
            t.add_(0.05 * torch.randn(t.shape, generator=g))


def build(model_mod, root: Path, arch: str, fused: bool, seed: int):
    cfg = json.loads((root / "model_configs" / f"{arch}.json").read_text())
    cfg["text_cfg"]["model_type"] = "roberta"   # factory.create_model(amodel, tmodel='roberta', ...)
    cfg["enable_fusion"] = fused
    cfg["fusion_type"] = "aff_2d" if fused else "None"   # hook.CLAP_Module's choice for fusion
    torch.manual_seed(seed)
    model = model_mod.CLAP(**cfg)
    randomise(model, seed)
    return model.eval()


def inputs(seed: int, fused: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.ones((N_TEXT, 77), dtype=np.int64)          # <pad> = 1, padded to 77 as LAION does
    mask = np.zeros((N_TEXT, 77), dtype=np.int64)
    for i, n in enumerate([5, 12, 77]):                  # short, medium, full length
        ids[i, :n] = np.concatenate([[0], rng.integers(3, 50265, n - 2), [2]])  # <s> ... </s>
        mask[i, :n] = 1
    channels = 4 if fused else 1
    mel = (rng.standard_normal((N_AUDIO, channels, FRAMES, MELS)) * 8 - 40).astype(np.float32)  # log-mel-like dB
    longer = np.array([True, False, True]) if fused else np.zeros(N_AUDIO, dtype=bool)
    return {"input_ids": ids, "attention_mask": mask, "mel": mel, "longer": longer}


@torch.no_grad()
def reference_embeddings(model, x: dict[str, np.ndarray], fused: bool) -> tuple[np.ndarray, np.ndarray]:
    text = model.get_text_embedding({"input_ids": torch.from_numpy(x["input_ids"]),
                                     "attention_mask": torch.from_numpy(x["attention_mask"])})
    mel = torch.from_numpy(x["mel"])
    if fused:
        data = [{"mel_fusion": mel[i], "longer": torch.tensor(bool(x["longer"][i]))} for i in range(len(mel))]
    else:
        # The unfused reference takes a waveform and computes the log-mel with torchlibrosa;
        # humanclap takes ClapFeatureExtractor's log-mel. Compare the towers on the same mel:
        # the front end becomes the identity, the rest of HTSAT's forward runs unchanged.
        model.audio_branch.spectrogram_extractor = torch.nn.Identity()
        model.audio_branch.logmel_extractor = torch.nn.Identity()
        data = [{"waveform": mel[i]} for i in range(len(mel))]
    audio = model.get_audio_embedding(data)
    return text.numpy(), audio.numpy()


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_box = [0]
    patch_hub(seed_box)
    model_mod, root = import_clap_module()
    import transformers

    print(f"reference: laion_clap clap_module from {root}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, numpy {np.__version__}")
    for k, (arch, fused) in enumerate(FAMILIES):
        t0 = time.perf_counter()
        name = family_name(arch, fused)
        seed_box[0] = 100 + k
        model = build(model_mod, root, arch, fused, seed=100 + k)
        sd = {"module." + key: v for key, v in model.state_dict().items()}
        # released checkpoints were saved with transformers < 4.31, which kept this buffer
        sd.setdefault("module.text_branch.embeddings.position_ids", torch.arange(514).unsqueeze(0))
        torch.save({"epoch": 15, "name": name, "state_dict": sd, "best_metric": np.float64(0.9014)},
                   out / f"{name}.pt")
        t1 = time.perf_counter()
        x = inputs(seed=k, fused=fused)
        text, audio = reference_embeddings(model, x, fused)
        np.savez(out / f"{name}.npz", text_emb=text, audio_emb=audio, **x)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.1f}M parameters; build+save {t1 - t0:.1f} s, embed {time.perf_counter() - t1:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "parity-out/laion"))
