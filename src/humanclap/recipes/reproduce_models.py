"""The models ``reproduce`` trains: the paper's Human-CLAP variants and, with ``recipes``, the
recipes beyond the paper (``configs/<key>.yaml``, each naming its source).

Each is trained from its shipped config into ``output_dir/models/<key>/``. A folder that is
complete and of the same identity (base model and its weights, data fingerprint, settings:
:func:`humanclap.training.output.training_identity`) is reused; one of another identity is
refused, naming what differs; an interrupted one (``checkpoints/`` there) resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from humanclap.errors import ReproduceError

if TYPE_CHECKING:
    from humanclap.training.config import TrainConfig


@dataclass(frozen=True)
class Variant:
    key: str  # folder name under output_dir/models and shipped config name
    label: str  # row label (for the paper's variants also the key of reproduce.PAPER_TABLE)
    official: str | None = None  # the authors' released checkpoint; None: a recipe beyond the paper


VARIANTS = (
    Variant("wsce_mae", "Human-CLAP wSCE+MAE", "sarulab-speech/human-clap-wsce-mae"),
    Variant("wsce", "Human-CLAP wSCE", "sarulab-speech/human-clap-wsce"),
    Variant("mae", "Human-CLAP MAE", "sarulab-speech/human-clap-mae"),
)
# Beyond the paper (--recipes): same base, data and batch as wsce_mae; each config names its
# source and what differs (the head its own lr and epochs). Not in the paper: paper columns empty.
# One name per recipe, in reproduce's table and in the demo's (--extended).
RECIPE_LABELS = {
    "wsce_mae_listenerz": "wSCE+MAE, listener-z",
    "mse_pairwise": "MSE+0.5 pairwise",
    "head_pairwise": "head: cMSE+0.5 pairwise",
    "listnet": "ListNet",
}
RECIPES = tuple(Variant(key, label) for key, label in RECIPE_LABELS.items())
# A trained folder is complete once train() has published these (it writes them last).
COMPLETE_FILES = ("config.json", "model.safetensors", "training_config.json", "metrics.json")


def trained_variants(recipes: bool) -> tuple[Variant, ...]:
    """What a training ``reproduce`` run trains: the paper's variants, then the recipes."""
    return VARIANTS + (RECIPES if recipes else ())


def train_config(
    variant: Variant,
    data_spec: str,
    models_dir: Path,
    *,
    audio_root: str | None,
    device: str,
    eval_batch_size: int,
    seed: int,
    progress: bool | None,
    base: str | None,
    epochs: int | None,
) -> TrainConfig:
    """The shipped ``configs/<key>.yaml`` with reproduce's data, folder and overrides."""
    # lazy: keeps torch out of reproduce's usage errors
    from humanclap.training.config import TrainConfig

    tc = TrainConfig.load(variant.key)
    tc.data, tc.audio_root = data_spec, audio_root
    tc.output_dir = str((models_dir / variant.key).resolve())
    tc.device, tc.eval_batch_size, tc.seed, tc.progress = device, eval_batch_size, seed, progress
    if base:
        tc.model = base
    if epochs is not None:
        tc.epochs = epochs
    return tc.validate()


def is_complete(folder: Path, tc: TrainConfig) -> bool:
    """Every file a finished run publishes is there (a score head's too, for ``train_params=head``)."""
    # lazy: keeps torch out of reproduce's usage errors
    from humanclap.scoring.checkpoint import HEAD_FILES

    names = COMPLETE_FILES + (HEAD_FILES if tc.train_params == "head" else ())
    return all((folder / name).is_file() for name in names)


def settings_differ(folder: Path, tc: TrainConfig) -> dict:
    """Settings (those that change the model) where a finished run differs from ``tc``."""
    # lazy: keeps torch out of reproduce's usage errors
    from humanclap.training.trainer import RESUME_FREE

    saved = json.loads((folder / "training_config.json").read_text())
    return {k: (saved.get(k), v) for k, v in tc.to_dict().items() if k not in RESUME_FREE and saved.get(k) != v}


def check_reusable(folder: Path, variant: Variant, tc: TrainConfig) -> None:
    """Refuse a complete model folder trained with other settings, base model or data."""
    # lazy: keeps torch out of reproduce's usage errors
    from humanclap.outputs import describe_differences, identity_differences, read_marker
    from humanclap.training.trainer import planned_identity

    diff = settings_differ(folder, tc)
    if diff:
        raise ReproduceError(
            f"{folder} holds a {variant.label} model trained with other settings "
            f"{ {k: f'{a!r} then, {b!r} now' for k, (a, b) in diff.items()} }; rerun "
            "with the original settings or choose another --output-dir"
        )
    diffs = identity_differences((read_marker(folder) or {}).get("identity"), planned_identity(tc))
    if diffs:
        raise ReproduceError(
            f"{folder} holds a {variant.label} model of another base model or data "
            f"({describe_differences(diffs)}); it is not reused: delete {folder} to "
            "train it again, or choose another --output-dir"
        )


def train_or_reuse(
    plans: Sequence[tuple[Variant, TrainConfig]], say: Callable[[str], None], stage: Callable[[], str]
) -> tuple[list[str], list[str]]:
    """Train (or resume) every planned model in turn, reusing the complete ones; returns the
    keys trained now and the keys reused."""
    # lazy: keeps torch out of reproduce's usage errors
    from humanclap.training.trainer import train

    trained, skipped = [], []
    for v, tc in plans:
        folder = Path(tc.output_dir)
        where = f"{stage()} {v.label}:"
        if is_complete(folder, tc):
            check_reusable(folder, v, tc)
            say(f"{where} {folder} is complete (trained earlier): skipped training")
            skipped.append(v.key)
            continue
        tc.resume = (folder / "checkpoints").is_dir()
        say(
            f"{where} {'resuming' if tc.resume else 'training'} with config {v.key} "
            f"(base {tc.model}, loss {tc.loss}, at most {tc.epochs} epochs) -> {folder}"
        )
        res = train(tc, printer=lambda line, lbl=v.label: say(f"      {lbl}: {line}"))
        say(f"      {v.label}: best epoch {res.best_epoch} of {res.epochs_run}, {res.seconds:.0f} s")
        trained.append(v.key)
    return trained, skipped
