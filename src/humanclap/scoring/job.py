"""The ``humanclap score`` job: manifest in, one scored row out per input row.

The embedding work is the :class:`~humanclap.scoring.engine.EmbeddingEngine`'s (each
unique text and file once, cache, background decoding, and the model's forward shape);
this module adds the rows: scan the manifest once (columns, count, fingerprint), check the
output may be written (:mod:`~humanclap.scoring.output_guard`), then stream the rows again
in steps of ``batch_size`` rows, embed each step's texts and files, write its rows in input
order, and keep ``OUT.meta.json`` beside the output.

Memory is bounded by the batches in flight, not by the number of rows: the manifest is
streamed, texts live in an LRU of ``TEXT_LRU`` embeddings (backed by ``--cache``), audio
embeddings in an LRU of ``AUDIO_LRU`` (a file repeated within that window is embedded once;
one repeated further apart is embedded again, unless ``--cache`` is on), and the summary is
a running (Welford) mean and variance. Every embedding has the same bits whatever else is
embedded with it (fixed forward shapes), so none of this changes a score. A bad row (missing/corrupt file, NaN
samples, empty text, a JSONL row without ``audio``, a NaN embedding) gets an ``error`` and
the job goes on. A failed write (full disk, I/O error) stops the job as a
:class:`~humanclap.errors.UsageError` that says how many rows were kept.
"""

from __future__ import annotations

import errno
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from humanclap.defaults import MAX_BATCH_SIZE
from humanclap.errors import UsageError
from humanclap.io import resolve_path, write_json
from humanclap.outputs import file_lock_path, output_lock
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.engine import EmbeddingEngine, open_cache
from humanclap.scoring.output_guard import (check_output, check_resume, make_parent, meta_path,
                                            run_metadata)
from humanclap.scoring.parts import part_range, part_record
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import checked_cosine, open_output, row_problem, scan_manifest

# Embeddings kept in memory: enough for every text/file of the batches in flight many
# times over (MAX_BATCH_SIZE rows a step), small next to a model (16 Ki x 512 float32 =
# 32 MiB at LAION's width). A text or file used again after eviction costs a cache lookup
# (--cache) or a new forward pass, never a different number.
TEXT_LRU = 16384
# Rows whose texts are embedded together (whole TEXT_CHUNK passes instead of one per step).
TEXT_LOOKAHEAD = 256
AUDIO_LRU = 8192


