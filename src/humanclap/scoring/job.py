"""The ``humanclap score`` job: manifest in, one scored row out per input row.

The embedding work is the :class:`~humanclap.scoring.engine.EmbeddingEngine`'s (each
unique text and file once, cache, background decoding, and the model's forward shape);
this module adds the rows: read the manifest, check the output may be written
(:mod:`~humanclap.scoring.output_guard`), embed the texts, walk the rows in steps of
``batch_size`` rows, write each step's rows in input order once its files are embedded,
and keep ``OUT.meta.json`` beside the output. A bad row (missing/corrupt file, NaN
samples, empty text, a JSONL row without ``audio``, a NaN embedding) gets an ``error`` and
the job goes on. A failed write (full disk, I/O error) stops the job as a
:class:`~humanclap.errors.UsageError` that says how many rows were kept.
"""

from __future__ import annotations

import errno
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanclap.defaults import MAX_BATCH_SIZE
from humanclap.errors import UsageError
from humanclap.io import resolve_path, table_digest, write_json
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.engine import EmbeddingEngine, open_cache
from humanclap.scoring.output_guard import (check_output, check_resume, make_parent, meta_path,
                                            run_metadata)
from humanclap.scoring.parts import part_range, part_record
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import (checked_cosine, done_score, open_output, read_manifest,
                                    row_problem)


@dataclass
class ScoreSummary:
    """What a run did; printed on stderr and returned to Python callers."""

    rows: int = 0
    scored: int = 0
    failed: int = 0
    resumed: int = 0
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0
    model_id: str = ""
    revision: str = ""
    device: str = ""
    dtype: str = ""
    cache_hits: int = 0

    def mean_ci(self) -> tuple[float, float, float]:
        """Mean CLAPScore and its 95% t-interval over scored rows (NaN when none).

        The interval is clipped to [0, 1], CLAPScore's range: with few rows or many zeros
        the t-interval reaches below 0, which no mean CLAPScore can be."""
        n = len(self.scores)
        if n == 0:
            return math.nan, math.nan, math.nan
        mean = float(np.mean(self.scores))
        if n < 2:
            return mean, math.nan, math.nan
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * np.std(self.scores, ddof=1) / math.sqrt(n))
        return mean, max(mean - half, 0.0), min(mean + half, 1.0)

    def text(self) -> str:
        mean, lo, hi = self.mean_ci()
        lines = [
            f"rows: {self.rows}  scored: {self.scored}  failed: {self.failed}"
            + (f"  (resumed after {self.resumed})" if self.resumed else ""),
            f"mean CLAPScore: {mean:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  (n={len(self.scores)})",
            f"model: {self.model_id}  revision: {self.revision}",
            f"device: {self.device} ({self.dtype})  time: {self.seconds:.1f} s"
            + (f"  cache hits: {self.cache_hits}" if self.cache_hits else ""),
        ]
        return "\n".join(lines)


