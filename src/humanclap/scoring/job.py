"""The ``humanclap score`` job: manifest in, one scored row out per input row.

The embedding work is the :class:`~humanclap.scoring.engine.EmbeddingEngine`'s (each
unique text and file once, cache, background decoding); this module adds the rows: read
the manifest, embed the texts, walk the rows in batches of ``batch_size``, write each
batch's rows in input order once its files are embedded, and keep ``OUT.meta.json``
beside the output. A bad row (missing/corrupt file, NaN samples, empty text) gets an
``error`` and the job goes on.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanclap.errors import UsageError
from humanclap.io import resolve_path, write_json
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.engine import EmbeddingEngine, open_cache
from humanclap.scoring.protocol import Scorer
from humanclap.scoring.rows import open_output, read_manifest


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
        """Mean CLAPScore and its 95% t-interval over scored rows (NaN when none)."""
        n = len(self.scores)
        if n == 0:
            return math.nan, math.nan, math.nan
        mean = float(np.mean(self.scores))
        if n < 2:
            return mean, math.nan, math.nan
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * np.std(self.scores, ddof=1) / math.sqrt(n))
        return mean, mean - half, mean + half

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


def _text(row: dict[str, Any]) -> str:
    return "" if row["text"] is None else str(row["text"])


class ScoreJob:
    """Scores a manifest with one model; see module docstring."""

    def __init__(self, scorer: Scorer, batch_size: int = 8, cache_dir: str | None = None):
        self.scorer = scorer
        self.batch_size = batch_size
        self.engine = EmbeddingEngine(scorer, batch_size, open_cache(cache_dir, scorer) if cache_dir else None)

    # -- the job -----------------------------------------------------------------------
    def run(self, manifest: str | Path, output: str | Path | None = None,
            audio_root: str | Path | None = None, resume: bool = False,
            progress: bool | None = None) -> ScoreSummary:
        start = time.perf_counter()
        rows, columns = read_manifest(manifest)
        if resume and output is not None:
            check_same_model(Path(output), self.scorer)
        root = Path(audio_root) if audio_root else Path(manifest).resolve().parent
        writer, done = open_output(output, rows, columns, resume)
        summary = ScoreSummary(rows=len(rows), resumed=len(done), model_id=self.scorer.info.model_id,
                               revision=self.scorer.info.revision, device=str(self.scorer.device),
                               dtype=self.scorer.dtype)
        if output is not None:  # written first so that a killed run can be resumed safely
            write_run_metadata(Path(output), self.scorer, summary)
        for old in done:  # the summary covers the whole output file
            if old.get("error"):
                summary.failed += 1
            else:
                summary.scored += 1
                summary.scores.append(float(old["clapscore"]))
        # Texts of *all* rows, done or not: text batches are then the same in a resumed run
        # as in an uninterrupted one, so the resumed file is byte-identical.
        engine = self.engine
        engine.embed_texts([_text(r) for r in rows])
        todo = rows[len(done):]
        paths = [str(resolve_path(r["audio"], root)) for r in todo]
        texts = [_text(r) for r in todo]
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="row", desc="scoring", file=sys.stderr,
                   disable=not (sys.stderr.isatty() if progress is None else progress))
        batches = [range(i, min(i + self.batch_size, len(todo))) for i in range(0, len(todo), self.batch_size)]
        for b in engine.embed_audio_batches([[paths[i] for i in batch] for batch in batches]):
            for i in batches[b]:
                cosine, error = engine.cosine(paths[i], texts[i])
                writer.write(todo[i], cosine, error)
                if error:
                    summary.failed += 1
                else:
                    summary.scored += 1
                    summary.scores.append(float(clapscore(cosine)))
            writer.flush()
            bar.update(len(batches[b]))
        bar.close()
        if engine.cache:
            summary.cache_hits = engine.cache.hits
        summary.seconds = time.perf_counter() - start
        if output is not None:
            writer.stream.close()
            write_run_metadata(Path(output), self.scorer, summary)
        return summary


def check_same_model(output: Path, scorer: Scorer) -> None:
    """Refuse to resume a file whose rows were scored by another model or setting."""
    meta_path = output.with_name(output.name + ".meta.json")
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    old = (meta["model"]["revision"], meta["dtype"])
    if old != (scorer.info.revision, scorer.dtype):
        raise UsageError(f"{output} was scored with revision {old[0]} ({old[1]}), not "
                         f"{scorer.info.revision} ({scorer.dtype}); drop --resume or use another -o")


def write_run_metadata(output: Path, scorer: Scorer, summary: ScoreSummary) -> None:
    """``OUT.meta.json`` beside the output: which model and settings made these scores."""
    from humanclap import __version__

    mean, lo, hi = summary.mean_ci()
    meta = {"humanclap_version": __version__, "model": scorer.info.as_dict(), "dtype": scorer.dtype,
            "device": str(scorer.device), "rows": summary.rows, "scored": summary.scored,
            "failed": summary.failed, "mean_clapscore": mean, "mean_clapscore_ci95": [lo, hi],
            "note": "clapscore = max(cosine, 0); scoring is deterministic (no seed involved)"}
    # Strict JSON: an undefined mean (no row scored yet, or one: no interval) is null.
    write_json(output.with_name(output.name + ".meta.json"), meta)
