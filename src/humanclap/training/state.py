"""The run state of a training run: what ``checkpoints/last/trainer_state.json`` carries
besides the optimizer and scheduler, and what early stopping decides on.

The JSON keys are the field names below, unchanged since the state was a plain dict, so
checkpoints written before stay readable. The file is strict JSON: a non-finite float (a
validation SRCC of constant predictions, say) is written as ``null``; :meth:`TrainState.from_dict`
turns the metric values back into NaN so that a resumed run holds what the uninterrupted
one held.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from humanclap.errors import ConfigError

NAN = float("nan")
UNDEFINED_SELECTION = "last epoch (validation SRCC undefined on every epoch)"


@dataclass
class TrainState:
    """Progress, best model so far and early stopping, updated once per finished epoch."""

    epoch: int = 0  # epochs finished (the next one to run is epoch + 1)
    global_step: int = 0  # optimizer steps taken, over all epochs
    best_epoch: int | None = None  # 1-based epoch of the kept model; None before the first
    best_srcc: float | None = None  # its validation SRCC; None while none was finite
    best_val: dict[str, float] = field(default_factory=dict)  # its validation metrics
    best_test: dict[str, float] | None = None  # its test metrics, when a test split is used
    bad_epochs: int = 0  # epochs in a row without a better validation SRCC
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one record an epoch
    stopped_early: bool = False  # patience ran out before the last epoch
    finished: bool = False  # nothing left to train (set with stopped_early)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as a plain dict, keys in field order (the checkpoint's layout)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the checkpoint") -> "TrainState":
        """The state saved by :meth:`to_dict` (read back from JSON). Keys this version does
        not know are ignored; a missing key means the file is not a trainer state."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ConfigError(
                f"{source} lacks the training state key(s) {missing}: it was not "
                "written by humanclap's trainer or is damaged; delete the "
                "checkpoints folder or choose another --output-dir"
            )
        state = cls(**{n: data[n] for n in names})
        state.best_val = _metrics(state.best_val)
        state.best_test = None if state.best_test is None else _metrics(state.best_test)
        state.history = [_record(r) for r in state.history]
        return state

    def observe(self, epoch: int, val: dict[str, float], validating: bool) -> bool:
        """Record epoch ``epoch``'s validation metrics; True when its model becomes the kept one.

        Without validation every epoch is kept (the last one wins). An epoch whose SRCC is
        undefined (NaN: constant predictions, e.g. every CLAPScore clipped to 0) never
        beats a defined one and counts as an epoch without improvement. While *no* epoch
        has had a defined SRCC there is nothing to select on, so each epoch replaces the
        previous one, as without validation: the last epoch is kept (``selected_by`` says
        so) and early stopping, which has no signal yet, does not count these epochs."""
        srcc = val.get("srcc", NAN) if val else NAN
        defined = math.isfinite(srcc)
        if not validating:
            kept, improved = True, True
        elif defined:
            kept = improved = self.best_srcc is None or srcc > self.best_srcc
        else:
            kept, improved = self.best_srcc is None, False
        if kept:
            self.best_epoch = epoch
            self.best_srcc = srcc if validating and defined else None
            self.best_val = val
        if improved or (validating and self.best_srcc is None):
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return kept

    def selected_by(self, validating: bool) -> str:
        """How the kept model was chosen, in words (``metrics.json``'s ``selected_by``)."""
        if self.best_epoch is None:
            return "no epoch finished"
        if not validating:
            return "last epoch (no validation split)"
        if self.best_srcc is None:
            return UNDEFINED_SELECTION
        return "best validation SRCC"

    def end_epoch(self, record: dict[str, Any], patience: int, validating: bool, epochs: int) -> None:
        """Append the epoch's record and decide on early stopping (never after the last epoch,
        so that a run that used every epoch does not claim to have stopped early)."""
        self.history.append(record)
        self.epoch = record["epoch"]
        if patience and validating and self.bad_epochs >= patience and self.epoch < epochs:
            self.stopped_early = True
            self.finished = True


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """The one line printed after each epoch."""
    terms = ", ".join(f"{k} {v:.4f}" for k, v in record["train"].items() if k != "loss")
    val = "  ".join(f"{k.upper()} {v:.3f}" for k, v in record["val"].items())
    return (
        f"epoch {record['epoch']}/{epochs}  loss {record['train']['loss']:.4f} ({terms})  "
        f"val {val or 'n/a'}{'  *best*' if record['best'] else ''}  {record['seconds']:.1f} s"
    )


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    # JSON null is how a NaN metric was written (strict JSON has no NaN).
    return {k: NAN if v is None else v for k, v in values.items()}


def _record(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for key in ("train", "val"):
        if isinstance(out.get(key), dict):
            out[key] = _metrics(out[key])
    if "lr" in out and out["lr"] is None:
        out["lr"] = NAN
    return out
