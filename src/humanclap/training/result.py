"""What a training run returns: :class:`TrainResult` and the metrics of a split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Re-exported: callers written before errors.py existed import it from here.
from humanclap.errors import TrainingError  # noqa: F401
from humanclap.evaluation import metrics

# How to load the output folder, per family (the summary's last line). Both load with
# humanclap.load_scorer(folder) and `--model folder`; these name the family's own classes.
HEAD_HINT = (
    "the model and its score head: load with load_scorer or --model OUT; the model's own "
    "classes load the model without the head"
)
LOAD_HINTS = {
    "clap": "load with CLAPScorer.from_pretrained or ClapModel.from_pretrained",
    "msclap": "an MS CLAP folder: load with load_scorer or MSClapScorer.from_pretrained, "
    "or pass it as --model to score/evaluate",
    "pe_audio": "a PE-Audio folder: load with load_scorer or PeAudioModel.from_pretrained, "
    "or pass it as --model to score/evaluate",
}


@dataclass
class TrainResult:
    output_dir: Path  # the folder of the best model (its family's format, see LOAD_HINTS)
    best_epoch: int | None  # 1-based; None if no epoch finished
    best_val: dict  # validation srcc/lcc/ktau/mse of the best epoch (empty without a val split)
    test: dict | None  # the same on the test split for the best model, if there is one
    epochs_run: int  # epochs finished, including those before a resume
    stopped_early: bool
    seconds: float  # wall time of this call
    cached_towers: list[str] = field(default_factory=list)  # towers served from the fast path
    history: list[dict] = field(default_factory=list)  # one record per epoch (as metrics.jsonl)
    weights_digest: str = ""  # sha256 of the final trained parameters (identical on every rank)
    selected_by: str = ""  # how the kept model was chosen (TrainState.selected_by)
    family: str = "clap"  # "clap" (transformers ClapModel folder) or "msclap" (MS CLAP folder)
    head: bool = False  # the folder holds a score head (train_params=head) beside the unchanged model

    def summary(self) -> str:
        def fmt(m):
            return (
                "  ".join(
                    f"{k.upper()} {v:.3f}" if isinstance(v, float) and math.isfinite(v) else f"{k.upper()} n/a"
                    for k, v in m.items()
                )
                if m
                else "n/a"
            )

        # A model kept for want of a defined validation SRCC is not the "best" of anything.
        first = (
            f"kept epoch: {self.best_epoch} of {self.epochs_run}, the {self.selected_by}"
            if self.selected_by.startswith("last epoch (validation")
            else f"best epoch: {self.best_epoch} of {self.epochs_run}"
        )
        lines = [first + (" (stopped early)" if self.stopped_early else ""), f"validation: {fmt(self.best_val)}"]
        if self.test is not None:
            lines.append(f"test:       {fmt(self.test)}")
        lines += [
            f"time: {self.seconds:.1f} s"
            + (f" (cached towers: {', '.join(self.cached_towers)})" if self.cached_towers else ""),
            f"model: {self.output_dir} ({HEAD_HINT if self.head else LOAD_HINTS.get(self.family, LOAD_HINTS['clap'])})",
        ]
        return "\n".join(lines)


def split_metrics(pred: torch.Tensor, human: torch.Tensor) -> dict[str, float]:
    """SRCC, LCC, KTAU and MSE of CLAPScores against the human means (NaN if undefined)."""

    out = {}
    for name in ("srcc", "lcc", "ktau", "mse"):
        try:
            out[name] = float(getattr(metrics, name)(pred.double().numpy(), human.double().numpy()))
        except ValueError:  # constant predictions (e.g. every CLAPScore clipped to 0)
            out[name] = float("nan")
    return out
