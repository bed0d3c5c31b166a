"""Split one score job into parts and join the parts again.

Under ``torchrun`` each rank, and with ``--shard K/N`` each independent job (a SLURM array
task), scores one *contiguous block of rows* of the manifest: :func:`part_range` gives the
block, :func:`part_path` the part's file (``scores.part-K-of-N.csv`` beside
``scores.csv``, with its own ``.meta.json`` like any score output, so a part resumes on its
own). Contiguous blocks make the merge a concatenation: the header once (CSV), then each
part's rows in order, which is byte for byte what one process writes, because no score
depends on the rows around it (the engine's forward shapes are fixed).

:func:`merge_parts` refuses (``UsageError``, exit 2) anything that would make the joined
file wrong: a missing part, a part of another manifest or model, an incomplete part (fewer
rows than its range; a killed job), overlapping parts. It streams the parts (bounded
memory) and writes ``OUT`` atomically, then ``OUT.meta.json`` with the summary of all rows.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from itertools import islice
from pathlib import Path
from typing import Any

from humanclap.errors import UsageError
from humanclap.io import atomic_write
from humanclap.outputs import describe_differences, file_lock_path, identity_differences, output_lock
from humanclap.scoring.output_guard import check_own_output, meta_path, result_identity
from humanclap.scoring.rows import (
    FORMATS,
    OUTPUT_COLUMNS,
    RERUN,
    iter_done_rows,
    output_format,
    row_matches,
    scan_manifest,
)
from humanclap.scoring.summary import ScoreRecord, ScoreSummary, write_run_metadata

PART_RE = re.compile(r"\.part-(\d+)-of-(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (SLURM: ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"--shard {text!r} not understood: write K/N, part K (from 0) of N, e.g. --shard 0/4")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or k >= n:
        raise UsageError(
            f"--shard {text}: K must be 0 to N-1 and N at least 1 (parts are numbered from 0), got K={k}, N={n}"
        )
    return k, n


def part_range(n_rows: int, k: int, n: int) -> range:
    """Rows of contiguous block ``k`` of ``n``: sizes differ by at most one row, every row in
    exactly one block, the blocks in row order (so that a merge is a concatenation)."""
    return range(k * n_rows // n, (k + 1) * n_rows // n)


def part_path(output: str | Path, k: int, n: int) -> Path:
    """``scores.csv`` -> ``scores.part-K-of-N.csv`` (same folder, same format)."""
    out = Path(output)
    return out.with_name(f"{out.stem}.part-{k}-of-{n}{out.suffix}")


def part_record(n_rows: int, k: int, n: int) -> dict[str, int]:
    """What a part's meta file says about the part (merge checks it against the others)."""
    block = part_range(n_rows, k, n)
    return {"index": k, "count": n, "first_row": block.start, "end_row": block.stop}


def find_parts(output: str | Path) -> list[Path]:
    """The part files of ``output`` in its folder, by name, sorted by (N, K)."""
    out = Path(output)
    found = []
    for path in out.parent.glob(f"{glob_escape(out.stem)}.part-*-of-*{glob_escape(out.suffix)}"):
        match = PART_RE.search(path.name[: len(path.name) - len(out.suffix)])
        if match and path.name == part_path(out, *map(int, match.groups())).name:
            found.append((int(match.group(2)), int(match.group(1)), path))
    return [p for _, _, p in sorted(found)]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _read_meta(part: Path) -> dict[str, Any]:
    meta_file = meta_path(part)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"cannot merge: {meta_file} is missing, so {part} cannot be checked (which "
            "manifest, model and rows made it); rerun that part"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot merge: {meta_file} is not readable JSON ({exc}); rerun that part") from None
    try:
        rec = meta["part"]
        meta["manifest"]["sha256"], meta["manifest"]["rows"], meta["model"]["revision"]
        span = (int(rec["index"]), int(rec["count"]), int(rec["first_row"]), int(rec["end_row"]))
    except (KeyError, TypeError, ValueError):
        raise UsageError(
            f"cannot merge: {meta_file} does not describe a part (no part/manifest/"
            "model record); was it written by humanclap score --shard or torchrun?"
        ) from None
    meta["_span"] = span
    return meta


