"""The one configuration of a fine-tuning run: :class:`TrainConfig`.

Every field says *why* it exists (its ``help``, also shown by ``humanclap train --help``);
every field is a CLI flag (``--batch-size`` for ``batch_size``) and a key of the YAML /
JSON config files in ``humanclap/configs/``. Precedence: defaults < ``--config FILE`` <
flags given on the command line.

What the paper fixes and what it does not: see the header of ``humanclap/configs/wsce_mae.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import re
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from humanclap.errors import ConfigError

TRAIN_PARAMS = ("all", "audio", "text", "projections", "lora", "head")
TARGETS = ("mean", "listener-z")
PRECISIONS = ("auto", "fp32", "bf16")
CONFIG_DIR = Path(__file__).parent.parent / "configs"
# A config is a few dozen short lines; anything near this is not one (and is not read).
MAX_CONFIG_BYTES = 1 << 20
# A decimal number written as a string: YAML 1.1 (PyYAML) reads ``1e-3`` without a dot as
# the *string* "1e-3", so a float field takes such a string as the number it spells.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _f(default: Any, why: str, **kw) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": why, **kw})
    return field(default=default, metadata={"help": why, **kw})


@dataclass
class TrainConfig:
    """Everything that decides a fine-tuning run (see the module docstring)."""

    # -- data and model --------------------------------------------------------------
    model: str = _f(
        "laion/clap-htsat-fused",
        "base checkpoint (hub id or folder); the official "
        "Human-CLAP checkpoints ship LAION's fused-model preprocessing (see configs/wsce_mae.yaml); "
        "MS CLAP: msclap-2022, msclap-2023, an msclap .pth or an MS CLAP folder",
    )
    revision: str | None = _f(None, "hub revision of --model, to pin the exact base weights")
    data: str = _f("", "rated pairs: relate:DIR, xacle:DIR or a .csv/.jsonl manifest (audio,text,score,split)")
    audio_root: str | None = _f(None, "where the dataset's audio files are, if not where the dataset says")
    output_dir: str = _f("", "Hugging Face model folder to write (model, tokenizer, extractor, config, metrics)")
    train_split: str = _f("train", "split the model learns from")
    val_split: str = _f("validation", "split that picks the best epoch and stops early; never trained on")
    test_split: str | None = _f("test", "split scored with the best model, for the report only (skipped if absent)")
    # -- objective -------------------------------------------------------------------
    loss: str = _f(
        "wsce+mae",
        "'+'-joined terms from wsce, mae, mse, pairwise, listnet, clipped-mse, each "
        "optionally weighted inline (wsce+mae+0.5*pairwise); the paper's best is wsce+mae",
    )
    loss_weights: str = _f("", "comma-separated weight per loss term, e.g. '1,1'; empty = every term weighs 1")
    clip_score: bool = _f(
        True,
        "regress max(cos,0) as the paper does; off regresses the raw cosine so "
        "pairs with negative cosine still get a gradient",
    )
    wsce_normalize: str = _f(
        "n", "divide wSCE by the batch size 'n' (paper) or by the sum of scores 'weights'", choices=("n", "weights")
    )
    temperature: str = _f(
        "model",
        "'model' uses the checkpoint's learned 1/tau (exp(logit_scale_a), which LAION "
        "trained for both directions); a number such as 0.07 fixes tau",
        number_ok=True,
    )
    train_logit_scale: bool = _f(False, "also learn the model's logit scale (only with wsce and temperature=model)")
    mask_shared: bool = _f(
        True,
        "drop in-batch 'negatives' that share the text or the audio of the positive: "
        "rated datasets pair each text with several audios",
    )
    # -- training targets and ranking terms (evaluation always uses the raw mean scores) --
    targets: str = _f(
        "mean",
        "what the training split learns: 'mean' human score per pair, or 'listener-z': "
        "each listener's ratings z-scored (removes personal bias and spread), mapped back "
        "to the training panel's mean and std, averaged per pair",
        choices=TARGETS,
    )
    min_listener_ratings: int = _f(
        5,
        "listener-z: listeners with fewer training ratings keep their raw "
        "scores (a mean and std of a handful of ratings are noise)",
    )
    screen_listeners: float | None = _f(
        None,
        "drop training listeners whose SRCC with the leave-one-out "
        "mean of the others on shared pairs is below this (e.g. 0.0); "
        "metrics.json lists them",
        type=float,
    )
    pairwise_margin: float = _f(
        0.05,
        "pairwise: CLAPScore gap wanted between a higher- and a lower-rated "
        "pair (the XACLE 2027 baseline's 0.1 on its -1..1 scale)",
    )
    pairwise_delta: float = _f(0.0, "pairwise: only pairs whose targets differ by more than this are ranked")
    listnet_temperature: float = _f(
        0.5, "listnet: softmax temperature T of targets and CLAPScores (TMU's T=1 on its -1..1 scale)"
    )
    clipped_mse_tau: float = _f(
        0.125, "clipped-mse: errors within +-tau cost nothing (the XACLE 2027 baseline's 0.25 on its -1..1 scale)"
    )
    # -- what to train ---------------------------------------------------------------
    train_params: str = _f(
        "all",
        "all | audio (tower+projection) | text (tower+projection) | projections | "
        "lora (adapters on both towers' attention + projections) | head (model frozen "
        "and cached; a small MLP on [e_a, e_t, e_a*e_t, cos] learns the score)",
        choices=TRAIN_PARAMS,
    )
    head_hidden: int = _f(256, "train_params head: hidden width of the score head's MLP (2 layers)")
    head_dropout: float = _f(0.1, "train_params head: dropout between the head's two layers (off with --no-dropout)")
    lora_rank: int = _f(8, "LoRA rank: capacity of the adapters")
    lora_alpha: int = _f(16, "LoRA scaling numerator (scale = alpha / rank)")
    lora_dropout: float = _f(0.0, "dropout inside the LoRA adapters")
    lora_targets: list = _f(
        ["query", "key", "value"],
        "module names that get LoRA adapters; the default means "
        "each family's attention projections: RoBERTa and HTSAT query,key,value (LAION), "
        "GPT-2 c_attn + HTS-AT qkv (MS CLAP 2023), BERT query,key,value + CNN14 fc1 (MS CLAP 2022)",
    )
    dropout: bool = _f(
        True,
        "keep dropout/drop-path active in trained towers (and in MS CLAP's trained "
        "projections, which msclap trained with dropout); off makes a step depend on the "
        "data only (bit-comparable runs across process counts). BatchNorm always uses its "
        "running statistics so outputs never depend on the batch",
    )
    # -- optimisation ----------------------------------------------------------------
    epochs: int = _f(10, "passes over the training split (early stopping may end sooner)")
    batch_size: int = _f(
        32,
        "GLOBAL batch: pairs per optimizer step over all processes; wSCE's negatives "
        "come from it, so keep it when changing the number of GPUs",
    )
    lr: float = _f(1e-5, "peak AdamW learning rate; small because a pretrained CLAP is adjusted, not relearned")
    weight_decay: float = _f(0.01, "AdamW decoupled weight decay on matrices (not on biases, norms, scales)")
    adam_beta1: float = _f(0.9, "AdamW beta1: momentum of the gradient average (PyTorch default)")
    adam_beta2: float = _f(0.999, "AdamW beta2: memory of the squared-gradient average (PyTorch default)")
    adam_eps: float = _f(1e-8, "AdamW epsilon: keeps steps finite where gradients vanish")
    warmup_ratio: float = _f(
        0.05,
        "fraction of all steps with a linear warm-up: protects pretrained weights from the first, noisy Adam steps",
    )
    min_lr_ratio: float = _f(0.0, "cosine decay ends at lr * min_lr_ratio")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm (0 = off); guards against rare spikes")
    patience: int = _f(3, "stop after this many epochs without a better validation SRCC (0 = never stop early)")
    seed: int = _f(0, "seeds shuffling, dropout and LoRA init; the same seed gives the same model")
    # -- runtime ---------------------------------------------------------------------
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps; under torchrun each process uses cuda:LOCAL_RANK")
    precision: str = _f(
        "auto", "auto = bf16 autocast on CUDA GPUs that support it, else fp32 (CPU, MPS)", choices=PRECISIONS
    )
    eval_batch_size: int = _f(32, "items per forward pass when embedding validation/test data")
    cache_encoders: bool = _f(
        True,
        "with a frozen tower (train_params projections/audio/text), compute its "
        "outputs once and reuse them every epoch: same model, far faster",
    )
    progress: bool | None = _f(None, "per-epoch progress bar (default: only when stderr is a terminal)")
    resume: bool = _f(False, "continue from output_dir/checkpoints/last; gives the same model as an uninterrupted run")

    # -- validation and (de)serialisation ---------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ConfigError on values that cannot work; returns self.

        Remembers the values it passed and the parsed loss terms (:attr:`loss_terms`), so
        the layers below the first check (``fine_tune``, ``Trainer``, the loss) neither check
        nor parse again while the values stay as they were (see :meth:`validated_copy`)."""
        # lazy: losses imports torch; `humanclap train --help` imports this module
        # lazy: keeps torch out of `humanclap --help`
        from humanclap.training import losses

        self.check_types()
        if not self.data:
            raise ConfigError("no dataset: pass --data relate:DIR, xacle:DIR or a manifest .csv/.jsonl")
        if not self.output_dir:
            raise ConfigError("no output folder: pass --output-dir DIR")
        try:
            terms = losses.parse_loss_spec(self.loss, self.loss_weights or None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name, low in (
            ("epochs", 1),
            ("batch_size", 2),
            ("eval_batch_size", 1),
            ("lora_rank", 1),
            ("lora_alpha", 1),
        ):
            if int(getattr(self, name)) < low:
                raise ConfigError(
                    f"{name} must be >= {low}, got {getattr(self, name)}"
                    + (" (wSCE needs at least 2 pairs per batch)" if name == "batch_size" else "")
                )
        self.check_splits()
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("warmup_ratio must be in [0, 1) and min_lr_ratio in [0, 1]")
        if self.patience < 0 or self.max_grad_norm < 0:
            raise ConfigError("patience and max_grad_norm must be >= 0")
        self.check_ranges()
        for name in ("train_params", "precision", "wsce_normalize"):
            allowed = next(f for f in fields(self) if f.name == name).metadata["choices"]
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        self.tau()  # parses temperature
        self.check_targets_and_ranking()
        if self.train_logit_scale and ("wsce" not in terms or self.temperature != "model"):
            raise ConfigError("train_logit_scale needs a wsce loss term and temperature=model")
        self._passed = (self.to_dict(), terms)
        return self

    def is_validated(self) -> bool:
        """:meth:`validate` passed on exactly the values the fields hold now."""
        passed = getattr(self, "_passed", None)
        return passed is not None and passed[0] == self.to_dict()

    def validated_copy(self) -> TrainConfig:
        """An independent copy, validated: a run keeps its own (the caller may change theirs).
        A config :meth:`validate` passed and nobody changed since is not checked again."""
        if not self.is_validated():
            return TrainConfig.from_dict(self.to_dict()).validate()
        copy = TrainConfig(**self.to_dict())  # to_dict copies the lists
        copy._passed = self._passed
        return copy

    @property
    def loss_terms(self) -> dict[str, float]:
        """``{term: weight}`` of ``loss`` and ``loss_weights``, as :meth:`validate` parsed
        them (validating first when the values changed since, or were never checked)."""
        if not self.is_validated():
            self.validate()
        return dict(self._passed[1])

    def check_types(self) -> None:
        """Every field holds a value of its declared type (see :func:`typed_value`), converted
        in place where the conversion is deliberate (an int for a float, "1e-3" for a float,
        a comma-separated string for a list); ConfigError naming the field otherwise."""
        for f in fields(self):
            setattr(self, f.name, typed_value(f, getattr(self, f.name)))

    def check_ranges(self) -> None:
        """Optimizer and adapter settings outside the range where they mean anything: a beta
        of 1 never forgets, above 1 diverges; a dropout of 1 drops everything."""
        for name in ("adam_beta1", "adam_beta2", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.adam_eps > 0:
            raise ConfigError(f"adam_eps must be > 0, got {self.adam_eps} (the default is 1e-8)")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def check_targets_and_ranking(self) -> None:
        """The training-target and ranking-term fields (see their help)."""
        if self.targets not in TARGETS:
            raise ConfigError(f"targets must be one of {list(TARGETS)}, got {self.targets!r}")
        if int(self.min_listener_ratings) < 2:
            raise ConfigError(
                f"min_listener_ratings must be >= 2 (a std needs two ratings), got {self.min_listener_ratings}"
            )
        if self.screen_listeners is not None:
            try:
                self.screen_listeners = float(self.screen_listeners)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"screen_listeners must be a correlation in [-1, 1], got {self.screen_listeners!r}"
                ) from None
            if not -1 <= self.screen_listeners <= 1:
                raise ConfigError(f"screen_listeners is an SRCC threshold in [-1, 1], got {self.screen_listeners}")
        for name, positive in (
            ("pairwise_margin", False),
            ("pairwise_delta", False),
            ("listnet_temperature", True),
            ("clipped_mse_tau", False),
        ):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value}")

    def check_splits(self) -> None:
        """The validation and test splits must not be the training split: a model picked
        (or reported) on pairs it was trained on looks better than it is, silently."""
        if not self.train_split:
            raise ConfigError("--train-split is empty: name the split to train on (e.g. train)")
        for name, value in (("val", self.val_split), ("test", self.test_split)):
            if value and value == self.train_split:
                raise ConfigError(
                    f"--{name}-split {value!r} is also --train-split: the {name} split must be "
                    f"pairs the model never trains on. Pass another --{name}-split, or "
                    f"--{name}-split '' to run without one"
                    + (" (the last epoch is then kept)." if name == "val" else ".")
                )

    def tau(self) -> float | None:
        """The fixed temperature, or None when the model's logit scale is used."""
        if str(self.temperature).strip().lower() == "model":
            return None
        try:
            tau = float(self.temperature)
        except ValueError:
            raise ConfigError(f"temperature must be 'model' or a number like 0.07, got {self.temperature!r}") from None
        if not tau > 0:
            raise ConfigError(f"temperature must be > 0, got {tau}")
        return tau

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write as JSON (``.json``) or YAML (anything else)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n")
        else:
            # lazy: keeps yaml out of `humanclap --help`
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        cfg = cls(**data)
        cfg.check_types()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML or JSON file; a bare name like ``wsce_mae`` means a shipped config.

        Refused: files over ``MAX_CONFIG_BYTES``, YAML aliases (an alias bomb expands to
        billions of items from a few lines), unknown keys and values of the wrong type."""
        path = resolve_config_path(path)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, which no training config "
                "is; pass the YAML/JSON file of TrainConfig keys"
            )
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else _load_yaml(text, path)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` without aliases: a config never needs them, and a few nested
    aliases expand to 10**9 items the moment anything walks the value."""
    # lazy: keeps yaml out of `humanclap --help`
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{path}, line {mark.line + 1}: YAML aliases (*name) are not accepted in a "
                    "training config; write the value out"
                )
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)


