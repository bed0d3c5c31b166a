"""Reference side of the LAION parity check: runs in the isolated env of make_env.sh.

    DIR/bin/python parity/laion_reference.py OUT_DIR

For HTSAT-tiny and HTSAT-base, fused and unfused, it builds laion_clap's own ``CLAP`` model with
random weights (seeded), gives every tensor but the fixed front end a random perturbation
(biases and norm weights included), measures the BatchNorm statistics on the probe audio,
saves it as a LAION training checkpoint (``{"epoch", "name", "state_dict": {"module." + key:
tensor}, ...}`` with the ``position_ids`` buffer and a numpy scalar, as the released files
have), and saves in ``OUT_DIR/<family>.npz``: the probe clips (``parity/probes.py``), the model
input laion_clap's own preprocessing makes of each (``training/data.py``'s
``get_audio_features``, as ``hook.py`` calls it: unfused, the window and the log-mel of the
model's torchlibrosa front end; fused, ``mel_fusion`` from torchaudio's MelSpectrogram, and
``longer``), and the reference embeddings of those inputs and of fixed token ids (no tokenizer:
it would come from the Hub).

Harness-only replacements, nothing else of laion_clap is changed:
* the Hub: ``RobertaModel.from_pretrained('roberta-base')`` returns a randomly initialised
  RobertaModel with roberta-base's config;
* how laion_clap is imported: its package ``__init__`` files pull in training code, librosa
  loading, wget and torchvision's image transforms; the harness imports the model modules
  (``clap_module/model.py``, ``htsat.py``, ...) as a bare package, as ``hook.py`` itself does,
  builds ``CLAP(**cfg)`` as ``factory.create_model`` does for a non-OpenAI model, and runs
  ``get_mel`` / ``get_audio_features`` from data.py's source (``probes.reference_function``);
* their random choices (crop start, fusion chunks) take the middle, humanclap's rule
  (``probes.MiddleChoice``); the int16 round trip of ``hook.get_audio_embedding_from_data`` is
  not applied (humanclap does not quantize);
* torchaudio is 2.11's pure-Python code without its compiled extension (no torchaudio build
  loads against torch 2.13; MelSpectrogram and AmplitudeToDB never call it), and torchvision's
  ``Resize`` is its tensor path before torchvision 0.17 (bilinear, no antialias: what LAION
  trained with and what transformers' ClapFeatureExtractor does; torchvision >= 0.17 defaults to
  antialias=True).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import probes
import torch
import torch.nn.functional as F

FAMILIES = [("HTSAT-tiny", False), ("HTSAT-tiny", True), ("HTSAT-base", False), ("HTSAT-base", True)]
ROBERTA_BASE = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
N_TEXT = 3
FRONT_END = ("spectrogram_extractor", "logmel_extractor")  # fixed STFT kernels and mel filters


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
    """A random change to every tensor the converter maps: weights, every bias (qkv's are zero
    after init: a port ignoring them would pass), norm weights and biases (a swapped LayerNorm
    with weight 1 and bias 0 would otherwise go unnoticed). BatchNorm statistics are measured
    on audio afterwards (:func:`measure_batch_norm`)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point() or any(f in name for f in FRONT_END) or name.endswith("attn_mask"):
            continue
        scale = float(t.abs().mean())
        t.add_(torch.randn(t.shape, generator=g) * (0.2 * scale if scale > 0 else 0.05))


@torch.no_grad()
def measure_batch_norm(model, data: list[dict]) -> None:
    """BatchNorm running statistics from one pass over the probe inputs (BatchNorm layers alone
    in train mode, cumulative average): statistics of order 1 against dB-scale log-mels
    saturate ``bn0``, and every clip would get nearly the same embedding."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    model.get_audio_embedding([dict(d) for d in data])
    model.eval()


def build(model_mod, root: Path, arch: str, fused: bool, seed: int):
    cfg = json.loads((root / "model_configs" / f"{arch}.json").read_text())
    cfg["text_cfg"]["model_type"] = "roberta"  # factory.create_model(amodel, tmodel='roberta', ...)
    cfg["enable_fusion"] = fused
    cfg["fusion_type"] = "aff_2d" if fused else "None"  # hook.CLAP_Module's choice for fusion
    torch.manual_seed(seed)
    model = model_mod.CLAP(**cfg)
    randomise(model, seed)
    return model.eval(), cfg["audio_cfg"]


class Resize:
    """torchvision.transforms.Resize on a tensor before torchvision 0.17 (see the module docstring)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return F.interpolate(img[None], size=self.size, mode="bilinear", align_corners=False)[0]


