"""What a model family is, in one table: every command looks a family up here.

A family is one package in ``scoring/`` (its scorer, loading, preprocessing) plus one
:class:`Family` entry in :data:`FAMILIES` plus its training towers. The entry says

* how a model spec is recognised: exact names (``ids``), a file suffix (``suffixes``), the
  ``model_type`` of a folder's ``config.json`` (``model_types``), a hub id prefix
  (``hub_prefixes``); a spec that matches no entry belongs to the ``fallback`` family;
* how it loads: ``scorer`` (``"module:Class"``, whose ``from_pretrained(spec, device=, dtype=,
  **options)`` builds it) and the loader options it takes (``options``: ``load_scorer``
  keyword -> ``from_pretrained`` keyword; any other given option is a ``UsageError``);
* the cheap pre-check that ``evaluate``, ``train`` and ``reproduce`` run before any audio is
  decoded (:func:`precheck`: local paths only, stat and ``config.json``, no torch);
* what decoder worker processes need (``featurizer``: ``"module:function"`` of a loaded
  scorer -> a picklable ``path -> (features, is_longer)``; None: decoding stays in-process);
* its training towers (``towers``: ``"module:Class"`` in ``humanclap.training.towers``,
  imported only by training, so scoring never imports training) and the model classes they
  apply to (``model_classes``, matched by name along the class's MRO);
* its export: what a fine-tuned model is written as (``export``) and the ``model_type`` its
  ``config.json`` then says (``export_model_type``; recognised again by this table).

Stdlib only: recognising a spec and the pre-check answer before torch loads.
"""

from __future__ import annotations

import importlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from humanclap.errors import ModelLoadError, UsageError
from humanclap.scoring.hub import is_local_path

__all__ = [
    "FAMILIES",
    "Family",
    "family_named",
    "family_of_model",
    "family_of_scorer",
    "family_of_spec",
    "folder_model_type",
    "precheck",
    "spec_forms",
]