def _identity(meta: dict[str, Any]) -> tuple[Any, ...]:
    return (meta["manifest"]["sha256"], meta["manifest"].get("columns"), meta["manifest"]["rows"])


def _model(meta: dict[str, Any]) -> tuple[Any, ...]:
    return (meta["model"]["revision"], meta.get("dtype"), meta["model"].get("preprocessing"))


def _scan(part: Path, fmt: str, header: str) -> tuple[int, list[float], int, int]:
    """Complete rows of a part file, their scores, failed rows, and the header's byte length.

    Streams the file. A record cut mid-write (no final newline, an open quote) is not
    counted: the part is then incomplete and merge says so."""
    with open(part, "rb") as fb:
        fb.seek(0, 2)
        size = fb.tell()
        fb.seek(max(size - 1, 0))
        cut = size > 0 and fb.read(1) != b"\n"
    with open(part, encoding="utf-8", newline="") as f:
        outcomes = OUTCOME_READERS[fmt](part, f, header, cut)
    scores = [s for s in outcomes if s is not None]
    return len(outcomes), scores, len(outcomes) - len(scores), len(header.encode("utf-8"))


def _csv_outcomes(part: Path, f, header: str, cut: bool) -> list[float | None]:
    """Per complete record: its score, None when it failed (``cut``: the file does not end
    with a newline, so its last record may be cut short)."""
    outcomes: list[float | None] = []
    first = f.readline()
    if first and first != header:
        raise UsageError(
            f"cannot merge: {part} has the header {first.strip()!r}, not "
            f"{header.strip()!r}; it is not a part of this output"
        )
    try:
        for rec in csv.reader(f, strict=True):
            outcomes.append(_outcome(dict(zip(OUTPUT_COLUMNS, rec[-3:]))))
    except csv.Error:
        cut = False  # the open record raised and was not counted
    if cut and outcomes:
        outcomes.pop()  # parsed, but its last cell may be cut short
    return outcomes


def _jsonl_outcomes(part: Path, f, header: str, cut: bool) -> list[float | None]:
    outcomes: list[float | None] = []
    for lineno, line in enumerate(f, 1):
        if not line.endswith("\n"):
            break  # cut mid-write: not counted
        try:
            outcomes.append(_outcome(json.loads(line)))
        except (json.JSONDecodeError, AttributeError):
            raise UsageError(
                f"cannot merge: {part}, line {lineno}, is not an output row of humanclap score; rerun that part"
            ) from None
    return outcomes


# output format -> the outcomes of a part file's complete records
OUTCOME_READERS = {"csv": _csv_outcomes, "jsonl": _jsonl_outcomes}


def _outcome(row: dict[str, Any]) -> float | None:
    if row.get("error"):
        return None
    try:
        return float(row.get("clapscore"))
    except (TypeError, ValueError):
        return float("nan")


