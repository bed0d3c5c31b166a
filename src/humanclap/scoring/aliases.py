"""Every compatibility alias of humanclap, all in one place: old import paths of moved
modules (:data:`ALIASES`, made to work by :func:`install`) and old names of moved or renamed
functions and classes (:data:`NAMES`, each kept by a plain assignment or import in the module
it names; ``tests/test_architecture.py`` checks that each is the very object it stands for).
A new alias goes into one of these two tables, or it is not kept.

The transformers/LAION family moved into :mod:`humanclap.scoring.clap` (beside ``msclap``
and ``pe_audio``). Code and notebooks written against the old paths keep working:
``import humanclap.scoring.scorer`` gives the very module ``humanclap.scoring.clap.scorer``
(the same object, so a monkeypatch through either name is seen by both). The device and
dtype helpers moved to :mod:`humanclap.scoring.device`; ``clap.scorer`` still imports
``DTYPES``, ``resolve_device``, ``check_dtype``, ``device_numerics``, so the old
``humanclap.scoring.scorer.resolve_device`` keeps working too.

:func:`install` (run by ``humanclap.scoring``'s ``__init__``) adds a finder after the
standard ones: a module file of the old name, if one came back, would still win.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module -> where it lives now
ALIASES = {
    "humanclap.scoring.scorer": "humanclap.scoring.clap.scorer",
    "humanclap.scoring.fbank": "humanclap.scoring.clap.fbank",
    "humanclap.scoring.laion_archs": "humanclap.scoring.clap.laion_archs",
    "humanclap.scoring.laion_checkpoint": "humanclap.scoring.clap.laion_checkpoint",
    "humanclap.scoring.laion_convert": "humanclap.scoring.clap.laion_convert",
}

# old name -> the object it stands for (both "module:attribute"). Used by the README, the
# recipes or the tests unless said otherwise; not a re-export by design (training.distributed
# re-exporting scoring.distributed's helpers, laion_convert the presets of laion_archs).
NAMES = {
    "humanclap:train": "humanclap.training.trainer:fine_tune",  # the name before 0.2 (README)
    "humanclap.training.trainer:train": "humanclap.training.trainer:fine_tune",
    "humanclap.training.trainer:TrainingError": "humanclap.errors:TrainingError",
    "humanclap.training.result:TrainingError": "humanclap.errors:TrainingError",  # before errors.py
    "humanclap.training.trainer:RESUME_FREE": "humanclap.training.output:RESUME_FREE",
    "humanclap.training.trainer:planned_identity": "humanclap.training.output:planned_identity",
    # the name before MS CLAP could be trained; nothing documents or uses it: to remove
    "humanclap.training.model:export_hf_folder": "humanclap.training.model:export_model_folder",
    # the device/dtype helpers and CLAPScore under the old humanclap.scoring.scorer path
    **{
        f"humanclap.scoring.clap.scorer:{n}": f"humanclap.scoring.device:{n}"
        for n in ("DTYPES", "autocast", "check_dtype", "device_and_dtype", "device_numerics", "resolve_device")
    },
    "humanclap.scoring.clap.scorer:clapscore": "humanclap.scoring.clapscore:clapscore",
    "humanclap.scoring.clap.scorer:ModelInfo": "humanclap.scoring.protocol:ModelInfo",
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name to the module now at its new name."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    """Add the finder once (idempotent)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())