def _resolve(path: str) -> Any:
    """``"package.module:Name"`` -> the object (imported on first use)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    """One model family (see the module docstring for each field)."""

    name: str  # "laion", "msclap", "pe_audio": the family's name in protocols and outputs
    title: str  # how messages name it
    package: str  # the family's package in scoring/
    forms: str  # the model specs it takes, in words (error messages, --help)
    scorer: str  # "module:Class" with from_pretrained(spec, device=, dtype=, **options)
    model_classes: tuple[str, ...]  # the loaded model's class names (training, towers)
    towers: str  # "module:Class" of its training towers
    export: str  # what a fine-tuned model is written as
    export_model_type: str  # the config.json model_type of that export
    ids: tuple[str, ...] = ()  # exact spec names (msclap-2023)
    suffixes: tuple[str, ...] = ()  # a checkpoint file's suffix (.pth)
    model_types: tuple[str, ...] = ()  # a folder's config.json model_type
    hub_prefixes: tuple[str, ...] = ()  # hub ids that start so
    options: dict[str, str] = field(default_factory=dict)  # load_scorer keyword -> from_pretrained keyword
    featurizer: str | None = None  # "module:function" scorer -> picklable path -> (features, is_longer)
    fallback: bool = False  # takes every spec no other family recognises

    def scorer_class(self) -> type:
        return _resolve(self.scorer)

    def towers_class(self) -> type:
        return _resolve(self.towers)

    def featurizer_for(self, scorer: Any) -> Callable[[str], tuple[Any, bool]] | None:
        return None if self.featurizer is None else _resolve(self.featurizer)(scorer)

    def load(self, spec: str, device: str = "auto", dtype: str = "fp32", **options: Any):
        """The scorer of ``spec``; ``options`` (``load_scorer``'s keywords, None = not given)
        the family does not take are a UsageError."""
        given = {k: v for k, v in options.items() if v is not None}
        for key in given:
            if key not in self.options:
                raise UsageError(OPTION_REFUSALS[key].format(spec=spec, title=self.title))
        kwargs = {self.options[k]: v for k, v in given.items()}
        return self.scorer_class().from_pretrained(str(spec), device=device, dtype=dtype, **kwargs)


# load_scorer's options, and what a family that does not take one answers
OPTION_REFUSALS = {
    "revision": "--revision applies to Hugging Face hub checkpoints, not to {title} ({spec})",
    "msclap_version": (
        "--msclap-version and an MS CLAP tokenizer apply only to MS CLAP models "
        "(msclap-2022, msclap-2023, a .pth or an MS CLAP folder), not to {spec!r}"
    ),
}
OPTION_REFUSALS["tokenizer"] = OPTION_REFUSALS["msclap_version"]

FAMILIES: tuple[Family, ...] = (
    Family(
        name="msclap",
        title="MS CLAP",
        package="humanclap.scoring.msclap",
        forms="msclap-2022, msclap-2023, an msclap .pth or an MS CLAP folder",
        ids=("msclap-2022", "msclap-2023"),
        suffixes=(".pth",),
        model_types=("msclap",),
        scorer="humanclap.scoring.msclap.scorer:MSClapScorer",
        options={"msclap_version": "version", "tokenizer": "tokenizer"},
        featurizer=None,  # the log-mel front end is inside the model: workers would only decode
        model_classes=("MSClapModel",),
        towers="humanclap.training.towers:MSClapTowers",
        export="MSClapModel.save_pretrained (config.json, model.safetensors) + tokenizer",
        export_model_type="msclap",
    ),
    Family(
        name="pe_audio",
        title="PE-Audio",
        package="humanclap.scoring.pe_audio",
        forms="a PE-Audio folder (config.json model_type pe_audio) or a hub id under facebook/pe-av-*",
        model_types=("pe_audio", "pe_audio_video"),
        hub_prefixes=("facebook/pe-av-", "facebook/pe-a-frame-"),
        scorer="humanclap.scoring.pe_audio.scorer:PeAudioScorer",
        options={"revision": "revision"},
        featurizer=None,  # raw waveforms: nothing for a worker to compute beyond the decode
        model_classes=("PeAudioModel", "PeAudioFrameLevelModel"),
        towers="humanclap.training.towers:PeAudioTowers",
        export="save_pretrained of the model, tokenizer and PeAudioFeatureExtractor",
        export_model_type="pe_audio",
    ),
    Family(
        name="laion",
        title="transformers CLAP",
        package="humanclap.scoring.clap",
        forms="a hub id like 'laion/clap-htsat-unfused' or a folder written by save_pretrained",
        model_types=("clap",),
        fallback=True,
        scorer="humanclap.scoring.clap.scorer:CLAPScorer",
        options={"revision": "revision"},
        featurizer="humanclap.scoring.clap.workers:featurizer",
        model_classes=("ClapModel",),
        towers="humanclap.training.towers:ClapTowers",
        export="save_pretrained of the model, tokenizer and ClapFeatureExtractor",
        export_model_type="clap",
    ),
)


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no model family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


FALLBACK = next(f for f in FAMILIES if f.fallback)


def folder_model_type(folder: str | Path) -> str | None:
    """The ``model_type`` of ``folder/config.json``; None when there is none, it is no regular
    file (a FIFO is never opened: the loader refuses it) or it is not a JSON object."""
    path = Path(folder) / "config.json"
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def family_of_spec(spec: str | Path) -> Family:
    """The family of a model spec, from the spec alone (exact name, folder ``model_type``,
    file suffix, hub prefix, in that order); the fallback family when nothing matches."""
    s = str(spec)
    for family in FAMILIES:
        if s in family.ids:
            return family
    if Path(s).is_dir():
        model_type = folder_model_type(s)
        return next((f for f in FAMILIES if model_type in f.model_types), FALLBACK)
    for family in FAMILIES:
        if family.suffixes and s.endswith(family.suffixes):
            return family
    for family in FAMILIES:
        if family.hub_prefixes and s.startswith(family.hub_prefixes):
            return family
    return FALLBACK


def _class_names(obj: Any) -> list[str]:
    return [f"{c.__module__}:{c.__qualname__}" for c in type(obj).__mro__]


def family_of_scorer(scorer: Any) -> Family | None:
    """The family of a loaded scorer (its class or a base class is a family's ``scorer``; a
    wrapper such as the score head's ``HeadScorer`` answers for the ``embedding_scorer`` it
    wraps); None for a scorer of no family here (a user's own :class:`Scorer`)."""
    scorer = getattr(scorer, "embedding_scorer", scorer)
    names = _class_names(scorer)
    return next((f for name in names for f in FAMILIES if f.scorer == name), None)


def family_of_model(model: Any) -> Family | None:
    """The family of a loaded model (``ClapModel``, ``MSClapModel``, ``PeAudioModel`` ...)."""
    names = [c.__name__ for c in type(model).__mro__]
    return next((f for name in names for f in FAMILIES if name in f.model_classes), None)


def spec_forms(others_only: bool = False) -> str:
    """Every family's model specs, in words (for messages); ``others_only``: all but the
    fallback family's."""
    return "; ".join(f"{f.title}: {f.forms}" for f in FAMILIES if not (others_only and f.fallback))


def precheck(spec: str) -> Family:
    """Fail fast (``ModelLoadError``) on a local model spec that cannot be loaded, before any
    model is loaded or any audio decoded: a path that does not exist, a folder (or file) that
    is none of the families' checkpoints. Hub ids and names pass (whether they can be had is
    the loader's question). Returns the spec's family."""

    s = str(spec)
    family = family_of_spec(s)
    if s in family.ids or not is_local_path(s):
        return family
    path = Path(s)
    if family.suffixes and s.endswith(family.suffixes) and path.is_file():
        return family  # a checkpoint file of its family (the loader reads and checks it)
    if path.is_dir() and (path / "config.json").is_file():
        return family  # recognised by its model_type, or the fallback's loader says what is wrong
    what = "does not exist" if not path.exists() else "has no config.json"
    raise ModelLoadError(
        f"model {s!r} {what}: pass a checkpoint folder written by save_pretrained "
        "(config.json, model.safetensors, tokenizer, preprocessor_config.json) or a hub "
        f"id like 'laion/clap-htsat-unfused'; {spec_forms(others_only=True)}."
    )
