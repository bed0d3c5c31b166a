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
import sys
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from humanclap.errors import UsageError
from humanclap.io import resolve_path
from humanclap.outputs import file_lock_path, output_lock
from humanclap.scoring.engine import EmbeddingEngine, open_cache
from humanclap.scoring.inputs import check_batch_size, check_workers
from humanclap.scoring.output_guard import check_output, check_resume, make_parent
from humanclap.scoring.parts import part_range, part_record
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import ManifestScan, open_output, row_problem, scan_manifest
from humanclap.scoring.summary import ManifestRecord, ScoreRecord, ScoreSummary, write_run_metadata

# Embeddings kept in memory: enough for every text/file of the batches in flight many
# times over (MAX_BATCH_SIZE rows a step), small next to a model (16 Ki x 512 float32 =
# 32 MiB at LAION's width). A text or file used again after eviction costs a cache lookup
# (--cache) or a new forward pass, never a different number.
TEXT_LRU = 16384
# Rows whose texts are embedded together (whole TEXT_CHUNK passes instead of one per step).
TEXT_LOOKAHEAD = 256
AUDIO_LRU = 8192


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

    def __init__(self, scorer: Scorer, batch_size: int = 8, cache_dir: str | None = None, workers: int = 0):
        check_batch_size(batch_size)
        check_workers(workers)
        self.scorer = scorer
        self.batch_size = batch_size
        # No batch size for the engine's forward: its shape is its own, so that --batch-size
        # 1000 on 3 rows does not pad a forward to 1000 clips.
        self.engine = EmbeddingEngine(
            scorer,
            batch_size=batch_size,
            cache=open_cache(cache_dir, scorer) if cache_dir else None,
            text_capacity=max(TEXT_LRU, 4 * batch_size),
            audio_capacity=max(AUDIO_LRU, 4 * batch_size + 8 * workers),
            workers=workers,
        )

    # -- the job -----------------------------------------------------------------------
    def run(
        self,
        manifest: str | Path,
        output: str | Path | None = None,
        audio_root: str | Path | None = None,
        resume: bool = False,
        progress: bool | None = None,
        overwrite: bool = False,
        select: RowSelector | None = None,
        part: tuple[int, int] | None = None,
        scan: ManifestScan | None = None,
    ) -> ScoreSummary:
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
        records the block and the whole manifest's fingerprint, for ``merge``.

        ``scan``: the :func:`~humanclap.scoring.rows.scan_manifest` of ``manifest`` when the
        caller has it already (:func:`~humanclap.scoring.workflow.run_score`): the manifest is
        then not read and hashed again."""
        start = time.perf_counter()
        if scan is None:
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
        check_output(
            out,
            manifest,
            resume,
            overwrite,
            (None if row_problem(r) else str(resolve_path(r["audio"], root)) for r in scan.iter_rows()),
        )  # lazy: read only when OUT already exists
        if out is None:
            return self._run(scan, None, root, resume, progress, select, part, n_rows, start)
        make_parent(out)
        # One run at a time per output (humanclap.outputs); another output is not held up.
        with output_lock(file_lock_path(out), f"-o {out}"):
            if resume:  # under the lock: what another run left is what this one continues
                check_resume(out, columns, fingerprint, self.scorer, root)
            return self._run(scan, out, root, resume, progress, select, part, n_rows, start)

    def _run(
        self,
        scan: ManifestScan,
        out: Path | None,
        root: Path,
        resume: bool,
        progress: bool | None,
        select: RowSelector | None,
        part: tuple[int, int] | None,
        n_rows: int,
        start: float,
    ) -> ScoreSummary:
        columns = scan.columns
        summary = ScoreSummary(
            rows=n_rows,
            model_id=self.scorer.info.model_id,
            revision=self.scorer.info.revision,
            device=str(self.scorer.device),
            dtype=self.scorer.dtype,
        )
        rows = self._selected(scan.iter_rows(), select)
        try:
            writer, done = (
                open_output(out, (r for _, r in rows), columns, resume, summary.count)
                if out is not None
                else open_output(None, (), columns, resume)
            )
        except OSError as exc:  # e.g. permission denied, a symlink loop
            raise UsageError(
                f"cannot open -o {out} for writing: {exc.strerror or exc}; choose another output path"
            ) from None
        summary.resumed = done
        # the manifest's own row count (a selection's is the summary's "rows")
        record = ScoreRecord.of_run(
            self.scorer, ManifestRecord.of_scan(scan, root), part_record(scan.rows, *part) if part is not None else None
        )
        summary.protocol = record.protocol
        kept = done  # rows known to be in the output file (for the message on failure)
        try:
            if out is not None:  # written first so that a killed run can be resumed safely
                write_run_metadata(out, record, summary)
            for n in self._score_rows(rows, root, done, n_rows, writer, summary, progress):
                kept = n
            if self.engine.cache:
                summary.cache_hits = self.engine.cache.hits
            summary.seconds = time.perf_counter() - start
            if out is not None:
                writer.stream.close()
                write_run_metadata(out, record, summary)
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
    def _selected(rows: Iterator[dict[str, Any]], select: RowSelector | None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(manifest index, row)`` of the rows this job scores, as one shared iterator:
        resume consumes the rows done from it, scoring streams on from there."""
        return (ir for ir in enumerate(rows) if select is None or select(ir[0]))

    def _score_rows(
        self,
        rows: Iterator[tuple[int, dict[str, Any]]],
        root: Path,
        first: int,
        total: int,
        writer,
        summary: ScoreSummary,
        progress: bool | None,
    ):
        """Score and write the rows after the ``first`` done; yields the rows in the file
        after each flush."""
        engine = self.engine
        bar = tqdm(
            total=total - first,
            unit="row",
            desc="scoring",
            file=sys.stderr,
            disable=not (sys.stderr.isatty() if progress is None else progress),
        )

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
                    items = [
                        (row, problem, None if problem else str(resolve_path(row["audio"], root)))
                        for row, problem in step
                    ]
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
                    score, cosine, error = None, None, problem
                else:  # the scorer's clapscore (a score head's, or max(cos, 0))
                    score, cosine, error = engine.score(path, row["text"])
                writer.write(row, cosine, error, score)
                summary.count(None if error else score)
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
    return UsageError(
        f"cannot write {output}: {reason}; the {kept} rows written so far are kept; {todo} and rerun with --resume"
    )
