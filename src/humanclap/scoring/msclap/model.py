"""MS CLAP (2022: CNN14 + BERT, 2023: HTS-AT + GPT-2) as a native ``nn.Module``.

:class:`MSClapModel` has msclap's ``CLAP`` module tree (``audio_encoder.base``,
``audio_encoder.projection``, ``caption_encoder.base``, ``caption_encoder.projection``,
``logit_scale``), so its state dict *is* msclap's checkpoint layout: an msclap ``.pth``
loads without renaming, and the folder humanclap writes (``config.json`` +
``model.safetensors``) holds the same keys. The text towers are ``transformers``
``BertModel`` / ``GPT2Model`` built from a config (never downloaded); the audio towers are
this package's :mod:`cnn14` and :mod:`htsat`.

Release settings (msclap's ``config_2022.yml`` / ``config_2023.yml`` and, for HTS-AT, its
``htsat`` config module, which msclap's HTS-AT reads instead of the yml):

============  =====================  ==========================================
              2022                   2023
============  =====================  ==========================================
audio tower   CNN14 (2048-d)         HTS-AT (768-d)
input         44.1 kHz, 5 s          44.1 kHz, 7 s
STFT          1024 window, 320 hop   1024 window, 320 hop
mel filters   64, 50-14000 Hz, sr    64, 50-14000 Hz built for **32 kHz** (msclap's
              44.1 kHz               htsat config), applied to 44.1 kHz bins
text tower    BERT base, CLS token   GPT-2, hidden state at the last non-pad token
tokens        100, padded            77, padded with '!' (id 0), text + ' <|endoftext|>'
projection    1024                   1024
============  =====================  ==========================================
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from humanclap.errors import ModelLoadError
from humanclap.scoring.checkpoint import check_float_weights, check_model_files, check_regular_file
from humanclap.scoring.msclap.checks import check_config
from humanclap.scoring.msclap.cnn14 import Cnn14
from humanclap.scoring.msclap.htsat import HTSATWrapper

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "msclap"


@dataclass(frozen=True)
class MSClapConfig:
    """Everything that fixes an MS CLAP network and its input (saved as ``config.json``)."""

    version: str = "2023"  # "2022" or "2023": the release the settings come from
    audio_encoder: str = "HTSAT"  # "Cnn14" (2022) or "HTSAT" (2023)
    sampling_rate: int = 44100  # Hz of the waveform the tower takes (both releases)
    duration: int = 7  # seconds of the input window (msclap's ``duration``)
    window_size: int = 1024  # STFT window = n_fft
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    # rate the mel filterbank is *built* for: 32000 in 2023 because msclap's HTS-AT takes
    # its front-end settings from its own htsat config module (AudioSet at 32 kHz)
    mel_sampling_rate: int = 32000
    classes_num: int = 527  # AudioSet head (kept for the checkpoint keys, not used)
    out_emb: int = 768  # audio tower output size
    cnn14_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    htsat: dict = field(default_factory=dict)  # HTSATSwinTransformer overrides (tiny models)
    text_model: str = "gpt2"  # "gpt2" or "bert": which transformers tower
    text_config: dict = field(default_factory=dict)  # GPT2Config / BertConfig overrides
    text_len: int = 77  # tokens each text is padded to (msclap's ``text_len``)
    tokenizer: str = "gpt2"  # hub id of the tokenizer msclap loads for this release
    transformer_embed_dim: int = 768
    d_proj: int = 1024

    @property
    def window_samples(self) -> int:
        return int(self.duration * self.sampling_rate)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cnn14_channels"] = list(self.cnn14_channels)
        return {"model_type": MODEL_TYPE, "architectures": ["MSClapModel"], **d}

    @classmethod
    def from_dict(cls, d: dict, source: str = "MS CLAP config") -> "MSClapConfig":
        """The config of a ``config.json`` / ``msclap_config``; ModelLoadError (naming ``source``)
        for another model type, unknown fields or sizes no working model has (``checks``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"model_type", "architectures"})
        if d.get("model_type") not in (None, MODEL_TYPE) or unknown:
            raise ModelLoadError(
                f"{source}: not an MS CLAP config (model_type {d.get('model_type')!r}, unknown "
                f"fields {unknown[:5]}); write it with MSClapModel.save_pretrained"
            )
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("cnn14_channels"), list):
            kw["cnn14_channels"] = tuple(kw["cnn14_channels"])
        config = cls(**kw)
        check_config(config, source)
        return config

    @classmethod
    def release(cls, version: str) -> "MSClapConfig":
        """The settings of an msclap release, ``"2022"`` or ``"2023"``."""
        if version == "2023":
            return cls()
        if version == "2022":
            return cls(
                version="2022",
                audio_encoder="Cnn14",
                duration=5,
                mel_sampling_rate=44100,
                out_emb=2048,
                text_model="bert",
                text_len=100,
                tokenizer="bert-base-uncased",
            )
        raise ModelLoadError(f"unknown MS CLAP version {version!r}; the releases are 2022 and 2023")

    @classmethod
    def tiny(cls, version: str) -> "MSClapConfig":
        """A few-hundred-kB random model of a release's architecture (tests, benchmarks)."""
        base = cls.release(version)
        text = {
            "vocab_size": 300,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
        }
        if base.text_model == "gpt2":
            text = {"vocab_size": 300, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128}
        htsat = {"spec_size": 64, "embed_dim": 8, "depths": [2, 2], "num_heads": [2, 4], "window": 4}
        # CNN14 halves the mel axis five times (>= 32 bins); HTS-AT folds 4 x 16 bins into 64
        return dataclasses.replace(
            base,
            duration=1,
            mel_bins=16 if version == "2023" else 32,
            cnn14_channels=(4, 4, 8, 8, 16, 16),
            out_emb=16,
            htsat=htsat if version == "2023" else {},
            text_config=text,
            transformer_embed_dim=32,
            d_proj=16,
            classes_num=5,
        )


