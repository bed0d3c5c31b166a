"""Row-aligned CSV/JSONL input and output for ``humanclap score``.

Input rows keep every column; output rows are the input row plus ``clapscore``,
``cosine`` and ``error``, in input order, appended batch by batch (a crash loses at most
the batch in flight). ``open_output(..., resume=True)`` keeps the complete records already
in the file, cuts a half-written last record, and checks they belong to this manifest.

Every number written is finite: a row whose cosine is NaN/inf gets an ``error`` instead
(:func:`checked_cosine`), and JSONL rows go through :func:`humanclap.io.json_safe`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from humanclap.errors import UsageError
from humanclap.io import TableDigest, iter_rows, json_safe, read_table, table_format
from humanclap.scoring.clapscore import clapscore

OUTPUT_COLUMNS = ("clapscore", "cosine", "error")
RERUN = "rerun with --overwrite to start over"


def read_manifest(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a CSV/JSONL manifest (:func:`humanclap.io.read_table`)
    with ``audio`` and ``text`` columns and none of the output columns."""
    table = read_table(path, "manifest")
    _check_columns(table.path, table.columns, len(table.rows))
    return table.rows, table.columns


@dataclass
class ManifestScan:
    """What one streaming pass over a manifest found: its columns (for JSONL, every key in
    first-seen order), the number of rows and the resume fingerprint
    (:class:`humanclap.io.TableDigest`, equal to ``table_digest(columns, rows)``)."""

    path: Path
    fmt: str
    columns: list[str]
    rows: int
    fingerprint: str

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """The rows again, one at a time (the file is read anew: nothing is kept)."""
        return iter_rows(self.path, self.fmt, [], "manifest")


def scan_manifest(path: str | Path) -> ManifestScan:
    """:func:`read_manifest`'s checks in one streaming pass, in memory bounded by one row:
    the same errors, and the fingerprint computed on the way."""
    path = Path(path)
    fmt = table_format(path, "manifest")
    if not path.exists():
        raise UsageError(f"manifest {path} not found")
    if not path.is_file():
        raise UsageError(f"manifest {path} is not a file")
    columns: list[str] = []
    digest = TableDigest()
    for row in iter_rows(path, fmt, columns, "manifest"):
        digest.add(row)
    _check_columns(path, columns, digest.rows)
    return ManifestScan(path, fmt, columns, digest.rows, digest.hexdigest(columns))


def _check_columns(path: Path, columns: list[str], rows: int) -> None:
    missing = [c for c in ("audio", "text") if c not in columns]
    if missing:
        raise UsageError(
            f"manifest {path} lacks column(s) {', '.join(missing)}; it has: {', '.join(columns) or 'none'}"
        )
    clash = [c for c in OUTPUT_COLUMNS if c in columns]
    if clash:
        raise UsageError(
            f"manifest {path} already has output column(s) {', '.join(clash)}; "
            "rename them or pass the original manifest"
        )
    if not rows:
        raise UsageError(f"manifest {path} has no rows")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN")
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def row_problem(row: dict[str, Any]) -> str:
    """Why this row cannot be scored at all ("" when it can): a JSONL row may lack a field or
    hold a list/number/null where a path or text belongs. Never stringified and scored: a
    score for ``"['a dog']"`` or ``"None"`` would be a wrong number with exit 0."""
    for key in ("audio", "text"):
        if key not in row:
            return f"no '{key}' field"
        if not isinstance(row[key], str):
            return f"'{key}' must be a string, got {_json_type(row[key])}"
    if not row["audio"].strip():
        return "empty 'audio' path"
    return ""


def checked_cosine(cosine: float | None, error: str) -> tuple[float | None, str]:
    """``(cosine, error)`` with a NaN/inf cosine turned into a row error: a metric writes
    finite numbers or none (a NaN embedding comes from the model or its dtype, not the row)."""
    if cosine is not None and not math.isfinite(cosine):
        return None, (
            f"non-finite embedding (cosine = {cosine}): the model gave NaN/inf for this "
            "audio or text; try --dtype fp32, else the checkpoint is broken"
        )
    return cosine, error


