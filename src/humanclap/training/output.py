"""The output folder of a training run: what may be written there and what must not be,
and the run's result identity.

A run writes its model files, ``metrics*.json*``, ``training_config.json`` and
``checkpoints/`` into ``--output-dir``; these checks refuse, before anything is loaded,
a folder where that would destroy something the run did not write: the training
manifest, the base model (a folder, or the folder of an msclap ``.pth`` with its
tokenizer beside it), or another model's folder. Beyond them the output contract
(:mod:`humanclap.outputs`) holds: the folder must be new, empty, or hold an earlier
``train`` run (its marker); it is locked while the run writes it.

**Identity** (:func:`training_identity`): the base model (spec, revision = hash of its
weights, preprocessing), the data actually trained, validated and tested on (a fingerprint
per split of the resolved audio paths, texts, human scores and split names) and every
setting that changes the result. ``--resume`` continues only a run whose identity is
the same; the difference is named otherwise.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

from humanclap import __version__
from humanclap.errors import ConfigError
from humanclap.io import table_digest, write_json
from humanclap.outputs import MARKER, claim_folder, read_marker
from humanclap.scoring.loader import load_scorer
from humanclap.training.config import TrainConfig

# The command name in the output marker (humanclap.outputs.MARKER) of a training folder.
COMMAND = "train"
# Fields that may change between a run and its --resume without changing the result.
# (epochs and patience are not: they shape the learning-rate schedule and the stopping point.)
RESUME_FREE = {"resume", "progress", "device", "eval_batch_size", "cache_encoders", "audio_root", "output_dir"}
# Columns of a split's pairs that its fingerprint covers (the audio path resolved).
DATA_COLUMNS = ("audio", "text", "human", "split")

# A model's own files: an output folder holding them without a checkpoint is someone else's.
MODEL_FILES = ("config.json", "model.safetensors")
# What a run writes at the top of its output folder besides the model's own files (a
# manifest there under one of these names, or under checkpoints/, would be overwritten).
WRITTEN_NAMES = {
    "metrics.json",
    "metrics.jsonl",
    "training_config.json",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "vocab.txt",
    "score_head.safetensors",
    "score_head.json",
}


def check_output_dir(out: Path, data: str, create: bool = True, model: str | None = None) -> None:
    """Create the output folder (``create``), or raise ConfigError when it cannot be one (a
    file is in the way, no permission) or when writing it would overwrite the manifest read
    or the base model (``model``: a local folder, or a weights file and the folder it is in)."""
    base_path = Path(model).expanduser() if model is not None else None
    if base_path is not None and (base_path.is_dir() or base_path.is_file()):
        # The run publishes config.json/model.safetensors/tokenizer at the top of ``out`` and
        # rewrites checkpoints/*: the base model there would be replaced by the fine-tuned one
        # (for an msclap .pth, the tokenizer files beside it).
        base = (base_path if base_path.is_dir() else base_path.parent).resolve()
        root = out.resolve()
        if base == root or (root / "checkpoints") in (base, *base.parents):
            raise ConfigError(
                f"--output-dir {out} would overwrite the base model {model} (the run "
                "writes its model files and checkpoints there); choose another "
                "--output-dir"
            )
    manifest = Path(data).expanduser()
    if manifest.is_file():
        target, root = manifest.resolve(), out.resolve()
        if (target.parent == root and target.name in WRITTEN_NAMES) or (root / "checkpoints") in target.parents:
            raise ConfigError(
                f"--output-dir {out} would overwrite the training data {data} "
                "(the run writes its model, metrics and checkpoints there); "
                "choose another --output-dir or move the manifest"
            )
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--output-dir {out} is a file, not a folder: choose another --output-dir (it becomes a model folder)"
        )
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way of a parent, read-only place: the user's to fix
        raise ConfigError(
            f"cannot create the output folder {out}: {exc.strerror or exc}; pass another --output-dir"
        ) from None


def refuse_foreign_model(out: Path) -> None:
    """Raise ConfigError when ``out`` holds a model but no training checkpoint (call it only
    then): no run of ours left that (a run publishes its model only after its last
    checkpoint), so it is another model's folder, whose files the run would replace one by
    one and leave mixed with its own."""
    found = [n for n in MODEL_FILES if (out / n).exists()]
    if found:
        raise ConfigError(
            f"--output-dir {out} already holds a model ({', '.join(found)}) but no "
            "training checkpoint (checkpoints/last), so it is not a run to --resume; "
            "training would overwrite it. Choose an empty or new --output-dir"
        )


def _resolved(spec: str) -> str:
    """A local path resolved (so that ``./m`` and ``/abs/m`` are one model); a hub id or a
    ``relate:DIR``-style spec with its folder resolved; anything else as given."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in ("relate", "xacle") and rest:
        return f"{prefix}:{Path(rest).expanduser().resolve()}"
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def split_fingerprint(pairs) -> str:
    """sha256 of a split's pairs as trained on (``pairs``: a DataFrame with the columns of
    :data:`DATA_COLUMNS`): the audio path resolved, the text, the human score, the split."""

    rows = (
        {"audio": str(Path(a).resolve()), "text": t, "human": float(h), "split": s}
        for a, t, h, s in zip(pairs["audio"], pairs["text"], pairs["human"], pairs["split"])
    )
    return table_digest(DATA_COLUMNS, rows)