def merge_parts(output: str | Path, parts: list[str | Path] | None = None, overwrite: bool = False) -> ScoreSummary:
    """Join the parts of ``output`` (``parts``, or those found by name) into ``output`` and
    its meta file; see the module docstring for what is refused."""
    out = Path(output)
    fmt = output_format(out)
    paths = [Path(p) for p in parts] if parts else find_parts(out)
    if not paths:
        raise UsageError(
            f"cannot merge: no parts of {out} found (looked for "
            f"{part_path(out, 'K', 'N')} in {out.parent}); pass --parts"
        )
    if not parts:
        splits = sorted({int(PART_RE.search(p.name[: len(p.name) - len(out.suffix)]).group(2)) for p in paths})
        if len(splits) > 1:
            raise UsageError(
                f"cannot merge: {out.parent} holds parts of {len(splits)} different "
                f"splits (N = {', '.join(map(str, splits))}); pass the parts of one "
                "with --parts, or remove the others"
            )
    for p in paths:
        if not p.is_file():
            raise UsageError(f"cannot merge: part {p} does not exist")
        if output_format(p) != fmt:
            raise UsageError(f"cannot merge: part {p} is not {fmt.upper()} like {out}")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; name the .csv or .jsonl file to write")
    metas = [_read_meta(p) for p in paths]
    # Input is sacred: OUT may be neither a part nor the manifest the parts were scored from
    # (recorded resolved, so it is found whatever folder the parts were scored from).
    for p in [*paths, Path(str(metas[0]["manifest"].get("path", "")))]:
        if out.exists() and p.is_file() and os.path.samefile(out, p):
            raise UsageError(f"cannot merge into {out}: it is {p}, an input of the merge; choose another OUT")
    if out.exists() and out.stat().st_size > 0:
        if not overwrite:
            raise UsageError(f"{out} exists and is not empty; pass --overwrite to replace it with the merged parts")
        check_own_output(out)  # --overwrite replaces humanclap's own output only
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(file_lock_path(out), str(out)):
        return _merge_checked(out, fmt, paths, metas)


def _merge_checked(out: Path, fmt: str, paths: list[Path], metas: list[dict[str, Any]]) -> ScoreSummary:
    order = sorted(range(len(paths)), key=lambda i: metas[i]["_span"][2:])
    paths, metas = [paths[i] for i in order], [metas[i] for i in order]
    ref = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        if _identity(m) != _identity(ref):
            raise UsageError(
                f"cannot merge: {p} was scored from another manifest than {paths[0]} "
                f"(fingerprint {str(m['manifest']['sha256'])[:12]} vs "
                f"{str(ref['manifest']['sha256'])[:12]}); rerun it on this manifest"
            )
        if _model(m) != _model(ref):
            raise UsageError(
                f"cannot merge: {p} was scored with another model than {paths[0]} "
                f"(revision {m['model']['revision']} {m.get('dtype')} vs "
                f"{ref['model']['revision']} {ref.get('dtype')}); rerun it with the "
                "same --model and --dtype"
            )
        diffs = identity_differences(result_identity(ref), result_identity(m))
        if diffs:
            raise UsageError(
                f"cannot merge: {p} and {paths[0]} are not results of the same inputs "
                f"({describe_differences(diffs)}); rerun it with the same settings"
            )
    total = int(ref["manifest"]["rows"])
    # Coverage: every row of the manifest in exactly one part.
    pos = 0
    for p, m in zip(paths, metas):
        _, _, lo, hi = m["_span"]
        if lo < pos:
            prev = paths[metas.index(m) - 1]
            raise UsageError(
                f"cannot merge: {p} (rows {lo}-{hi}) overlaps {prev} (rows up to {pos}); "
                "pass the parts of one split only (--parts)"
            )
        pos = max(pos, hi)
    if _covered(metas) != total:
        counts = {m["_span"][1] for m in metas}
        have = {m["_span"][0] for m in metas}
        missing = (
            [str(part_path(out, k, n)) for n in counts for k in range(n) if k not in have]
            if len(counts) == 1
            else [f"rows {a}-{b}" for a, b in _gaps(metas, total)]
        )
        raise UsageError(
            f"cannot merge: missing part(s) {', '.join(missing)} ({total - _covered(metas)} "
            f"of {total} rows have no part); run them (--shard K/N), then merge again"
        )
    check_rows_against_manifest(paths, metas, fmt)
    header = FORMATS[fmt].header([*ref["manifest"]["columns"], *OUTPUT_COLUMNS])
    record = ScoreRecord.from_json(ref)
    record.part = None  # the joined file holds every row
    summary = ScoreSummary(
        rows=total,
        model_id=str(ref["model"].get("model_id", "")),
        revision=str(ref["model"]["revision"]),
        device=str(ref.get("device", "")),
        dtype=str(ref.get("dtype", "")),
        protocol=record.protocol or "",
    )
    skips = []
    for p, m in zip(paths, metas):
        rows, scores, failed, skip = _scan(p, fmt, header)
        want = m["_span"][3] - m["_span"][2]
        if rows != want:
            raise UsageError(
                f"cannot merge: {p} is incomplete ({rows} of its {want} rows); finish "
                "it with the same command and --resume, then merge again"
            )
        summary.scored += len(scores)
        summary.failed += failed
        summary.scores.extend(scores)
        skips.append(skip)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as dst:
            dst.write(header.encode("utf-8"))
            for p, skip in zip(paths, skips):
                with open(p, "rb") as src:
                    src.seek(skip)
                    shutil.copyfileobj(src, dst, 1 << 20)

    try:
        meta_path(out).unlink(missing_ok=True)  # never an old meta beside new rows
        atomic_write(out, write)
        write_run_metadata(out, record, summary)
    except OSError as exc:
        raise UsageError(
            f"cannot write {out}: {exc.strerror or exc}; the parts are kept, fix that and merge again"
        ) from None
    return summary