def format_float(x: float | None) -> str:
    """Shortest text that round-trips the float32 score ("" for no score)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""  # a JSONL null or NaN, as in JSONL output (null): no non-finite number
    if isinstance(value, (dict, list)):
        return json.dumps(json_safe(value), ensure_ascii=False)
    return str(value)


def _csv_row(row: dict[str, Any], columns: list[str], score: float | None, cosine: float | None, error: str) -> str:
    return _csv_line(
        [_csv_cell(row.get(c, "")) for c in columns[:-3]] + [format_float(score), format_float(cosine), error]
    )


def _jsonl_row(row: dict[str, Any], columns: list[str], score: float | None, cosine: float | None, error: str) -> str:
    out = dict(row)
    out["clapscore"] = None if score is None else float(format_float(score))
    out["cosine"] = None if cosine is None else float(format_float(cosine))
    out["error"] = error
    # json_safe: a pass-through NaN of a JSONL manifest becomes null, not bare NaN
    return json.dumps(json_safe(out), ensure_ascii=False, allow_nan=False) + "\n"


class RowWriter:
    """Appends output rows as CSV or JSONL (:data:`FORMATS`); flushes and fsyncs after every batch."""

    def __init__(self, stream: IO[str], fmt: str, columns: list[str], write_header: bool):
        self.stream, self.fmt, self.format = stream, fmt, FORMATS[fmt]
        self.columns = columns + list(OUTPUT_COLUMNS)
        if write_header:
            self.stream.write(self.format.header(self.columns))

    def write(self, row: dict[str, Any], cosine: float | None, error: str, score: float | None = None) -> None:
        """One output row; ``score``: the pair's clapscore when the scorer computed it
        (:meth:`~humanclap.scoring.engine.EmbeddingEngine.score`: a score head's), else
        CLAPScore = max(cosine, 0)."""
        cosine, error = checked_cosine(cosine, error)  # the job did this; never write NaN/inf
        if cosine is None:
            score = None
        elif score is None:
            score = float(clapscore(cosine))
        self.stream.write(self.format.row(row, self.columns, score, cosine, error))

    def flush(self) -> None:
        self.stream.flush()
        if self.stream is not sys.stdout:
            try:
                os.fsync(self.stream.fileno())
            except OSError as exc:  # a pipe or device (-o /dev/...) cannot be synced: not an error
                if exc.errno not in (22, 95):  # EINVAL, EOPNOTSUPP
                    raise


def csv_header(columns: list[str]) -> str:
    """The header line ``humanclap score`` writes for these input columns."""
    buf = io.StringIO()
    RowWriter(buf, "csv", columns, write_header=True)
    return buf.getvalue()


# output file suffix -> format
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def output_format(path: str | Path | None) -> str:
    if path is None:
        return "jsonl"
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"output {path} must end in .csv or .jsonl")
    return fmt


# -- resume: the complete records already in an output file ---------------------------
# Streamed: a resumed run reads the rows already written one at a time (to check them and
# count them into the summary), so resuming 2 M rows needs no more memory than scoring.
def _lines(f: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """The lines of a binary file, split after each ``\\n`` only (a ``\\r`` inside a quoted
    cell is data: binary iteration splits on ``\\n`` alone), each with its end offset."""
    pos = 0
    for line in f:
        pos += len(line)
        yield line, pos


def _csv_records(path: Path, f: IO[bytes]) -> Iterator[tuple[list[str], int]]:
    """The records that the csv module parses completely and that end with a newline
    outside quotes, each with the byte offset after it.

    A cut inside a quoted multi-line cell leaves lines that end with ``\\n`` but belong to
    an open record: the strict reader then fails at the end of the data, and everything
    from that record's first line on is dropped. A failure *before* the end is not a cut
    but a file that was not written by ``humanclap score``: refused."""
    lines = _lines(f)
    last: list[tuple[bytes, int]] = []

    def feed() -> Iterator[str]:
        for chunk, end in lines:
            last[:] = [(chunk, end)]
            complete = chunk.endswith(b"\n")
            # only the last line can be cut inside a UTF-8 sequence; it is dropped anyway
            yield chunk.decode("utf-8", "strict" if complete else "replace")

    reader = csv.reader(feed(), strict=True)
    try:
        for record in reader:  # the reader pulls exactly the lines of one record, no more
            chunk, end = last[0]
            if not chunk.endswith(b"\n"):
                return  # the last record lacks its newline: its last cell may be cut short
            yield record, end
    except (csv.Error, UnicodeDecodeError) as exc:
        if next(lines, None) is not None:  # more data after the failure: not a cut
            raise UsageError(
                f"cannot resume: {path}, line {reader.line_num}, is not CSV written by humanclap score ({exc}); {RERUN}"
            ) from None


def _jsonl_records(path: Path, f: IO[bytes]) -> Iterator[tuple[dict[str, Any], int]]:
    for lineno, (chunk, end) in enumerate(_lines(f), 1):
        if not chunk.endswith(b"\n"):
            return  # a last line without newline was cut mid-write
        try:
            row = json.loads(chunk.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot resume: {path}, line {lineno}, is not valid JSON ({exc}); {RERUN}") from None
        if not isinstance(row, dict) or not all(k in row for k in OUTPUT_COLUMNS):
            raise UsageError(
                f"cannot resume: {path}, line {lineno}, is not an output row of "
                f"humanclap score (no {'/'.join(OUTPUT_COLUMNS)}); {RERUN}"
            )
        yield row, end


def _csv_done_rows(path: Path, f: IO[bytes], columns: list[str]) -> Iterator[tuple[dict[str, Any] | None, int]]:
    records = _csv_records(path, f)
    first = next(records, None)
    if first is None:
        return
    header, expected = first[0], columns + list(OUTPUT_COLUMNS)
    if header != expected:
        raise UsageError(f"cannot resume: {path} has columns {header}, but this manifest gives {expected}; {RERUN}")
    yield None, first[1]  # the header's end: where appending starts with no rows
    for i, (rec, end) in enumerate(records, 2):
        if len(rec) != len(header):
            raise UsageError(
                f"cannot resume: {path}, record {i}, has {len(rec)} fields where the header has {len(header)}; {RERUN}"
            )
        yield dict(zip(header, rec)), end


def _jsonl_done_rows(path: Path, f: IO[bytes], columns: list[str]) -> Iterator[tuple[dict[str, Any] | None, int]]:
    return _jsonl_records(path, f)


def iter_done_rows(path: Path, fmt: str, columns: list[str]) -> Iterator[tuple[dict[str, Any], int]]:
    """Complete rows already in an output file, each with the byte offset after it (the
    header alone yields nothing; an incomplete header: nothing, the file starts again)."""
    with open(path, "rb") as f:
        yield from FORMATS[fmt].done_rows(path, f, columns)


def read_done_rows(path: Path, fmt: str, columns: list[str]) -> tuple[list[dict[str, Any]], int]:
    """Complete rows already in an output file and the byte length they occupy (the
    in-memory form of :func:`iter_done_rows`)."""
    rows, keep = [], 0
    for row, keep in iter_done_rows(path, fmt, columns):  # noqa: B007  (keep: after the loop)
        if row is not None:
            rows.append(row)
    return rows, keep


def row_matches(old: dict[str, Any], new: dict[str, Any], fmt: str, columns: list[str]) -> bool:
    """Whether output row ``old`` (as read back) was scored from manifest row ``new``: its
    input columns are the manifest row's, as written (``--resume`` and ``merge`` check it)."""
    mine = {k: v for k, v in old.items() if k not in OUTPUT_COLUMNS}
    return mine == _as_written(new, fmt, columns)


def _as_written(row: dict[str, Any], fmt: str, columns: list[str]) -> dict[str, Any]:
    """The input columns of ``row`` as they read back from an output file."""
    return FORMATS[fmt].as_written(row, columns)


def _csv_as_written(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {c: _csv_cell(row.get(c, "")) for c in columns}


def _jsonl_as_written(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return json.loads(json.dumps(json_safe(row), ensure_ascii=False))


def _csv_first_line_is_ours(first: str, columns: list[str]) -> bool:
    return first == csv_header(columns)


def _jsonl_first_line_is_ours(first: str, columns: list[str]) -> bool:
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and all(c in row for c in OUTPUT_COLUMNS)


@dataclass(frozen=True)
class RowFormat:
    """How one output format writes rows and reads them back: the one place that knows."""

    header: Callable[[list[str]], str]  # all output columns -> the text before the first row
    row: Callable[..., str]  # (row, columns, score, cosine, error) -> one record, newline included
    done_rows: Callable[..., Iterator[tuple[dict[str, Any] | None, int]]]  # (path, binary file, columns)
    as_written: Callable[[dict[str, Any], list[str]], dict[str, Any]]  # input columns as read back
    first_line_is_ours: Callable[[str, list[str]], bool]  # a file's first line is what score writes


FORMATS = {
    "csv": RowFormat(_csv_line, _csv_row, _csv_done_rows, _csv_as_written, _csv_first_line_is_ours),
    "jsonl": RowFormat(lambda columns: "", _jsonl_row, _jsonl_done_rows, _jsonl_as_written, _jsonl_first_line_is_ours),
}


def done_score(path: Path, index: int, old: dict[str, Any]) -> float | None:
    """The CLAPScore of a row already in the output (None for a row with an error)."""
    if old.get("error"):
        return None
    try:
        score = float(old.get("clapscore"))
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):  # e.g. an empty score and no error, as old versions wrote
        raise UsageError(f"cannot resume: {path} row {index + 1} has neither a score nor an error; {RERUN}")
    return score


def open_output(
    path: str | Path | None, rows: Iterable[dict[str, Any]], columns: list[str], resume: bool, on_done=None
) -> tuple[RowWriter, int]:
    """Open the output (stdout when ``path`` is None); with ``resume``, check the rows done
    against the manifest and return how many there are.

    ``rows``: the manifest rows this output holds, in order (an iterator is consumed only
    as far as the rows done, so the caller streams on from there). ``on_done(score)`` is
    called with each done row's CLAPScore (None for an error row), for the summary. The
    checks that ``path`` may be written at all are :func:`output_guard.check_output`'s."""
    fmt = output_format(path)
    if path is None:
        if resume:
            raise UsageError("--resume needs -o OUT: there is no file to resume on stdout")
        return RowWriter(sys.stdout, fmt, columns, write_header=True), 0
    path = Path(path)
    done = 0
    if resume and path.is_file() and path.stat().st_size > 0:
        keep = 0
        source = iter(rows)
        for old, keep in iter_done_rows(path, fmt, columns):  # noqa: B007  (keep: after the loop)
            if old is None:
                continue  # the CSV header
            new = next(source, None)
            if new is None:
                raise UsageError(
                    f"{path} has more rows than the manifest ({done} + more): it "
                    "belongs to another manifest; drop --resume to start over"
                )
            if not row_matches(old, new, fmt, columns):
                raise UsageError(
                    f"{path} row {done + 1} ({old.get('audio')!r}) does not match the "
                    f"manifest ({new.get('audio')!r}); drop --resume to start over"
                )
            score = done_score(path, done, old)
            if on_done is not None:
                on_done(score)
            done += 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        stream = open(path, "a", encoding="utf-8", newline="")
        write_header = keep == 0  # a JSONL file has no header
    else:
        stream = open(path, "w", encoding="utf-8", newline="")
        write_header = True
    return RowWriter(stream, fmt, columns, write_header=write_header), done