def check_batch_size(batch_size: int) -> None:
    """``--batch-size`` is rows per step: at least 1, at most :data:`MAX_BATCH_SIZE`."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (rows prepared and written per step), "
                         f"got {batch_size}")
    if batch_size > MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be at most {MAX_BATCH_SIZE} (rows prepared and written "
                         f"per step; a forward pass has a fixed internal size), got {batch_size}")


def steps(first: int, n: int, size: int) -> list[range]:
    """Rows ``first..n`` in steps aligned to multiples of ``size``: a resumed run walks the
    same steps as an uninterrupted one from its first full step on."""
    out, i = [], first
    while i < n:
        end = min(n, (i // size + 1) * size)
        out.append(range(i, end))
        i = end
    return out


class ScoreJob:
    """Scores a manifest with one model; see module docstring.

    ``batch_size`` is how many rows are prepared (decoded ahead) and written per step; it
    never changes a score: the engine forwards clips in its own fixed shape."""

    def __init__(self, scorer: Scorer, batch_size: int = 8, cache_dir: str | None = None):
        check_batch_size(batch_size)
        self.scorer = scorer
        self.batch_size = batch_size
        # No batch size for the engine: its forward shape is its own, so that --batch-size
        # 1000 on 3 rows does not pad a forward to 1000 clips.
        self.engine = EmbeddingEngine(scorer, cache=open_cache(cache_dir, scorer) if cache_dir else None)

    # -- the job -----------------------------------------------------------------------
    def run(self, manifest: str | Path, output: str | Path | None = None,
            audio_root: str | Path | None = None, resume: bool = False,
            progress: bool | None = None, overwrite: bool = False,
            part: tuple[int, int] | None = None) -> ScoreSummary:
        """Score every row of ``manifest`` into ``output`` (JSONL on stdout when None).

        An existing non-empty ``output`` is refused unless ``resume`` (keep its rows, after
        :func:`~humanclap.scoring.output_guard.check_resume`) or ``overwrite``.

        ``part=(k, n)``: score only contiguous block ``k`` of ``n`` of the rows
        (:func:`~humanclap.scoring.parts.part_range`) into ``output``, a part file; its meta
        records the block and the whole manifest's fingerprint, for ``merge``."""
        start = time.perf_counter()
        rows, columns = read_manifest(manifest)
        fingerprint = table_digest(columns, rows)  # of the whole manifest, also for a part
        n_manifest = len(rows)
        if part is not None:
            block = part_range(n_manifest, *part)
            rows = rows[block.start:block.stop]
        root = Path(audio_root) if audio_root else Path(manifest).resolve().parent
        problems = [row_problem(r) for r in rows]
        paths = [None if bad else str(resolve_path(r["audio"], root)) for r, bad in zip(rows, problems)]
        out = None if output is None else Path(output)
        # Everything that can refuse the output runs before anything is opened for writing.
        check_output(out, manifest, resume, overwrite, paths)
        if resume and out is not None:
            check_resume(out, columns, fingerprint, self.scorer)
        if out is not None:
            make_parent(out)
        try:
            writer, done = open_output(out, rows, columns, resume)
        except OSError as exc:  # e.g. permission denied, a symlink loop
            raise UsageError(f"cannot open -o {out} for writing: {exc.strerror or exc}; choose "
                             "another output path") from None
        summary = ScoreSummary(rows=len(rows), resumed=len(done), model_id=self.scorer.info.model_id,
                               revision=self.scorer.info.revision, device=str(self.scorer.device),
                               dtype=self.scorer.dtype)
        meta = run_metadata(self.scorer, manifest, columns, n_manifest, fingerprint) if out else {}
        if part is not None and out is not None:
            meta["part"] = part_record(n_manifest, *part)
        kept = len(done)  # rows known to be in the output file (for the message on failure)
        try:
            if out is not None:  # written first so that a killed run can be resumed safely
                write_run_metadata(out, meta, summary)
            for i, old in enumerate(done):  # the summary covers the whole output file
                score = done_score(out, i, old)
                if score is None:
                    summary.failed += 1
                else:
                    summary.scored += 1
                    summary.scores.append(score)
            for n in self._score_rows(rows, paths, problems, len(done), writer, summary, progress):
                kept = n
            if self.engine.cache:
                summary.cache_hits = self.engine.cache.hits
            # before the final meta write, as always: its first scipy import is not scoring time
            summary.seconds = time.perf_counter() - start
            if out is not None:
                writer.stream.close()
                write_run_metadata(out, meta, summary)
        except BrokenPipeError:
            raise  # a reader that went away (`| head`): the CLI's, not a write error
        except OSError as exc:
            raise write_failed(out, exc, kept) from None
        finally:
            if out is not None and not writer.stream.closed:
                try:
                    writer.stream.close()
                except OSError:
                    pass  # the buffered rest of a failed write fails again: already reported
        return summary

    def _score_rows(self, rows: list[dict[str, Any]], paths: list[str | None], problems: list[str],
                    first: int, writer, summary: ScoreSummary, progress: bool | None):
        """Score and write rows ``first..``; yields the rows in the file after each flush."""
        engine = self.engine
        # Texts of *all* usable rows, done or not: text batches are then the same in a
        # resumed run as in an uninterrupted one, so the resumed file is byte-identical.
        engine.embed_texts([r["text"] for r, bad in zip(rows, problems) if not bad])
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows) - first, unit="row", desc="scoring", file=sys.stderr,
                   disable=not (sys.stderr.isatty() if progress is None else progress))
        todo = steps(first, len(rows), self.batch_size)
        for b in engine.embed_audio_batches([[paths[i] for i in step if paths[i]] for step in todo]):
            for i in todo[b]:
                if problems[i]:
                    cosine, error = None, problems[i]
                else:
                    cosine, error = checked_cosine(*engine.cosine(paths[i], rows[i]["text"]))
                writer.write(rows[i], cosine, error)
                if error:
                    summary.failed += 1
                else:
                    summary.scored += 1
                    summary.scores.append(float(clapscore(cosine)))
            writer.flush()
            bar.update(len(todo[b]))
            yield todo[b].stop
        bar.close()


def write_failed(output: Path | None, exc: OSError, kept: int) -> UsageError:
    """The error for a failed write: what failed, how many rows are safe, what to do."""
    reason = exc.strerror or str(exc)
    if output is None:
        return UsageError(f"cannot write to standard output: {reason}")
    todo = "free space" if exc.errno == errno.ENOSPC else "fix that"
    return UsageError(f"cannot write {output}: {reason}; the {kept} rows written so far are kept; "
                      f"{todo} and rerun with --resume")


def write_run_metadata(output: Path, meta: dict[str, Any], summary: ScoreSummary) -> None:
    """``OUT.meta.json`` beside the output: which model, settings and manifest made these
    scores (what ``--resume`` checks), and the counts so far."""
    mean, lo, hi = summary.mean_ci()
    meta = {**meta, "rows": summary.rows, "scored": summary.scored, "failed": summary.failed,
            "mean_clapscore": mean, "mean_clapscore_ci95": [lo, hi],
            "note": "clapscore = max(cosine, 0); scoring is deterministic (no seed involved); "
                    "the CI is clipped to [0, 1]"}
    # Strict JSON: an undefined mean (no row scored yet, or one: no interval) is null.
    write_json(meta_path(output), meta)
