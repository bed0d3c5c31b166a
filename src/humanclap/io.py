"""Files in and out, written once for the whole package.

* :func:`read_table`: a CSV or JSON Lines table (``.csv``; ``.jsonl``, ``.ndjson`` or
  ``.json`` holding one object per line) as rows of ``column -> value``. Strict: a row
  with more or fewer CSV fields than the header, a duplicate column name, a JSON line that
  is not an object, or a whole-file JSON array is refused with the file and line named,
  instead of being read into shifted columns.
* :func:`atomic_write` / :func:`atomic_write_text` / :func:`write_json` / :func:`atomic_dir`:
  every finished file appears whole or not at all (temporary name + ``os.replace``).
* :func:`resolve_path`: a path as written in a table, relative to the table's folder or
  an ``--audio-root``.
* :func:`json_safe`: numpy scalars and arrays to plain Python, non-finite floats to ``null``
  (``json.dumps`` would otherwise write a bare ``NaN``, which is not JSON).
* :class:`TableDigest`: a sha256 fingerprint of a table's columns and rows, fed row by row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humanclap.errors import UsageError

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

# The csv module refuses fields over 128 KiB by default; a long caption or a JSON cell must
# not reject a whole manifest. The limit is a C long: cap it where the platform's is smaller.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def table_format(path: str | Path, what: str = "manifest") -> str:
    """``"csv"`` or ``"jsonl"`` from a file name; :class:`UsageError` for anything else."""
    fmt = TABLE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"{what} {path} must end in .csv, .jsonl, .ndjson or .json (JSON Lines: one object per line)")
    return fmt


@dataclass
class Table:
    """Rows of a table, each ``column -> value`` (CSV: strings; JSONL: JSON values)."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)


def read_table(path: str | Path, what: str = "manifest") -> Table:
    """Read a whole CSV/JSONL table (see the module docstring); raises :class:`UsageError`."""
    path = Path(path)
    fmt = table_format(path, what)
    if not path.exists():
        raise UsageError(f"{what} {path} not found")
    if not path.is_file():
        raise UsageError(f"{what} {path} is not a file")
    columns: list[str] = []
    rows = []
    for row in iter_rows(path, fmt, columns, what):
        rows.append(row)
    return Table(path, columns, rows)


def iter_rows(path: Path, fmt: str, columns: list[str], what: str = "manifest") -> Iterator[dict[str, Any]]:
    """Yield the rows of a table one at a time; ``columns`` is filled as they are seen."""
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column.
        reader, newline = TABLE_READERS[fmt]
        with open(path, newline=newline, encoding="utf-8-sig") as f:
            yield from reader(f, path, columns, what)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _csv_rows(f, path: Path, columns: list[str], what: str) -> Iterator[dict[str, str]]:
    reader = csv.reader(f, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise UsageError(
                f"{what} {path}, line {reader.line_num}: duplicate column name(s) "
                f"{dupes}; each column "
                "needs a distinct name"
            )
        columns.extend(header)
        for fields in reader:
            if not fields:  # a blank line
                continue
            if len(fields) != len(header):
                raise UsageError(
                    f"{what} {path}, line {reader.line_num}: {len(fields)} fields where the header "
                    f"has {len(header)}; quote cells that contain commas (\"a, b\")"
                )
            yield dict(zip(header, fields))
    except csv.Error as exc:
        raise UsageError(f"{what} {path}, line {reader.line_num}: not valid CSV ({exc})") from None


def _jsonl_rows(f, path: Path, columns: list[str], what: str) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if lineno == 1 and line.lstrip().startswith("["):
                hint = ": the file looks like one JSON array; write one JSON object per line"
            raise UsageError(f"{what} {path}, line {lineno}: not valid JSON ({exc.msg}){hint}") from None
        if not isinstance(row, dict):
            kind = "a JSON array" if isinstance(row, list) else type(row).__name__
            raise UsageError(
                f"{what} {path}, line {lineno}: {kind} where a JSON object is "
                "expected (JSON Lines: one object per line)"
            )
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
        yield row


class TableDigest:
    """sha256 of a table's rows in order and of its column names, fed one row at a time.

    Streaming-friendly: a reader calls :meth:`add` as it yields rows, so a fingerprint never
    needs the whole table in memory. The digest covers each row's keys and values as read
    (CSV strings, JSON values), so a changed cell, a reordered, added or dropped row, or a
    renamed column all change it; how the file was spelled (quoting, spacing) does not.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.rows = 0

    def add(self, row: Mapping[str, Any]) -> None:
        # allow_nan: a JSONL NaN is part of the content, not something to refuse here;
        # default=str: the digest must never be the thing that fails on an odd value.
        line = json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)
        self._sha.update(line.encode("utf-8", "surrogatepass") + b"\n")
        self.rows += 1

    def hexdigest(self, columns: Sequence[str]) -> str:
        """The fingerprint; ``columns`` last because a JSONL table knows them only at its end."""
        sha = self._sha.copy()
        sha.update(b"columns:" + json.dumps(list(columns), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return sha.hexdigest()


# table format -> (row reader, the newline argument of open: the csv module parses line ends itself)
TABLE_READERS = {"csv": (_csv_rows, ""), "jsonl": (_jsonl_rows, None)}


def table_digest(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """:class:`TableDigest` of ``rows`` (any iterable, consumed once) and ``columns``."""
    digest = TableDigest()
    for row in rows:
        digest.add(row)
    return digest.hexdigest(columns)


def resolve_path(value: Any, root: str | Path) -> Path:
    """A path cell of a table as a :class:`Path`: ``~`` expanded, a relative path taken
    relative to ``root``. Not resolved: symlinks and ``..`` stay as written, so messages
    name the path the user wrote (call ``.resolve()`` where a canonical path is needed)."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else Path(root) / path


# -- writing -------------------------------------------------------------------------
def check_audio_root(audio_root: str | Path | None) -> None:
    """An ``--audio-root`` that is not a folder would fail every relative row as "file not
    found", blaming each clip for one wrong flag: refuse it once, before any work."""
    if audio_root is None:
        return
    root = Path(audio_root).expanduser()
    if not root.is_dir():
        what = "a file" if root.exists() else "missing"
        raise UsageError(
            f"--audio-root {audio_root} is {what}, not a folder; pass the folder that "
            "the manifest's relative audio paths start from"
        )


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (see :func:`json_safe`) atomically."""
    text = json.dumps(json_safe(data), indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


@contextmanager
def atomic_dir(final: Path):
    """Yield a fresh temporary folder beside ``final``; on success it replaces ``final``.

    Both the temporary and the swap name are unique to this call (``.NAME.tmp-PID-RANDOM``,
    ``.NAME.old-PID-RANDOM``): a user's ``NAME.old`` beside ``final`` is never touched.
    Whether ``final`` may be replaced at all is the caller's to decide (:mod:`humanclap.outputs`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_beside(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _unique_beside(final, "old")
    if final.exists():
        os.replace(final, old)  # a directory cannot be renamed onto a non-empty one
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _unique_beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy values made plain and NaN/inf floats made ``None``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return json_safe(tolist())
    return obj
