"""The output folder of a training run: what may be written there and what must not be.

A run writes its model files, ``metrics*.json*``, ``training_config.json`` and
``checkpoints/`` into ``--output-dir``; these checks refuse, before anything is loaded,
a folder where that would destroy something the run did not write: the training
manifest, the base model (a folder, or the folder of an msclap ``.pth`` with its
tokenizer beside it), or another model's folder.
"""

from __future__ import annotations

from pathlib import Path

from humanclap.errors import ConfigError

# A model's own files: an output folder holding them without a checkpoint is someone else's.
MODEL_FILES = ("config.json", "model.safetensors")
# What a run writes at the top of its output folder besides the model's own files (a
# manifest there under one of these names, or under checkpoints/, would be overwritten).
WRITTEN_NAMES = {"metrics.json", "metrics.jsonl", "training_config.json", "config.json",
                 "model.safetensors", "preprocessor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "added_tokens.json", "vocab.txt"}


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
            raise ConfigError(f"--output-dir {out} would overwrite the base model {model} (the run "
                              "writes its model files and checkpoints there); choose another "
                              "--output-dir")
    manifest = Path(data).expanduser()
    if manifest.is_file():
        target, root = manifest.resolve(), out.resolve()
        if (target.parent == root and target.name in WRITTEN_NAMES) or \
                (root / "checkpoints") in target.parents:
            raise ConfigError(f"--output-dir {out} would overwrite the training data {data} "
                              "(the run writes its model, metrics and checkpoints there); "
                              "choose another --output-dir or move the manifest")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} is a file, not a folder: choose another "
                          "--output-dir (it becomes a model folder)")
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way of a parent, read-only place: the user's to fix
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}; "
                          "pass another --output-dir") from None


def refuse_foreign_model(out: Path) -> None:
    """Raise ConfigError when ``out`` holds a model but no training checkpoint (call it only
    then): no run of ours left that (a run publishes its model only after its last
    checkpoint), so it is another model's folder, whose files the run would replace one by
    one and leave mixed with its own."""
    found = [n for n in MODEL_FILES if (out / n).exists()]
    if found:
        raise ConfigError(f"--output-dir {out} already holds a model ({', '.join(found)}) but no "
                          "training checkpoint (checkpoints/last), so it is not a run to --resume; "
                          "training would overwrite it. Choose an empty or new --output-dir")