class Projection(nn.Module):
    """msclap's projection head: LayerNorm(l1(x) + dropout(l2(gelu(l1(x)))))."""

    def __init__(self, d_in: int, d_out: int, p: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.drop(self.linear2(F.gelu(e1))))


class AudioEncoder(nn.Module):
    def __init__(self, cfg: MSClapConfig):
        super().__init__()
        front = dict(
            sampling_rate=cfg.mel_sampling_rate,
            window_size=cfg.window_size,
            hop_size=cfg.hop_size,
            mel_bins=cfg.mel_bins,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
            classes_num=cfg.classes_num,
        )
        if cfg.audio_encoder == "Cnn14":
            self.base = Cnn14(**front, out_emb=cfg.out_emb, channels=tuple(cfg.cnn14_channels))
        elif cfg.audio_encoder == "HTSAT":
            self.base = HTSATWrapper(**front, **cfg.htsat)
        else:
            raise ModelLoadError(f"unknown MS CLAP audio encoder {cfg.audio_encoder!r}; expected Cnn14 or HTSAT")
        self.projection = Projection(cfg.out_emb, cfg.d_proj)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.projection(self.base(waveform)["embedding"])


class TextEncoder(nn.Module):
    def __init__(self, cfg: MSClapConfig):
        super().__init__()
        self.kind = cfg.text_model
        if cfg.text_model == "gpt2":
            # lazy: keeps transformers out of `import humanclap.scoring.msclap.model`
            from transformers import GPT2Config, GPT2Model

            self.base = GPT2Model(GPT2Config(**cfg.text_config))
        elif cfg.text_model == "bert":
            # lazy: keeps transformers out of `import humanclap.scoring.msclap.model`
            from transformers import BertConfig, BertModel

            self.base = BertModel(BertConfig(**cfg.text_config))
        else:
            raise ModelLoadError(f"unknown MS CLAP text model {cfg.text_model!r}; expected gpt2 or bert")
        self.projection = Projection(cfg.transformer_embed_dim, cfg.d_proj)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask)[0]
        if self.kind == "gpt2":
            # msclap's rule, kept as is: the last position whose id is not 0. GPT-2's pad
            # token is '!' (id 0), so a '!' inside a text also counts as padding and moves
            # the pooled position left by one per '!'.
            last = torch.ne(input_ids, 0).sum(-1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return hidden[:, 0, :]  # BERT: the [CLS] token

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pooled(input_ids, attention_mask))