def _shown(value: Any) -> str:
    """A value and its type as a YAML user knows them: "string '10'", "boolean True", "null"."""
    if value is None:
        return "null"
    kind = {bool: "boolean", str: "string"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r:.80}"


def typed_value(f: Field, value: Any) -> Any:
    """``value`` checked against field ``f``'s declared type (``int``, ``float``, ``bool``,
    ``str``, ``list``, each maybe ``| None``); ConfigError naming the field otherwise."""
    kind = str(f.type).replace(" ", "")
    if value is None and kind.endswith("|None"):
        return None
    kind = kind.removesuffix("|None")
    if kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind == "float":
        return _float_value(f.name, value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if (
        kind == "str"
        and f.metadata.get("number_ok")
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
    ):
        return str(value)  # temperature: 0.07 in a YAML file is the number it fixes
    if kind == "list":
        return _list_value(f.name, value)
    wanted = {"int": "a whole number (int)", "bool": "true or false (bool)", "str": "a string (str)"}[kind]
    raise ConfigError(f"{f.name} must be {wanted}, got {_shown(value)}; see humanclap train --help")


def _float_value(name: str, value: Any) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number (float), got {_shown(value)}; write e.g. {name}: 0.5")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    return float(value)


def _list_value(name: str, value: Any) -> list:
    if isinstance(value, str):  # --lora-targets query,value
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{name} must be a list of strings (or one comma-separated string), got {_shown(value)}")


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        return p
    shipped = CONFIG_DIR / f"{Path(str(path)).stem}.yaml"
    if shipped.is_file() and p.parent == Path("."):
        return shipped
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file {path} not found; pass a YAML/JSON path or a shipped config: {names}")


# -- CLI mapping: one flag per field ---------------------------------------------------


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per TrainConfig field, default None (= not given, keep file/default)."""
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = ",".join(default) if isinstance(default, list) else default
        helptext = f.metadata["help"] + ("" if shown in ("", None) else f" (default: {shown})")
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": helptext}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
            parser.add_argument(flag(f.name), **kw)
        elif "type" in f.metadata:  # an optional number (default None = off)
            parser.add_argument(flag(f.name), type=f.metadata["type"], metavar="X", **kw)
        elif isinstance(default, bool) or f.name == "progress":
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, int):
            parser.add_argument(flag(f.name), type=int, metavar="N", **kw)
        elif isinstance(default, float):
            parser.add_argument(flag(f.name), type=float, metavar="X", **kw)
        elif isinstance(default, list):
            parser.add_argument(flag(f.name), metavar="A,B", **kw)
        else:
            parser.add_argument(flag(f.name), metavar=f.name.upper().replace("_", "-"), **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``args.config`` file < flags that were given."""
    cfg = TrainConfig.load(args.config) if getattr(args, "config", None) else TrainConfig()
    data = cfg.to_dict()
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    return TrainConfig.from_dict(data)