def laion_preprocessing(root: Path):
    """data.py's ``get_audio_features`` (and the ``get_mel`` it calls), as hook.py runs it."""
    torchaudio_dir = Path(sys.prefix) / "torchaudio-py"  # make_env.sh puts it there
    sys.path.insert(0, str(torchaudio_dir))
    import torchaudio

    numpy = types.ModuleType("numpy_middle_choice")
    numpy.__dict__.update(np.__dict__)
    numpy.random = probes.MiddleChoice
    space = {
        "torch": torch,
        "np": numpy,
        "F": F,
        "torchaudio": torchaudio,
        "suppress": contextlib.suppress,
        "torchvision": types.SimpleNamespace(transforms=types.SimpleNamespace(Resize=Resize)),
    }
    data_py = root.parent / "training" / "data.py"
    probes.reference_function(data_py, "get_mel", space)
    return probes.reference_function(data_py, "get_audio_features", space)


def text_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.ones((N_TEXT, 77), dtype=np.int64)  # <pad> = 1, padded to 77 as LAION does
    mask = np.zeros((N_TEXT, 77), dtype=np.int64)
    for i, n in enumerate([5, 12, 77]):  # short, medium, full length
        ids[i, :n] = np.concatenate([[0], rng.integers(3, 50265, n - 2), [2]])  # <s> ... </s>
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def model_inputs(get_audio_features, model, audio_cfg: dict, fused: bool, clips: list[np.ndarray]):
    """Per clip: laion_clap's input dict, and the features humanclap must match (``(1, T, 64)``
    torchlibrosa log-mel of the window, unfused; ``(4, T, 64)`` mel_fusion, fused)."""
    data, feats = [], []
    for clip in clips:
        d = get_audio_features(
            {},
            torch.from_numpy(clip),
            audio_cfg["clip_samples"],
            "fusion" if fused else "rand_trunc",
            "repeatpad",
            audio_cfg,
        )
        data.append(d)
        if fused:
            feats.append(d["mel_fusion"].numpy())
        else:
            branch = model.audio_branch
            feats.append(branch.logmel_extractor(branch.spectrogram_extractor(d["waveform"][None]))[0].numpy())
    return data, np.stack(feats).astype(np.float32), np.array([bool(d["longer"]) for d in data])


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_box = [0]
    patch_hub(seed_box)
    model_mod, root = import_clap_module()
    import transformers

    print(
        f"reference: laion_clap clap_module from {root}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, numpy {np.__version__}"
    )
    get_audio_features = laion_preprocessing(root)
    for k, (arch, fused) in enumerate(FAMILIES):
        t0 = time.perf_counter()
        name = family_name(arch, fused)
        seed_box[0] = 100 + k
        model, audio_cfg = build(model_mod, root, arch, fused, seed=100 + k)
        probe = probes.clips(audio_cfg["sample_rate"], audio_cfg["clip_samples"])
        data, feats, longer = model_inputs(get_audio_features, model, audio_cfg, fused, list(probe.values()))
        measure_batch_norm(model, data)
        sd = {"module." + key: v for key, v in model.state_dict().items()}
        # released checkpoints were saved with transformers < 4.31, which kept this buffer
        sd.setdefault("module.text_branch.embeddings.position_ids", torch.arange(514).unsqueeze(0))
        torch.save({"epoch": 15, "name": name, "state_dict": sd, "best_metric": np.float64(0.9014)}, out / f"{name}.pt")
        t1 = time.perf_counter()
        x = text_inputs(seed=k)
        with torch.no_grad():
            text = model.get_text_embedding(
                {"input_ids": torch.from_numpy(x["input_ids"]), "attention_mask": torch.from_numpy(x["attention_mask"])}
            ).numpy()
            audio = model.get_audio_embedding(data).numpy()
        np.savez(
            out / f"{name}.npz",
            text_emb=text,
            audio_emb=audio,
            features=feats,
            longer=longer,
            clip_names=np.array(list(probe)),
            **{f"clip_{i}": c for i, c in enumerate(probe.values())},
            **x,
        )
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name}: {params / 1e6:.1f}M parameters; build+save {t1 - t0:.1f} s, "
            f"embed {time.perf_counter() - t1:.1f} s; "
            f"largest cosine between two clips' embeddings {probes.pairwise_max_cosine(audio):.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "parity-out/laion"))
