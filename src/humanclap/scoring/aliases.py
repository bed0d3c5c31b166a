"""Old import paths of moved modules, all in one place.

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