class MSClapModel(nn.Module):
    """MS CLAP with the two methods humanclap's scorer and trainer call.

    ``get_audio_features(input_features=waveforms)`` takes raw ``(batch, window_samples)``
    waveforms at 44.1 kHz (the front end is inside the tower, as in msclap);
    ``get_text_features(input_ids, attention_mask)`` msclap's token ids. Both return the
    un-normalised projection (msclap's embeddings); CLAPScore normalises them.
    """

    def __init__(self, config: MSClapConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = AudioEncoder(config)
        self.caption_encoder = TextEncoder(config)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def get_audio_features(self, input_features: torch.Tensor, is_longer: Any = None) -> torch.Tensor:
        return self.audio_encoder(input_features)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.caption_encoder(input_ids, attention_mask)

    # -- checkpoints -----------------------------------------------------------------
    def load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a state dict in msclap's layout; any missing or unexpected key is a ModelLoadError."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ModelLoadError(
                f"{source} does not match MS CLAP {self.config.version} "
                f"({self.config.audio_encoder} + {self.config.text_model}): "
                f"{_keys('missing', missing)}{'; ' if missing and unexpected else ''}"
                f"{_keys('unexpected', unexpected)}. Check the file (an msclap "
                "CLAP_weights_2022.pth or CLAP_weights_2023.pth) and the release it is "
                "loaded as"
            )
        bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ModelLoadError(
                f"{source}: {len(bad)} tensors have the wrong shape for MS CLAP "
                f"{self.config.version}, e.g. {bad[0]} {tuple(state[bad[0]].shape)} "
                f"(expected {tuple(own[bad[0]].shape)}); is it the other release?"
            )
        check_float_weights({k: (str(v.dtype), v.is_floating_point()) for k, v in state.items()}, own, source)
        self.load_state_dict(state, strict=True)

    def save_pretrained(self, folder: str | Path, safe_serialization: bool = True, **_: Any) -> None:
        """``config.json`` + ``model.safetensors`` (msclap's keys), loadable by :meth:`from_pretrained`."""

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MSClapModel":
        folder = Path(folder)
        check_model_files(folder)
        try:
            config = MSClapConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()), str(folder / CONFIG_NAME))
            state = load_file(str(folder / WEIGHTS_NAME))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ModelLoadError(f"could not read the MS CLAP checkpoint in {folder}: {exc}") from None
        model = empty_model(config, str(folder / CONFIG_NAME))
        model.load_checked(state, str(folder / WEIGHTS_NAME))
        return model.eval()


def empty_model(config: MSClapConfig, source: str = "MS CLAP config") -> MSClapModel:
    """An :class:`MSClapModel` whose weights are not drawn at random, for loading a
    checkpoint into at once (drawing 160 M random numbers took 5 s of every load).

    Uses transformers' own ``no_init_weights`` (what ``from_pretrained`` does): the
    ``torch.nn.init`` functions do nothing while the modules are built. Every parameter and
    persistent buffer is then overwritten by :meth:`MSClapModel.load_checked` (strict);
    the non-persistent buffers (STFT kernels, window, causal masks) are computed, not drawn.
    """
    try:
        # lazy: where no_init_weights lives depends on the transformers version
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        # lazy: where no_init_weights lives depends on the transformers version
        from transformers.modeling_utils import no_init_weights  # transformers 4.x
    try:
        with no_init_weights():
            return MSClapModel(config)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:
        # what check_config cannot foresee (an unknown HTS-AT or text-config setting, heads that
        # do not divide the width): the config, not a clip, is at fault
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(
            f"{source}: this MS CLAP config does not give a working model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); restore the config from the original "
            "checkpoint"
        ) from None


def is_msclap_folder(folder: str | Path) -> bool:
    """True when ``folder/config.json`` says ``model_type: msclap`` (never opens a FIFO or a
    device: such a config.json is False here and refused by the loader)."""
    try:
        check_regular_file(Path(folder) / CONFIG_NAME)
        return json.loads((Path(folder) / CONFIG_NAME).read_text()).get("model_type") == MODEL_TYPE
    except (ModelLoadError, OSError, ValueError, AttributeError):
        return False


def _keys(kind: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
    return f"{len(keys)} {kind} key(s): {', '.join(keys[:8])}{more}"
