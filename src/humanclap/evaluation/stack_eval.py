"""``evaluate --model STACK_DIR``: a folder written by ``humanclap stack``
(:mod:`humanclap.evaluation.stack`) stands for its members plus their combined run.

:func:`plan_stacks` replaces each stack folder in evaluate's model list by its members (a
member also passed as ``--model`` is scored once, in its own place), so every member is
scored through the normal path; once they are, :func:`stack_run` adds a run whose prediction
is the ridge combination of the members' CLAPScores clipped to [0, 1] (the CLAPScore range the
metrics assume, MSE included). The stacked run comes after every scored model, so its paired
test is against the first model. A member whose revision changed since the fit, and pairs the
stack was fitted on, are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanclap.errors import UsageError
from humanclap.evaluation.evaluate import PAIR_OUTPUT_COLUMNS, ModelRun, short_name, unique_names
from humanclap.evaluation.ridge import RidgeFit
from humanclap.evaluation.stack import CLIP, FORMAT, FORMAT_VERSION, STACK_FILE, TRAINING_PAIRS
from humanclap.io import read_table


@dataclass
class Stack:
    """A stack folder as evaluate uses it."""

    folder: Path
    record: dict[str, Any]

    @property
    def members(self) -> list[dict]:
        return self.record["members"]

    @property
    def fit(self) -> RidgeFit:
        r = self.record
        return RidgeFit(
            coef=np.asarray(r["coef_standardised"], float),
            intercept=float(r["intercept"]),
            mean=np.asarray(r["feature_mean"], float),
            scale=np.asarray(r["feature_scale"], float),
            alpha=float(r["alpha"]),
        )

    def combine(self, scores: np.ndarray) -> np.ndarray:
        """The stacked score of each pair from its members' CLAPScores ``(n, members)``:
        the ridge prediction clipped to [0, 1]; NaN where a member's score is NaN."""
        return np.clip(self.fit.predict(scores), *self.record.get("clip", CLIP))

    def training_pair_ids(self) -> set[str]:
        table = read_table(self.folder / TRAINING_PAIRS, "stack training pairs")
        return {str(r["pair_id"]) for r in table.rows}


def is_stack_folder(spec: str | Path) -> bool:
    """Whether ``spec`` is a folder written by ``humanclap stack`` (its stack.json says so)."""
    path = Path(str(spec)).expanduser() / STACK_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_stack(folder: str | Path) -> Stack:
    folder = Path(folder).expanduser()
    text = (folder / STACK_FILE).read_text(encoding="utf-8")
    record = json.loads(text)
    if record.get("format_version") != FORMAT_VERSION:
        raise UsageError(
            f"{folder / STACK_FILE} has format version {record.get('format_version')}"
            f"; this humanclap reads version {FORMAT_VERSION}: fit the stack again"
        )
    record["_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Stack(folder, record)


def stack_run(stack: Stack, member_runs: list[ModelRun], taken: list[ModelRun], label: str | None) -> ModelRun:
    """The stacked run from its members' runs (in the stack's member order); ``taken``: the
    runs already there, whose labels and columns the new one must not reuse."""
    for member, run in zip(stack.members, member_runs):
        if member["revision"] and run.info.get("revision") != member["revision"]:
            raise UsageError(
                f"stack {stack.folder}: member {member['label']} ({member['model']}) "
                f"now has revision {run.info.get('revision')}, the stack was fitted "
                f"on {member['revision']}; fit the stack again on the current model"
            )
    scores = np.column_stack([r.scores for r in member_runs])
    errors = [next((f"{r.label}: {r.errors[i]}" for r in member_runs if r.errors[i]), "") for i in range(len(scores))]
    name = unique_names([label or short_name(str(stack.folder))], [r.label for r in taken])[0]
    column = unique_names([short_name(name)], [*PAIR_OUTPUT_COLUMNS, "scored", "error", *(r.column for r in taken)])[0]
    info = {
        "model_id": str(stack.folder),
        "revision": "sha256:" + stack.record["_sha256"][:12],
        "source": "stack",
        "preprocessing": None,
        "stack": {
            "members": [r.label for r in member_runs],
            "alpha": stack.record["alpha"],
            "clip": stack.record.get("clip", list(CLIP)),
        },
    }
    return ModelRun(name, column, info, stack.combine(scores), errors, {"pairs": len(scores)})


@dataclass
class StackPlan:
    """``evaluate``'s model list with each stack folder replaced by its members, and how to
    add each stack's run once they are scored (see the module docstring)."""

    models: list[str]
    labels: list[str] | None
    stacks: list[tuple[Stack, list[int], str | None]] = field(default_factory=list)

    @property
    def derived(self) -> list[Callable[[list[ModelRun]], ModelRun]]:
        return [
            lambda runs, s=s, idx=idx, lbl=lbl: stack_run(s, [runs[i] for i in idx], runs, lbl)
            for s, idx, lbl in self.stacks
        ]

    def check_pairs(self, pair_ids: Sequence[str]) -> None:
        """Refuse evaluating a stack on pairs it was fitted on."""
        ids = {str(p) for p in pair_ids}
        for stack, _, _ in self.stacks:
            shared = ids & stack.training_pair_ids()
            if shared:
                raise UsageError(
                    f"{len(shared)} of the {len(ids)} pairs evaluated were used to fit "
                    f"the stack {stack.folder} (e.g. {sorted(shared)[0]!r}); evaluate "
                    "it on held-out pairs (--split test)"
                )


def plan_stacks(models: Sequence[str], labels: Sequence[str] | None) -> StackPlan:
    """Replace each stack folder in ``models`` by the members not already listed; a no-op
    (the same lists back) when there is none."""
    if not any(is_stack_folder(m) for m in models):
        return StackPlan(list(models), list(labels) if labels else None)
    given = list(labels) if labels else [None] * len(models)

    def key(spec: str) -> str:
        p = Path(spec).expanduser()
        return str(p.resolve()) if p.exists() else spec

    passed = {key(m) for m in models if not is_stack_folder(m)}  # scored in their own place
    out_models: list[str] = []
    out_labels: list[str] = []
    stacks = []
    for spec, label in zip(models, given):
        if not is_stack_folder(spec):
            out_models.append(spec)
            out_labels.append(label or short_name(spec))
            continue
        stack = load_stack(spec)
        stacks.append((stack, label))
        for member in stack.members:
            if key(member["model"]) not in passed | {key(m) for m in out_models}:
                out_models.append(member["model"])
                out_labels.append(member["label"])
    keys = [key(m) for m in out_models]
    plan = StackPlan(out_models, out_labels)
    for stack, label in stacks:
        plan.stacks.append((stack, [keys.index(key(m["model"])) for m in stack.members], label))
    return plan
