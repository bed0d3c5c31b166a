"""What ``humanclap score`` checks before it writes anything, and the ``OUT.meta.json``
that makes ``--resume`` safe by construction.

* :func:`check_output`: ``-o`` must not be the manifest or one of its audio files under
  any name (symlink, hard link, ``..``), must not be a folder or lie under a file, and an
  existing non-empty output is replaced only with ``--overwrite`` (or continued with
  ``--resume``). All of it runs before any file is opened for writing.
* :func:`check_resume` (the meta file is :mod:`~humanclap.scoring.summary`'s): it records the model (revision,
  dtype, preprocessing) and a fingerprint of the manifest (its columns and every row, in
  order); ``--resume`` continues a file only when all of them are the same, so the rows
  already in the file and the rows appended come from the same model and the same input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from humanclap.errors import UsageError
from humanclap.io import json_safe
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import FORMATS, output_format

OVERWRITE_HINT = "rerun with --overwrite"


def meta_path(output: Path) -> Path:
    """``OUT.meta.json``, beside the output."""
    return output.with_name(output.name + ".meta.json")


def _file_id(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names after following symlinks; None if nothing."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in a path cell
        return None
    return st.st_dev, st.st_ino


def check_output(
    output: str | Path | None,
    manifest: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    audio_paths: Iterable[str | None] = (),
) -> None:
    """Refuse an ``-o`` that would destroy an input or cannot be written; see the module doc."""
    if resume and overwrite:
        raise UsageError(
            "--resume and --overwrite contradict each other: --resume keeps the rows "
            "already in -o OUT, --overwrite discards them; pass one of them"
        )
    if output is None:
        return
    out = Path(output)
    meta = meta_path(out)
    for path in (out, meta):
        if path.is_dir():
            raise UsageError(f"-o {out}: {path} is a folder; name a .csv or .jsonl file to write")
    # The nearest existing folder above OUT: a file there means OUT can never be created.
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling symlink: mkdir would fail on it
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"-o {out}: {parent} is a file, not a folder; choose another output path")

    # Input is sacred: no name of the manifest or of one of its audio files may be written.
    written = {fid: path for path in (out, meta) if (fid := _file_id(path)) is not None}
    if written:
        if _file_id(manifest) in written:
            raise UsageError(
                f"-o {out}: {written[_file_id(manifest)]} is the manifest {manifest} "
                "itself (the same file under another name); writing it would destroy "
                "the input; choose another output path"
            )
        # Only when OUT already exists (a new file cannot be one of them); streamed, one
        # stat per row, so a manifest of millions of rows is never held in memory.
        for audio in (p for p in audio_paths if p):
            if _file_id(audio) in written:
                raise UsageError(
                    f"-o {out}: {written[_file_id(audio)]} is the audio file {audio} "
                    "of the manifest; choose another output path"
                )

    if out.is_file() and out.stat().st_size > 0 and not (resume or overwrite):
        raise UsageError(
            f"-o {out} exists and is not empty; pass --overwrite to replace it, or "
            "--resume to keep its rows and score only the rest"
        )
    # The output contract (humanclap.outputs): --overwrite replaces a humanclap output only.
    if overwrite and out.is_file() and out.stat().st_size > 0:
        check_own_output(out)
    if not resume and meta.is_file() and read_own_meta(meta) is None:  # resume: check_resume says why
        raise UsageError(
            f"-o {out}: {meta} exists and was not written by humanclap (not a score "
            "meta file); humanclap never replaces a file it did not create: choose "
            "another output path"
        )


def read_own_meta(meta_file: Path) -> dict[str, Any] | None:
    """The meta file ``score``/``merge`` wrote, or None when ``meta_file`` is not one."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("manifest"), dict)
        or not isinstance(meta.get("model"), dict)
        or not isinstance(meta["manifest"].get("columns"), list)
    ):
        return None
    return meta


def check_own_output(output: Path) -> None:
    """Refuse to replace ``output`` unless it is provably a humanclap ``score``/``merge``
    output: its meta file is beside it and its first line is the header (CSV) or a row
    (JSONL) that those commands write for the recorded columns."""
    meta = read_own_meta(meta_path(output))
    refuse = (
        f"-o {output} exists and was not written by humanclap score or merge (%s); "
        "--overwrite replaces only humanclap's own output, never a file it did not create: "
        "choose another output path, or move that file away yourself"
    )
    if meta is None:
        raise UsageError(refuse % f"no humanclap {meta_path(output).name} beside it")
    try:
        with open(output, encoding="utf-8", newline="") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        first = ""
    columns = [str(c) for c in meta["manifest"]["columns"]]
    ours = FORMATS[output_format(output)].first_line_is_ours(first, columns)
    if not ours:
        raise UsageError(refuse % "its first line is not what humanclap score writes")


