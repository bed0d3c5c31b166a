"""The ``humanclap score`` job: manifest in, one scored row out per input row.

Work per run: each unique text is embedded once, each unique audio file is decoded and
embedded once; with a cache, both are looked up by content first. Decoding and feature
extraction of the next batch run in a background thread while the model embeds the
current one. A bad row (missing/corrupt file, NaN samples, empty text) gets an ``error``
and the job goes on.
"""

from __future__ import annotations

import json
import math
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from humanclap.scoring.audio import AudioError, audio_bytes_hash
from humanclap.defaults import TEXT_MAX_LENGTH
from humanclap.scoring.cache import EmbeddingCache
from humanclap.scoring.scorer import CLAPScorer
from humanclap.scoring.rows import UsageError, open_output, read_manifest

BatchPrep = dict[str, Any]  # audio path -> embedding (cached) | (features, longer, hash) | AudioError


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


def resolve_audio(value: Any, root: Path) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else root / path


class ScoreJob:
    """Scores a manifest with one model; see module docstring."""

    def __init__(self, scorer: CLAPScorer, batch_size: int = 8, cache_dir: str | None = None):
        self.scorer = scorer
        self.batch_size = batch_size
        self.cache = None
        if cache_dir:
            info = scorer.info
            key = {"model": info.model_id, "revision": info.revision, "dtype": scorer.dtype,
                   "preprocessing": info.as_dict()["preprocessing"], "text_max_length": TEXT_MAX_LENGTH}
            self.cache = EmbeddingCache(cache_dir, key)
        self.audio_emb: dict[str, np.ndarray] = {}
        self.audio_err: dict[str, AudioError] = {}
        self.text_emb: dict[str, np.ndarray] = {}
        self.submitted: set[str] = set()  # files handed to prepare(): each is decoded once per run

    # -- texts -------------------------------------------------------------------------
    def embed_texts(self, texts: list[str]) -> None:
        todo = []
        for text in dict.fromkeys(texts):
            if text in self.text_emb or not text.strip():
                continue
            cached = self.cache.get(self.cache.key("text", text)) if self.cache else None
            if cached is not None:
                self.text_emb[text] = cached
            else:
                todo.append(text)
        if todo:
            vecs = self.scorer.embed_text(todo)
            self.text_emb.update(zip(todo, vecs))
            if self.cache:
                self.cache.put_many({self.cache.key("text", t): v for t, v in zip(todo, vecs)})

    # -- audio -------------------------------------------------------------------------
    def prepare(self, paths: list[str]) -> BatchPrep:
        """Decode + featurise the batch's new files (runs in the background thread)."""
        prep: BatchPrep = {}
        for path in paths:
            if path in self.submitted:
                continue
            self.submitted.add(path)
            try:
                digest = audio_bytes_hash(path) if self.cache else ""
                cached = self.cache.get(self.cache.key("audio", digest)) if self.cache else None
                if cached is not None:
                    prep[path] = cached
                    continue
                feats, longer = self.scorer.features(self.scorer.load(path))
                prep[path] = (feats, longer, digest)
            except AudioError as exc:
                prep[path] = exc
            except (OSError, RuntimeError, ValueError) as exc:  # decoder/resampler failures
                prep[path] = AudioError(f"{path}: unreadable audio ({type(exc).__name__}: {exc})")
        return prep

    def embed_prepared(self, prep: BatchPrep) -> None:
        to_embed = [(p, v) for p, v in prep.items() if isinstance(v, tuple)]
        for p, v in prep.items():
            if isinstance(v, np.ndarray):
                self.audio_emb[p] = v
            elif isinstance(v, AudioError):
                self.audio_err[p] = v
        for i in range(0, len(to_embed), self.batch_size):
            chunk = to_embed[i : i + self.batch_size]
            vecs = self.scorer.embed_features([(f, longer) for _, (f, longer, _) in chunk], pad_to=self.batch_size)
            for (path, (_, _, digest)), vec in zip(chunk, vecs):
                self.audio_emb[path] = vec
            if self.cache:
                self.cache.put_many({self.cache.key("audio", d): v for (_, (_, _, d)), v in zip(chunk, vecs)})

    def embed_unique(self, paths: list[str], texts: list[str], progress: bool | None = None) -> None:
        """Embed every unique text and decodable audio file once (evaluation, no output rows)."""
        from tqdm.auto import tqdm

        self.embed_texts(texts)
        unique = list(dict.fromkeys(paths))
        batches = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        for batch in tqdm(batches, desc="audio", unit="batch", file=sys.stderr,
                          disable=not (sys.stderr.isatty() if progress is None else progress)):
            self.embed_prepared(self.prepare(batch))

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
        self.embed_texts([_text(r) for r in rows])
        todo = rows[len(done):]
        paths = [str(resolve_audio(r["audio"], root)) for r in todo]
        texts = [_text(r) for r in todo]
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="row", desc="scoring", file=sys.stderr,
                   disable=not (sys.stderr.isatty() if progress is None else progress))
        batches = [range(i, min(i + self.batch_size, len(todo))) for i in range(0, len(todo), self.batch_size)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future | None = pool.submit(self.prepare, [paths[i] for i in batches[0]]) if batches else None
            for b, batch in enumerate(batches):
                prep = pending.result()
                pending = pool.submit(self.prepare, [paths[i] for i in batches[b + 1]]) if b + 1 < len(batches) else None
                self.embed_prepared(prep)
                for i in batch:
                    cosine, error = self.row_result(paths[i], texts[i])
                    writer.write(todo[i], cosine, error)
                    if error:
                        summary.failed += 1
                    else:
                        summary.scored += 1
                        summary.scores.append(max(cosine, 0.0))
                writer.flush()
                bar.update(len(batch))
        bar.close()
        if self.cache:
            summary.cache_hits = self.cache.hits
        summary.seconds = time.perf_counter() - start
        if output is not None:
            writer.stream.close()
            write_run_metadata(Path(output), self.scorer, summary)
        return summary

    def row_result(self, path: str, text: str) -> tuple[float | None, str]:
        """Cosine of an embedded (audio, text) pair, or None and the reason it failed."""
        if not text.strip():
            return None, "empty text"
        if path in self.audio_err:
            return None, str(self.audio_err[path])
        return float(np.dot(self.audio_emb[path], self.text_emb[text])), ""


def check_same_model(output: Path, scorer: CLAPScorer) -> None:
    """Refuse to resume a file whose rows were scored by another model or setting."""
    meta_path = output.with_name(output.name + ".meta.json")
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    old = (meta["model"]["revision"], meta["dtype"])
    if old != (scorer.info.revision, scorer.dtype):
        raise UsageError(f"{output} was scored with revision {old[0]} ({old[1]}), not "
                         f"{scorer.info.revision} ({scorer.dtype}); drop --resume or use another -o")


def write_run_metadata(output: Path, scorer: CLAPScorer, summary: ScoreSummary) -> None:
    """``OUT.meta.json`` beside the output: which model and settings made these scores."""
    from humanclap import __version__

    mean, lo, hi = summary.mean_ci()
    meta = {"humanclap_version": __version__, "model": scorer.info.as_dict(), "dtype": scorer.dtype,
            "device": str(scorer.device), "rows": summary.rows, "scored": summary.scored,
            "failed": summary.failed, "mean_clapscore": mean, "mean_clapscore_ci95": [lo, hi],
            "note": "clapscore = max(cosine, 0); scoring is deterministic (no seed involved)"}
    tmp = output.with_name(output.name + ".meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, allow_nan=True) + "\n")
    tmp.replace(output.with_name(output.name + ".meta.json"))
