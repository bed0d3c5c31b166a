"""Read the state dict of a ``laion_clap`` ``.pt`` without executing anything it contains.

A LAION training checkpoint is ``{"epoch", "name", "state_dict", "optimizer", ...}`` saved by
``torch.save``. ``torch.load(weights_only=True)`` reads tensors, dicts, lists and plain scalars,
and refuses any other pickled global. Two things in real files go beyond that:

* numpy scalars (``numpy.core.multiarray.scalar`` with a ``numpy.dtype``), e.g. a metric kept
  beside the weights: they are pure data, so they are added to the allow-list by name, both
  under numpy 1's module path (``numpy.core``) that old files name and numpy 2's;
* a pickle written with protocol 4 or newer (re-saved files): the weights-only unpickler only
  knows the opcodes of protocol 2. Such a file is read by a restricted ``pickle.Unpickler``
  whose ``find_class`` allows the same short list (torch's tensor/storage rebuild functions,
  dtypes, ``OrderedDict``, numpy scalars) and refuses everything else. Plain pickle is never used.
"""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path

import numpy as np
import torch

from humanclap.errors import ModelLoadError
from humanclap.scoring.checkpoint import check_regular_file, pickle_refusal

__all__ = ["read_state_dict"]


try:  # numpy 2 moved numpy.core to numpy._core; pickles name either
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy 1
    from numpy.core.multiarray import scalar as _np_scalar


def _numpy_scalar_globals() -> list:
    """The numpy names a scalar pickles to, under both module paths (numpy 1 ``core``, numpy 2 ``_core``)."""
    names = [(_np_scalar, "numpy.core.multiarray.scalar"), (_np_scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtype_classes = getattr(np, "dtypes", None)
    if dtype_classes is not None:  # numpy >= 1.25 pickles np.dtype("float64") via dtypes.Float64DType
        names += [getattr(dtype_classes, n) for n in dir(dtype_classes) if n.endswith("DType")]
    return names


def _allowed(module: str, name: str):
    """``find_class`` of the restricted unpickler: torch's own rebuild path, dtypes, numpy scalars."""
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module == "torch._utils" and name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        return getattr(torch._utils, name)
    if module == "torch" and (
        name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype) or name == "Size"
    ):
        return getattr(torch, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
        return _np_scalar
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "numpy.dtypes" and name.endswith("DType"):
        return getattr(np.dtypes, name)
    raise pickle.UnpicklingError(
        f"refused to load {module}.{name}: a LAION checkpoint holds only tensors, numbers, strings and containers"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _allowed(module, name)


# torch.load(pickle_module=...) wants a module with Unpickler and load.
_restricted_pickle = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler,
    __name__="humanclap_restricted_pickle",
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
)


def _load(path: Path):
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" not in str(exc):  # a global beyond plain data: code
            raise pickle_refusal(path, exc) from None
    # Protocol >= 4 pickle (see the module docstring): same allow-list, our own unpickler.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused"):
            raise pickle_refusal(path, exc) from None
        raise  # not a pickle at all: read_state_dict says so


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a laion_clap ``.pt`` (``checkpoint["state_dict"]`` or a bare state dict)."""
    path = Path(path)
    check_regular_file(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such checkpoint file (a laion_clap .pt such as 630k-audioset-best.pt)")
    try:
        obj = _load(path)
    except ModelLoadError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(
            f"{path}: no state dict of tensors in it (expected a laion_clap checkpoint: "
            "a dict with 'state_dict', or a state dict itself)"
        )
    return dict(sd)