def make_parent(output: Path) -> None:
    """Create the output's folder (after :func:`check_output`), as a usage error on failure."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"-o {output}: cannot create the folder {output.parent} ({exc.strerror or exc}); choose another output path"
        ) from None


def model_record(scorer: Scorer) -> dict[str, Any]:
    """What of a scorer decides its numbers: weights (revision), dtype, preprocessing."""
    info = scorer.info.as_dict()
    # through JSON so that it compares equal to what a meta file reads back (tuples -> lists)
    return json.loads(
        json.dumps(
            json_safe({"revision": info["revision"], "dtype": scorer.dtype, "preprocessing": info["preprocessing"]})
        )
    )


def result_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The result identity of a score output, from its meta file: what must be equal for
    two outputs' rows to be mixed (``--resume``, ``merge``). Missing fields are None."""
    manifest = meta.get("manifest") if isinstance(meta.get("manifest"), dict) else {}
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    return {
        "model": {
            "revision": model.get("revision"),
            "dtype": meta.get("dtype"),
            "preprocessing": model.get("preprocessing"),
        },
        "data": {
            "columns": manifest.get("columns"),
            "sha256": manifest.get("sha256"),
            "audio_root": manifest.get("audio_root"),
        },
    }


def _get(meta: Any, meta_file: Path, *keys: str) -> Any:
    value = meta
    for i, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise UsageError(
                f"cannot resume: {meta_file} lacks '{'.'.join(keys[: i + 1])}' (it was "
                "not written by this version of humanclap score, or was edited), so it "
                f"cannot tell which model and manifest made the rows; {OVERWRITE_HINT}"
            )
        value = value[key]
    return value


def check_resume(
    output: Path,
    columns: list[str],
    fingerprint: str,
    scorer: Scorer | None = None,
    audio_root: str | Path | None = None,
) -> None:
    """Refuse ``--resume`` unless ``OUT.meta.json`` shows the same manifest (columns and
    fingerprint), the same resolved audio root (when ``audio_root`` is given) and, when
    ``scorer`` is given, the same model. Nothing to check when OUT is missing or empty: the
    run simply starts from the first row."""
    if not output.is_file() or output.stat().st_size == 0:
        return
    meta_file = meta_path(output)
    if not meta_file.is_file():
        raise UsageError(
            f"cannot resume: {meta_file} is missing, so the rows in {output} may come "
            f"from another model; {OVERWRITE_HINT}"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"cannot resume: {meta_file} is not readable JSON ({exc}), so it cannot "
            f"tell which model and manifest made {output}; {OVERWRITE_HINT}"
        ) from None
    old_columns = _get(meta, meta_file, "manifest", "columns")
    old_fingerprint = _get(meta, meta_file, "manifest", "sha256")
    if old_columns != list(columns):
        gained = [c for c in columns if c not in old_columns]
        lost = [c for c in old_columns if c not in columns]
        change = (
            "; ".join(x for x in (f"gained {gained}" if gained else "", f"lost {lost}" if lost else "") if x)
            or "reordered"
        )
        raise UsageError(
            f"cannot resume: the manifest's columns differ from those {output} was "
            f"scored from ({change}: now {list(columns)}, then {old_columns}); resume "
            f"with the original manifest, or {OVERWRITE_HINT}"
        )
    if old_fingerprint != fingerprint:
        raise UsageError(
            f"cannot resume: the manifest's rows are not those {output} was scored "
            f"from (fingerprint {fingerprint[:12]}, recorded {str(old_fingerprint)[:12]} "
            f"in {meta_file}); resume with the original manifest, or {OVERWRITE_HINT}"
        )
    if audio_root is not None:
        then = result_identity(meta)["data"]["audio_root"]
        now = str(Path(audio_root).resolve())
        if then != now:
            raise UsageError(
                f"cannot resume: {output} was scored with the audio root "
                f"{then or '(not recorded by the humanclap that wrote it)'}, this run "
                f"reads the audio under {now}: the rows would come from two folders; "
                f"pass the same --audio-root, or {OVERWRITE_HINT}"
            )
    if scorer is None:
        return
    old = {
        "revision": _get(meta, meta_file, "model", "revision"),
        "dtype": _get(meta, meta_file, "dtype"),
        "preprocessing": _get(meta, meta_file, "model", "preprocessing"),
    }
    new = model_record(scorer)
    if (old["revision"], old["dtype"]) != (new["revision"], new["dtype"]):
        raise UsageError(
            f"cannot resume: {output} was scored with revision {old['revision']} "
            f"({old['dtype']}), not {new['revision']} ({new['dtype']}); drop --resume "
            "and pass --overwrite to start over, or use another -o"
        )
    if old["preprocessing"] != new["preprocessing"]:
        raise UsageError(
            f"cannot resume: {output} was scored with other preprocessing "
            f"({old['preprocessing']}, now {new['preprocessing']}); drop --resume and "
            "pass --overwrite to start over, or use another -o"
        )
