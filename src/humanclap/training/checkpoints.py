"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

Layout of ``output_dir``::

    config.json, model.safetensors,        the best model in its family's format (written at
    tokenizer*, preprocessor_config.json   the end; LoRA merged): a standard Hugging Face folder,
                                           or an MS CLAP folder (no preprocessor_config.json)
    training_config.json, metrics.json     the run's TrainConfig and final metrics
    metrics.jsonl                          one line per epoch
    checkpoints/last/                      resume state after the latest finished epoch:
        trainable.safetensors                the parameters training changes
        optimizer.safetensors                AdamW moments, flattened ``state.<i>.<name>``
        trainer_state.json                   epoch, step, scheduler, early stopping, history,
                                             optimizer param groups, config
    checkpoints/best/                      model folder of the best epoch so far

Every folder is written under a temporary name and renamed into place
(:func:`humanclap.io.atomic_dir`), so a crash never leaves a half-written checkpoint: the
previous one stays intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from humanclap.errors import ConfigError
from humanclap.io import atomic_write, write_json

LAST, BEST = "last", "best"
STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / "checkpoints" / name


def find_checkpoint(output_dir: str | Path, name: str = LAST) -> Path | None:
    """The committed checkpoint folder, or its previous version if a crash hit the swap."""
    final = checkpoint_dir(output_dir, name)
    # io.atomic_dir swaps through a unique ".NAME.old-PID-RANDOM": a crash between its two
    # renames leaves the previous version there (only this run's folder holds such names).
    for candidate in (final, *sorted(final.parent.glob(f".{name}.old-*"))):
        if (candidate / STATE_FILE).is_file() or (name != LAST and (candidate / "config.json").is_file()):
            return candidate
    return None


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_training_state(
    folder: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, scheduler, state: dict[str, Any]
) -> None:
    """Write the resume state of one finished epoch into ``folder`` (already created).

    ``trainer_state.json`` is strict JSON (NaN -> null): the run state's metrics are the
    only floats that can be non-finite, and :class:`~humanclap.training.state.TrainState`
    reads null back as NaN; the optimizer's and scheduler's numbers are always finite."""
    save_file(trainable, str(folder / "trainable.safetensors"))
    tensors, meta = _optimizer_to_flat(optimizer)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json(folder / STATE_FILE, {**state, "optimizer": meta, "scheduler": sched}, indent=1)


def read_training_state(folder: Path) -> dict[str, Any]:
    """The JSON part of a checkpoint: run state, config, optimizer and scheduler settings."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read the training checkpoint {path} ({exc}); delete "
            f"{folder} to restart from the previous epoch's state, or choose "
            "another --output-dir"
        ) from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "config"} <= set(state):
        raise ConfigError(
            f"{path} is not a humanclap trainer state (no optimizer, scheduler "
            "or config entry); delete it or choose another --output-dir"
        )
    return state


def restore_training_state(
    folder: Path, state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler
) -> dict[str, torch.Tensor]:
    """Restore optimizer and scheduler in place from ``folder`` and ``state`` (as read by
    :func:`read_training_state`); return the trained parameters' tensors."""
    optimizer.load_state_dict(
        _optimizer_from_flat(load_file(str(folder / "optimizer.safetensors")), state["optimizer"])
    )
    sched = dict(state["scheduler"])
    sched["lr_lambdas"] = [None] * len(optimizer.param_groups)
    scheduler.load_state_dict(sched)
    return load_file(str(folder / "trainable.safetensors"))


def publish(best: Path, output_dir: Path) -> None:
    """Put the best checkpoint's files at the top of ``output_dir`` (hard links where the
    file system allows, else copies; each file replaced atomically)."""

    def link_or_copy(src: Path, tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)

    for src in best.iterdir():
        if src.is_file():
            atomic_write(output_dir / src.name, lambda tmp, src=src: link_or_copy(src, tmp))
