"""Row-aligned CSV/JSONL input and output for ``humanclap score``.

Input rows keep every column; output rows are the input row plus ``clapscore``,
``cosine`` and ``error``, in input order, appended batch by batch (a crash loses at most
the batch in flight). ``open_output(..., resume=True)`` keeps the complete rows already
in the file, cuts a half-written last line, and checks they belong to this manifest.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from humanclap.errors import UsageError
from humanclap.io import read_table
from humanclap.scoring.clapscore import clapscore

OUTPUT_COLUMNS = ("clapscore", "cosine", "error")


def read_manifest(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a CSV/JSONL manifest (:func:`humanclap.io.read_table`)
    with ``audio`` and ``text`` columns and none of the output columns."""
    table = read_table(path, "manifest")
    path, rows, columns = table.path, table.rows, table.columns
    missing = [c for c in ("audio", "text") if c not in columns]
    if missing:
        raise UsageError(f"manifest {path} lacks column(s) {', '.join(missing)}; "
                         f"it has: {', '.join(columns) or 'none'}")
    clash = [c for c in OUTPUT_COLUMNS if c in columns]
    if clash:
        raise UsageError(f"manifest {path} already has output column(s) {', '.join(clash)}; "
                         "rename them or pass the original manifest")
    if not rows:
        raise UsageError(f"manifest {path} has no rows")
    return rows, columns


def format_float(x: float | None) -> str:
    """Shortest text that round-trips the float32 score ("" for no score)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


class RowWriter:
    """Appends output rows as CSV or JSONL; flushes and fsyncs after every batch."""

    def __init__(self, stream: IO[str], fmt: str, columns: list[str], write_header: bool):
        self.stream, self.fmt = stream, fmt
        self.columns = columns + list(OUTPUT_COLUMNS)
        if fmt == "csv" and write_header:
            self._write_csv(self.columns)

    def _write_csv(self, values: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self.stream.write(buf.getvalue())

    def write(self, row: dict[str, Any], cosine: float | None, error: str) -> None:
        score = None if cosine is None else float(clapscore(cosine))
        if self.fmt == "csv":
            self._write_csv([_csv_cell(row.get(c, "")) for c in self.columns[:-3]]
                            + [format_float(score), format_float(cosine), error])
        else:
            out = dict(row)
            out["clapscore"] = None if score is None else float(format_float(score))
            out["cosine"] = None if cosine is None else float(format_float(cosine))
            out["error"] = error
            self.stream.write(json.dumps(out, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.stream.flush()
        if self.stream is not sys.stdout:
            os.fsync(self.stream.fileno())


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def output_format(path: str | Path | None) -> str:
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UsageError(f"output {path} must end in .csv or .jsonl")


def read_done_rows(path: Path, fmt: str) -> tuple[list[dict[str, Any]], int]:
    """Complete rows already in an output file and the byte length they occupy."""
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1  # a last line without newline was cut mid-write
    text = raw[:end].decode("utf-8")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    return rows, end


def open_output(path: str | Path | None, rows: list[dict[str, Any]], columns: list[str],
                resume: bool) -> tuple[RowWriter, list[dict[str, Any]]]:
    """Open the output (stdout when ``path`` is None); with ``resume``, return the rows done."""
    fmt = output_format(path)
    if path is None:
        if resume:
            raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
        return RowWriter(sys.stdout, fmt, columns, write_header=True), []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    if resume and path.is_file() and path.stat().st_size > 0:
        done, keep = read_done_rows(path, fmt)
        if len(done) > len(rows):
            raise UsageError(f"{path} has {len(done)} rows but the manifest only {len(rows)}: "
                             "it belongs to another manifest; drop --resume to start over")
        for i, (old, new) in enumerate(zip(done, rows)):
            if str(old.get("audio")) != str(new["audio"]) or str(old.get("text")) != str(new["text"]):
                raise UsageError(f"{path} row {i + 1} ({old.get('audio')!r}) does not match the "
                                 f"manifest ({new['audio']!r}); drop --resume to start over")
        with open(path, "r+b") as f:
            f.truncate(keep)
        stream = open(path, "a", encoding="utf-8", newline="")
        write_header = fmt == "csv" and keep == 0
    else:
        stream = open(path, "w", encoding="utf-8", newline="")
        write_header = True
    return RowWriter(stream, fmt, columns, write_header=write_header), done