def training_identity(cfg, model_info, split_pairs: Mapping[str, Any], free: set[str] = frozenset()) -> dict[str, Any]:
    """The identity record of a training run (see the module docstring). ``split_pairs``:
    split name -> its pairs (DataFrame); ``free``: config fields that do not change the
    result (trainer.RESUME_FREE)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in free and k not in ("model", "revision", "data")}
    return {
        "model": {
            "spec": _resolved(cfg.model),
            "revision": model_info.revision,
            "preprocessing": asdict(model_info.preprocessing),
        },
        "data": {
            "spec": _resolved(cfg.data),
            "pairs": {name: len(p) for name, p in split_pairs.items()},
            "sha256": {name: split_fingerprint(p) for name, p in split_pairs.items()},
        },
        "settings": settings,
    }


def legacy_run(out: Path) -> bool:
    """Whether ``out`` is a training folder written by a humanclap older than the output
    contract (no marker): its ``checkpoints/last/trainer_state.json`` is a trainer state.
    ``--resume`` accepts such a folder and adopts it (its marker then lists the names a
    run writes that are there); without ``--resume`` it is refused like any other."""
    # lazy: keeps torch out of `import humanclap.training.output`
    from humanclap.training import checkpoints as ckpt

    last = ckpt.find_checkpoint(out, ckpt.LAST)
    if last is None:
        return False
    try:
        ckpt.read_training_state(last)
    except ConfigError:
        return False
    return True


def adopt_legacy(out: Path) -> None:
    """Write the marker of an earlier train run into a :func:`legacy_run` folder: it owns
    ``checkpoints`` and those of the names a run writes (:data:`WRITTEN_NAMES`) that are
    there; anything else in the folder stays foreign (the claim then refuses it)."""

    if read_marker(out) is not None:
        return
    files = ["checkpoints"] + sorted(n for n in WRITTEN_NAMES if (out / n).exists())
    write_json(
        out / MARKER,
        {"command": COMMAND, "humanclap_version": __version__, "identity": None, "files": files, "adopted": True},
    )


def claim_output(out: Path, resume: bool, stack: ExitStack, say: Callable[[str], None]):
    """Claim ``out`` for a train run (:func:`humanclap.outputs.claim_folder`, held until
    ``stack`` closes): new, empty or an earlier train run (an older humanclap's run is
    adopted with ``resume``, see :func:`legacy_run`); a name a run writes that is there but
    not the earlier run's is refused. Returns the RunFolder; raises ConfigError/UsageError."""

    if read_marker(out) is None and out.is_dir() and legacy_run(out):
        if not resume:
            raise ConfigError(
                f"--output-dir {out} holds a training run written by an older "
                "humanclap (checkpoints/last, no run marker); pass --resume to "
                "continue it, or choose another --output-dir"
            )
        adopt_legacy(out)
        say(
            f"--resume: adopting {out}, a training run written by an older humanclap (its "
            "checkpoint predates the identity record: only its settings are compared)"
        )
    run = stack.enter_context(claim_folder(out, COMMAND, error=ConfigError))
    foreign = sorted(n for n in [*WRITTEN_NAMES, "checkpoints"] if (out / n).exists() and n not in run.files)
    if foreign:
        raise ConfigError(
            f"--output-dir {out} holds {', '.join(foreign)}, which this training "
            "run did not write and would overwrite; move them away or choose "
            "another --output-dir"
        )
    return run


def planned_identity(config: TrainConfig) -> dict:
    """The identity record (:func:`~humanclap.training.output.training_identity`) a run of
    ``config`` would have, without training: loads the base model's description and the
    rated pairs only. Callers compare it with a finished run's marker to decide reuse."""
    # lazy: keeps torch out of `import humanclap.training.output`
    from humanclap.training.data import load_splits

    cfg = config.validated_copy()
    info = load_scorer(cfg.model, device="cpu", revision=cfg.revision).info
    rated, names, _, _ = load_splits(cfg)
    pairs = rated.pairs[rated.pairs["split"].isin(names)].reset_index(drop=True)
    return training_identity(cfg, info, {n: pairs[pairs["split"] == n] for n in names}, free=RESUME_FREE)