def check_rows_against_manifest(paths: list[Path], metas: list[dict[str, Any]], fmt: str) -> None:
    """Every row of every part (in row order) must be the manifest row it claims to be, as
    ``--resume`` checks it: an edited, dropped, duplicated or foreign row is refused. Reads
    the manifest recorded in the parts' meta (a resolved path) and checks its fingerprint."""
    ref = metas[0]["manifest"]
    manifest = Path(str(ref.get("path", "")))
    if not manifest.is_file():
        raise UsageError(
            f"cannot merge: the manifest the parts were scored from, {manifest} (recorded "
            f"in {meta_path(paths[0])}), is not there, so the parts' rows cannot be "
            "checked against it; merge where that file can be read"
        )
    scan = scan_manifest(manifest)
    if scan.fingerprint != ref["sha256"]:
        raise UsageError(
            f"cannot merge: {manifest} has changed since the parts were scored "
            f"(fingerprint {scan.fingerprint[:12]} now, {str(ref['sha256'])[:12]} then); "
            "score the parts again"
        )
    columns = [str(c) for c in ref["columns"]]
    rows = scan.iter_rows()  # the parts tile the rows in order (checked before this)
    for part, meta in zip(paths, metas):
        first, end = meta["_span"][2:]
        block = islice(rows, end - first)
        done = 0
        for old, _ in _done_rows(part, fmt, columns):
            if old is None:
                continue  # the CSV header
            new = next(block, None)
            if new is None or not row_matches(old, new, fmt, columns):
                raise UsageError(
                    f"cannot merge: {part}, row {done + 1}, is not manifest row "
                    f"{first + done + 1} ({old.get('audio')!r}; the manifest has "
                    f"{(new or {}).get('audio')!r}): the part was edited or comes from "
                    "another manifest; score that part again"
                )
            done += 1
        for _ in block:  # an incomplete part: the rest of its rows (reported after this)
            pass


def _done_rows(part: Path, fmt: str, columns: list[str]):
    try:
        yield from iter_done_rows(part, fmt, columns)
    except UsageError as exc:  # worded for --resume: say it for merge
        raise UsageError(
            str(exc).replace("cannot resume:", "cannot merge:").replace(RERUN, "score that part again")
        ) from None


def _covered(metas: list[dict[str, Any]]) -> int:
    return sum(m["_span"][3] - m["_span"][2] for m in metas)


def _gaps(metas: list[dict[str, Any]], total: int) -> list[tuple[int, int]]:
    gaps, pos = [], 0
    for m in metas:
        lo, hi = m["_span"][2:]
        if lo > pos:
            gaps.append((pos, lo))
        pos = max(pos, hi)
    return gaps + ([(pos, total)] if pos < total else [])