class RunningStats:
    """Count, mean and sum of squared deviations of a stream of scores (Welford's
    algorithm): what the summary needs, in constant memory. ``append``/``extend``/``len``
    as on the list of scores it replaces."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, scores: Iterable[float] = ()):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.extend(scores)

    def append(self, score: float) -> None:
        self.n += 1
        delta = score - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (score - self.mean)

    def extend(self, scores: Iterable[float]) -> None:
        for x in scores:
            self.append(float(x))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"RunningStats(n={self.n}, mean={self.mean})"


@dataclass
class ScoreSummary:
    """What a run did; printed on stderr and returned to Python callers.

    ``scores`` is summarised as it comes (:class:`RunningStats`), never kept: a run of
    millions of rows needs no list of them (a list passed in is summarised)."""

    rows: int = 0
    scored: int = 0
    failed: int = 0
    resumed: int = 0
    scores: RunningStats = field(default_factory=RunningStats)
    seconds: float = 0.0
    model_id: str = ""
    revision: str = ""
    device: str = ""
    dtype: str = ""
    cache_hits: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.scores, RunningStats):
            self.scores = RunningStats(self.scores)

    def mean_ci(self) -> tuple[float, float, float]:
        """Mean CLAPScore and its 95% t-interval over scored rows (NaN when none).

        The interval is clipped to [0, 1], CLAPScore's range: with few rows or many zeros
        the t-interval reaches below 0, which no mean CLAPScore can be."""
        n = self.scores.n
        if n == 0:
            return math.nan, math.nan, math.nan
        mean = self.scores.mean
        if n < 2:
            return mean, math.nan, math.nan
        from scipy.stats import t

        std = math.sqrt(max(self.scores.m2, 0.0) / (n - 1))
        half = float(t.ppf(0.975, n - 1) * std / math.sqrt(n))
        return mean, max(mean - half, 0.0), min(mean + half, 1.0)

    def text(self) -> str:
        mean, lo, hi = self.mean_ci()
        n = len(self.scores)
        if n == 0:
            mean_line = "mean CLAPScore: none (no row scored)"
        elif n == 1:  # no spread to estimate from one score: say so rather than print NaN
            mean_line = f"mean CLAPScore: {mean:.4f}  95% CI undefined for one scored row  (n=1)"
        else:
            mean_line = f"mean CLAPScore: {mean:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  (n={n})"
        lines = [
            f"rows: {self.rows}  scored: {self.scored}  failed: {self.failed}"
            + (f"  (resumed after {self.resumed})" if self.resumed else ""),
            mean_line,
            f"model: {self.model_id}  revision: {self.revision}",
            f"device: {self.device} ({self.dtype})  time: {self.seconds:.1f} s"
            + (f"  cache hits: {self.cache_hits}" if self.cache_hits else ""),
        ]
        return "\n".join(lines)

    def count(self, score: float | None) -> None:
        """Count one row: its CLAPScore, or None for a row with an error."""
        if score is None:
            self.failed += 1
        else:
            self.scored += 1
            self.scores.append(score)


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


def chunks(rows: Iterator[Any], first: int, size: int) -> Iterator[list[Any]]:
    """:func:`steps` over a stream: the items after the ``first`` done, in lists that end
    at multiples of ``size`` (counted from the start of the stream)."""
    i = first
    while True:
        step = list(islice(rows, (i // size + 1) * size - i))
        if not step:
            return
        yield step
        i += len(step)


RowSelector = Callable[[int], bool]


class ScoreJob:
    """Scores a manifest with one model; see module docstring.

    ``batch_size`` is how many rows are prepared (decoded ahead) and written per step; it
    never changes a score: the engine forwards clips in its own fixed shape. ``workers``:
    decoder processes (0: decode in this process: in one background thread on an
    accelerator, in turn with the forwards on a CPU)."""

    def __init__(self, scorer: Scorer, batch_size: int = 8, cache_dir: str | None = None,
                 workers: int = 0):
        check_batch_size(batch_size)
        if workers < 0:
            raise UsageError(f"--workers must be 0 (decode in the main process) or more, got {workers}")
        self.scorer = scorer
        self.batch_size = batch_size
        # No batch size for the engine's forward: its shape is its own, so that --batch-size
        # 1000 on 3 rows does not pad a forward to 1000 clips.
        self.engine = EmbeddingEngine(scorer, batch_size=batch_size,
                                      cache=open_cache(cache_dir, scorer) if cache_dir else None,
                                      text_capacity=max(TEXT_LRU, 4 * batch_size),
                                      audio_capacity=max(AUDIO_LRU, 4 * batch_size + 8 * workers),
                                      workers=workers)

    # -- the job -----------------------------------------------------------------------
    def run(self, manifest: str | Path, output: str | Path | None = None,
            audio_root: str | Path | None = None, resume: bool = False,
            progress: bool | None = None, overwrite: bool = False,
            select: RowSelector | None = None,
            part: tuple[int, int] | None = None) -> ScoreSummary:
        """Score every row of ``manifest`` into ``output`` (JSONL on stdout when None).

        An existing non-empty ``output`` is refused unless ``resume`` (keep its rows, after
        :func:`~humanclap.scoring.output_guard.check_resume`) or ``overwrite``.

        ``select(i)``: score only the manifest rows (0-based index ``i``) it accepts, e.g.
        ``lambda i: i % N == K`` for rank K of N; the output holds exactly those rows, in
        order, and the summary and ``OUT.meta.json`` counts cover them. The fingerprint is
        still the whole manifest's, so ``--resume`` checks the same input. It must be a
        pure function of ``i`` (a resumed run must select the same rows).

        ``part=(k, n)``: score only contiguous block ``k`` of ``n`` of the rows
        (:func:`~humanclap.scoring.parts.part_range`) into ``output``, a part file; its meta
        records the block and the whole manifest's fingerprint, for ``merge``."""
        start = time.perf_counter()
        scan = scan_manifest(manifest)
        columns, fingerprint = scan.columns, scan.fingerprint
        if part is not None:
            if select is not None:
                raise UsageError("pass either part or select, not both")
            block = part_range(scan.rows, *part)
            select = lambda i: block.start <= i < block.stop  # noqa: E731
        root = Path(audio_root) if audio_root else Path(manifest).resolve().parent
        n_rows = scan.rows if select is None else sum(1 for i in range(scan.rows) if select(i))
        out = None if output is None else Path(output)
        # Everything that can refuse the output runs before anything is opened for writing.
        check_output(out, manifest, resume, overwrite,
                     (None if row_problem(r) else str(resolve_path(r["audio"], root))
                      for r in scan.iter_rows()))  # lazy: read only when OUT already exists
        if out is None:
            return self._run(scan, manifest, None, root, resume, progress, select, part, n_rows, start)
        make_parent(out)
        # One run at a time per output (humanclap.outputs); another output is not held up.
        with output_lock(file_lock_path(out), f"-o {out}"):
            if resume:  # under the lock: what another run left is what this one continues
                check_resume(out, columns, fingerprint, self.scorer, root)
            return self._run(scan, manifest, out, root, resume, progress, select, part, n_rows, start)

    def _run(self, scan, manifest: str | Path, out: Path | None, root: Path, resume: bool,
             progress: bool | None, select: RowSelector | None, part: tuple[int, int] | None,
             n_rows: int, start: float) -> ScoreSummary:
        columns, fingerprint = scan.columns, scan.fingerprint
        summary = ScoreSummary(rows=n_rows, model_id=self.scorer.info.model_id,
                               revision=self.scorer.info.revision, device=str(self.scorer.device),
                               dtype=self.scorer.dtype)
        rows = self._selected(scan.iter_rows(), select)
        try:
            writer, done = open_output(out, (r for _, r in rows), columns, resume, summary.count) \
                if out is not None else open_output(None, (), columns, resume)
        except OSError as exc:  # e.g. permission denied, a symlink loop
            raise UsageError(f"cannot open -o {out} for writing: {exc.strerror or exc}; choose "
                             "another output path") from None
        summary.resumed = done
        # the manifest's own row count (a selection's is the summary's "rows")
        meta = run_metadata(self.scorer, manifest, columns, scan.rows, fingerprint,
                            root) if out else {}
        if part is not None and out is not None:
            meta["part"] = part_record(scan.rows, *part)
        kept = done  # rows known to be in the output file (for the message on failure)
        try:
            if out is not None:  # written first so that a killed run can be resumed safely
                write_run_metadata(out, meta, summary)
            for n in self._score_rows(rows, root, done, n_rows, writer, summary, progress):
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

    @staticmethod
    def _selected(rows: Iterator[dict[str, Any]], select: RowSelector | None
                  ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(manifest index, row)`` of the rows this job scores, as one shared iterator:
        resume consumes the rows done from it, scoring streams on from there."""
        return (ir for ir in enumerate(rows) if select is None or select(ir[0]))

    def _score_rows(self, rows: Iterator[tuple[int, dict[str, Any]]], root: Path, first: int,
                    total: int, writer, summary: ScoreSummary, progress: bool | None):
        """Score and write the rows after the ``first`` done; yields the rows in the file
        after each flush."""
        engine = self.engine
        from tqdm.auto import tqdm

        bar = tqdm(total=total - first, unit="row", desc="scoring", file=sys.stderr,
                   disable=not (sys.stderr.isatty() if progress is None else progress))

        def prepared() -> Iterator[tuple[tuple[int, list, list[str]], list[str]]]:
            # Runs ahead of the writing by the batches the engine decodes in advance. Rows
            # are read in blocks of about TEXT_LOOKAHEAD (whole steps); a block's texts ride
            # on its first step.
            block_size = self.batch_size * -(-TEXT_LOOKAHEAD // self.batch_size)
            written = first
            for block in chunks(rows, first, block_size):
                checked = [(row, row_problem(row)) for _, row in block]
                texts = [row["text"] for row, problem in checked if not problem]
                for step in chunks(iter(checked), written, self.batch_size):
                    items = [(row, problem, None if problem else str(resolve_path(row["audio"], root)))
                             for row, problem in step]
                    written += len(step)
                    yield (written, items, texts), [p for _, bad, p in items if not bad]
                    texts = []

        for written, items, texts in engine.embed_audio_stream(prepared()):
            # Texts before the step's rows: the look-ahead fills the text forward passes
            # (TEXT_CHUNK texts each) instead of one pass per step; the LRU keeps them
            # while they are used; a text's bits do not depend on the others.
            engine.embed_texts(texts)
            engine.embed_texts([row["text"] for row, bad, _ in items if not bad])  # evicted ones
            for row, problem, path in items:
                if problem:
                    cosine, error = None, problem
                else:
                    cosine, error = checked_cosine(*engine.cosine(path, row["text"]))
                writer.write(row, cosine, error)
                summary.count(None if error else float(clapscore(cosine)))
            writer.flush()
            bar.update(len(items))
            yield written
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
