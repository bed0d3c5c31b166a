"""One entry point from a model spec to a loaded :class:`~humanclap.scoring.protocol.Scorer`.

``load_scorer(spec)`` picks the family from the spec alone (no weights read twice), by the
table of :mod:`humanclap.scoring.families`:

* ``msclap-2022`` / ``msclap-2023``, a path ending in ``.pth``, or a folder whose
  ``config.json`` says ``"model_type": "msclap"`` -> :class:`~humanclap.scoring.msclap.MSClapScorer`;
* a folder whose ``config.json`` says ``"model_type": "pe_audio"``, or a hub id under
  ``facebook/pe-av-*`` / ``facebook/pe-a-frame-*`` -> :class:`~humanclap.scoring.pe_audio.PeAudioScorer`;
* anything else (a hub id such as ``laion/clap-htsat-unfused``, a ``save_pretrained``
  folder) -> :class:`~humanclap.scoring.clap.CLAPScorer` (every transformers CLAP).

A folder of any family that holds a score head (``score_head.safetensors`` + ``.json``,
written by ``humanclap train --train-params head``) gives a
:class:`~humanclap.scoring.head.HeadScorer` around the family's scorer: same embeddings and
cosines, the head's clipped score as ``clapscore``.

Import-light: the families' modules (and torch) load only when a scorer is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from humanclap.defaults import DEFAULT_MODEL
from humanclap.scoring.checkpoint import check_model_files, check_regular_file
from humanclap.scoring.families import family_named, family_of_spec

MSCLAP_SPECS = family_named("msclap").ids


def is_msclap_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names an MS CLAP model (see the module docstring)."""
    return family_of_spec(spec).name == "msclap"


def _check_spec_files(path: Path) -> None:
    """Refuse a spec path that is, or a checkpoint folder whose model files are, a FIFO, a
    device or a socket (stat only: nothing is opened)."""

    if path.is_dir():
        check_model_files(path)
    else:
        check_regular_file(path)


def load_scorer(
    spec: str | Path = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "fp32",
    *,
    revision: str | None = None,
    msclap_version: str | None = None,
    tokenizer: Any = None,
):
    """Load a scorer of the right family for ``spec``.

    ``revision``: hub revision (transformers checkpoints only). ``msclap_version``:
    ``"2022"``/``"2023"`` for an msclap ``.pth`` (inferred from its keys when omitted).
    ``tokenizer``: an MS CLAP tokenizer (object, folder or hub id) instead of the one found
    beside the checkpoint or in the Hugging Face cache.
    Raises ModelLoadError when the model cannot be loaded, UsageError for options that do
    not apply to the spec's family.
    """
    _check_spec_files(Path(spec))  # before anything of it is read: a FIFO would block
    scorer = family_of_spec(spec).load(
        str(spec), device=device, dtype=dtype, revision=revision, msclap_version=msclap_version, tokenizer=tokenizer
    )
    from humanclap.scoring.head import has_head

    if has_head(spec):
        from humanclap.scoring.head import HeadScorer

        return HeadScorer(scorer, spec)
    return scorer
