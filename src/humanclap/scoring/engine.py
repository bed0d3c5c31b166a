"""The embedding engine: unique texts and audio files -> L2-normalised embeddings.

One engine serves one scorer (any :class:`~humanclap.scoring.protocol.Scorer`) for one
run: ``humanclap score`` (through :class:`~humanclap.scoring.job.ScoreJob`), evaluation
(``score_pairs``) and, for its feature stage, training's preprocessing. Per engine:

* each unique text is embedded once, each unique audio file decoded and embedded once;
* with an :class:`EmbeddingCache`, a text (by its string) or a file (by the hash of its
  bytes) is looked up before any work is done, and new embeddings are stored;
* on an accelerator, decoding and feature extraction of the next batch run in a
  background thread while the model embeds the current one
  (:meth:`EmbeddingEngine.embed_audio_batches`); on a CPU they run in turn with the
  forward passes, which use every core themselves (a decoding thread beside them takes
  cores their OpenMP threads wait for: on 2 cores one measured job's forwards took 40.7 s
  with it and 22.0 s without; another run showed no difference beyond noise);
* a file that cannot be used is recorded as an :class:`AudioError` for that file (see
  ``audio_err``), never raised: the rows or pairs that use it get the message, the same
  message with or without a cache.

Bounded memory (``humanclap score`` at scale): with ``text_capacity`` / ``audio_capacity``
the engine keeps at most that many text / audio embeddings, least recently used first out
(:class:`LRU`); a text or file used again after eviction is looked up in the cache, or
embedded again (same bits). Without them (evaluation) everything is kept. With
``workers > 0`` decoding runs in :class:`~humanclap.scoring.decode.DecoderPool` processes
instead.

Exactly reproducible: the engine's ``batch_size`` is only how many files are decoded per
background step (and per ``yield`` of :meth:`EmbeddingEngine.embed_audio_batches`);
forward passes are always ``AUDIO_CHUNK`` clips (long and short clips apart), and texts go
through the scorer's fixed-shape ``embed_text``, so an embedding, cached or not, has the
same bits whatever the batch size and whatever else the run embeds.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from humanclap.defaults import TEXT_MAX_LENGTH
from humanclap.errors import AudioError
from humanclap.scoring.audio import AudioInput, audio_bytes_hash, describe
from humanclap.scoring.cache import EmbeddingCache
from humanclap.scoring.clapscore import clapscore
from humanclap.scoring.decode import DecoderPool, featurizer_of
from humanclap.scoring.inputs import check_batch_size
from humanclap.scoring.protocol import AUDIO_CHUNK, Scorer

# What prepare() found for each new file of a batch: its cached embedding, its
# ``(features, is_longer, content_hash)`` to embed, or the AudioError that stopped it.
BatchPrep = dict[str, Any]


def features_of(scorer: Scorer, item: AudioInput) -> tuple[Any, bool]:
    """Decode one audio item and compute its model features: the one preprocessing path
    shared by scoring, evaluation and training. Decoder and resampler failures come out
    as :class:`AudioError` naming the item."""
    try:
        return scorer.load_features(item)
    except AudioError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise unreadable(item, exc) from None


def non_finite(what: str, value: float) -> str:
    """The row error of a NaN/inf cosine or score (it comes from the model or its dtype)."""
    return (
        f"non-finite embedding ({what} = {value}): the model gave NaN/inf for this audio or "
        "text; try --dtype fp32, else the checkpoint is broken"
    )


def unreadable(item: AudioInput, exc: Exception) -> AudioError:
    """The AudioError for an item whose reading, decoding or resampling raised ``exc``."""
    return AudioError(f"{describe(item)}: unreadable audio ({type(exc).__name__}: {exc})")


def pair_score(scorer: Scorer, audio_emb: np.ndarray, text_emb: np.ndarray, cosine: float) -> float:
    """The ``clapscore`` of one embedded pair: the scorer's own ``pair_score`` when it has one
    (a score head, :class:`~humanclap.scoring.head.HeadScorer`), else CLAPScore = max(cos, 0).
    The one place every command turns a pair's embeddings into its score."""
    own = getattr(scorer, "pair_score", None)
    if own is None:
        return float(clapscore(cosine))
    return own(audio_emb, text_emb)


def open_cache(folder: str | Path, scorer: Scorer) -> EmbeddingCache:
    """The embedding cache in ``folder`` for this scorer's model, revision, dtype and
    preprocessing: entries of any other configuration are never returned. A wrapper that
    changes only the score (``embedding_scorer``: a score head) shares its base's entries:
    the cache holds embeddings, never scores."""
    scorer = getattr(scorer, "embedding_scorer", scorer)
    info = scorer.info
    # numerics: what the bits depend on beyond model and preprocessing (device, torch,
    # fixed forward shapes); a scorer without the property is keyed by its device.
    numerics = getattr(scorer, "numerics", None) or {"device": str(scorer.device), "audio_chunk": AUDIO_CHUNK}
    key = {
        "model": info.model_id,
        "revision": info.revision,
        "dtype": scorer.dtype,
        "preprocessing": info.as_dict()["preprocessing"],
        "text_max_length": TEXT_MAX_LENGTH,
        "numerics": numerics,
    }
    return EmbeddingCache(folder, key)


class LRU(OrderedDict):
    """A dict that keeps at most ``capacity`` entries (None: no bound), dropping the least
    recently set or :meth:`touch`-ed one first."""

    def __init__(self, capacity: int | None = None):
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if self.capacity is not None:
            while len(self) > self.capacity:
                self.popitem(last=False)

    def touch(self, key) -> bool:
        """Mark ``key`` as just used; False when it is not here."""
        if key not in self:
            return False
        self.move_to_end(key)
        return True


class EmbeddingEngine:
    """Embeds texts and audio files for one scorer; see the module docstring.

    Results live in ``text_emb`` (text -> vector), ``audio_emb`` (path -> vector) and
    ``audio_err`` (path -> AudioError). ``batch_size``: files decoded per background step
    (a prefetch size; memory is bounded by it). It never decides a forward pass: those
    are ``AUDIO_CHUNK`` clips each, so no embedding depends on it or on its neighbours.
    ``text_capacity`` / ``audio_capacity``: bounds of those maps (None: unbounded);
    ``workers``: decoder processes (0: in this process, see the module docstring).
    """

    def __init__(
        self,
        scorer: Scorer,
        batch_size: int = 8,
        cache: EmbeddingCache | None = None,
        text_capacity: int | None = None,
        audio_capacity: int | None = None,
        workers: int = 0,
    ):
        check_batch_size(batch_size)  # the one rule: 1 to MAX_BATCH_SIZE
        self.scorer = scorer
        self.batch_size = batch_size
        self.cache = cache
        self.workers = workers
        self.text_emb: LRU = LRU(text_capacity)
        self.audio_emb: LRU = LRU(audio_capacity)
        self.audio_err: LRU = LRU(audio_capacity)
        # Files handed to decoding and not embedded yet: skipped by later batches (each file
        # is decoded once while it is in flight or remembered).
        self._pending: set[str] = set()
        self._lock = threading.Lock()  # the prefetch thread reads the maps the main one writes
        self.decoded = 0  # files handed to decoding (counts())
        self.decoder_restarts = 0  # decoder workers replaced after they died or hung

    def features_of(self, item: AudioInput) -> tuple[Any, bool]:
        """Features of one audio item with this engine's scorer (see :func:`features_of`)."""
        return features_of(self.scorer, item)

    # -- texts -------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> None:
        """Embed the texts not embedded yet (blank ones are skipped: they cannot be scored).

        New texts are embedded in one ``embed_text`` call, in first-seen order: the call's
        list decides the batches, so the same texts give the same bits."""
        todo = []
        for text in dict.fromkeys(texts):
            if not text.strip() or self.text_emb.touch(text):
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
    def prepare(self, paths: Sequence[str]) -> BatchPrep:
        """Decode + featurise the files of a batch not seen before (the background stage)."""
        prep: BatchPrep = {}
        for path in self._new_files(paths):
            try:
                # Hashed inside the try: a file that cannot be opened is this file's error.
                digest = audio_bytes_hash(path) if self.cache else ""
            except (AudioError, OSError, RuntimeError, ValueError):
                # Give the error the uncached run gives (features_of names the problem the
                # same way); should the file read fine now, it is embedded, uncached.
                digest = ""
            try:
                cached = self.cache.get(self.cache.key("audio", digest)) if digest else None
                if cached is not None:
                    prep[path] = cached
                    continue
                feats, longer = features_of(self.scorer, path)
                prep[path] = (feats, longer, digest)
            except AudioError as exc:
                prep[path] = exc
            except (OSError, RuntimeError, ValueError) as exc:
                prep[path] = unreadable(path, exc)
        return prep

    def _new_files(self, paths: Iterable[str]) -> list[str]:
        """The files of a batch that are neither remembered nor in flight, now marked in
        flight; remembered ones are touched so that they outlive the batches in flight."""
        new = []
        with self._lock:
            for path in dict.fromkeys(paths):
                if path in self._pending or self.audio_emb.touch(path) or self.audio_err.touch(path):
                    continue
                self._pending.add(path)
                new.append(path)
        self.decoded += len(new)
        return new

    def embed_prepared(self, prep: BatchPrep) -> None:
        """Embed what :meth:`prepare` featurised: ``AUDIO_CHUNK`` clips per forward pass,
        short clips before long ones (fused models embed the two kinds apart)."""
        to_embed = [(p, v) for p, v in prep.items() if isinstance(v, tuple)]
        to_embed.sort(key=lambda pv: bool(pv[1][1]))  # stable: input order within each kind
        done: dict[str, Any] = {}
        errors: dict[str, AudioError] = {}
        for p, v in prep.items():
            if isinstance(v, np.ndarray):
                done[p] = v
            elif isinstance(v, AudioError):
                errors[p] = v
        for i in range(0, len(to_embed), AUDIO_CHUNK):
            chunk = to_embed[i : i + AUDIO_CHUNK]
            vecs = self.scorer.embed_features([(f, longer) for _, (f, longer, _) in chunk], pad_to=AUDIO_CHUNK)
            for (path, _), vec in zip(chunk, vecs):
                done[path] = vec
            if self.cache:
                self.cache.put_many({self.cache.key("audio", d): v for (_, (_, _, d)), v in zip(chunk, vecs) if d})
        with self._lock:
            for p in prep:  # in input order, so the LRU drops the oldest first
                if p in done:
                    self.audio_emb[p] = done[p]
                else:
                    self.audio_err[p] = errors[p]
                self._pending.discard(p)

    def embed_audio_batches(self, batches: Sequence[Sequence[str]]) -> Iterator[int]:
        """Embed the new files of each batch in turn, decoding batch ``b + 1`` in a background
        thread while batch ``b`` is embedded; yields ``b`` once batch ``b``'s files are in
        ``audio_emb`` / ``audio_err`` (callers write their rows at that point)."""
        yield from self.embed_audio_stream((b, list(paths)) for b, paths in enumerate(batches))

    def embed_audio_stream(self, batches: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[Any]:
        """:meth:`embed_audio_batches` for a stream of ``(tag, paths)`` (consumed lazily, a
        bounded number of batches ahead): yields each ``tag`` in order once its files are
        embedded. With ``workers > 0`` the decoding runs in a :class:`DecoderPool`."""
        featurizer = featurizer_of(self.scorer) if self.workers > 0 else None
        if featurizer is None:
            on_cpu = getattr(getattr(self.scorer, "device", None), "type", "cpu") == "cpu"
            yield from (self._inline(batches) if on_cpu else self._threaded(batches))
            return
        lookup = None
        if self.cache:
            cache = self.cache
            lookup = lambda digest: cache.get(cache.key("audio", digest))  # noqa: E731
        # One batch decoding ahead, as the thread does (memory: --batch-size clips of
        # features), and enough files that every worker has some queued.
        pool = DecoderPool(featurizer, self.workers, max_files=max(self.batch_size, 4 * self.workers), lookup=lookup)
        with pool:
            for tag, results in pool.run((tag, self._new_files(paths)) for tag, paths in batches):
                prep: BatchPrep = {}
                for path, res in results.items():
                    if res[0] == "ok":
                        prep[path] = (res[1], res[2], res[3])
                    elif res[0] == "cached":
                        prep[path] = res[1]
                    else:
                        prep[path] = res[1]
                self.embed_prepared(prep)
                self.decoder_restarts = pool.restarts
                yield tag

    def _inline(self, batches: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[Any]:
        """Decode each batch, then embed it, in this thread (CPU forwards: see the module
        docstring)."""
        for tag, paths in batches:
            self.embed_prepared(self.prepare(list(paths)))
            yield tag

    def _threaded(self, batches: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[Any]:
        """Decode the next batch in one background thread while this one is embedded."""
        source = iter(batches)
        first = next(source, None)
        if first is None:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            tag, paths = first
            pending: Future = pool.submit(self.prepare, list(paths))
            while True:
                prep = pending.result()
                nxt = next(source, None)
                if nxt is not None:
                    pending = pool.submit(self.prepare, list(nxt[1]))
                self.embed_prepared(prep)
                yield tag
                if nxt is None:
                    return
                tag = nxt[0]

    def embed_unique(self, paths: Sequence[str], texts: Sequence[str], progress: bool | None = None) -> None:
        """Embed every unique text and decodable audio file once (no output rows).

        ``progress``: a bar on stderr (None: only when stderr is a terminal)."""

        self.embed_texts(texts)
        unique = list(dict.fromkeys(paths))
        batches = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        with tqdm(
            total=len(batches),
            desc="audio",
            unit="batch",
            file=sys.stderr,
            disable=not (sys.stderr.isatty() if progress is None else progress),
        ) as bar:
            for _ in self.embed_audio_batches(batches):
                bar.update(1)

    # -- results -----------------------------------------------------------------------
    def cosine(self, path: str, text: str) -> tuple[float | None, str]:
        """Cosine of an embedded (audio, text) pair, or None and why it has none."""
        if not text.strip():
            return None, "empty text"
        if path in self.audio_err:
            return None, str(self.audio_err[path])
        return float(np.dot(self.audio_emb[path], self.text_emb[text])), ""

    def score(self, path: str, text: str) -> tuple[float | None, float | None, str]:
        """``(clapscore, cosine, error)`` of an embedded pair (:func:`pair_score`); a
        non-finite cosine or score is the pair's error, never a number."""
        cosine, error = self.cosine(path, text)
        if cosine is None:
            return None, None, error
        if not math.isfinite(cosine):
            return None, None, non_finite("cosine", cosine)
        score = pair_score(self.scorer, self.audio_emb[path], self.text_emb[text], cosine)
        if not math.isfinite(score):
            return None, None, non_finite("score", score)
        return score, cosine, ""

    def counts(self) -> dict[str, int]:
        """Work done so far: texts embedded, audio files decoded, embedded and failed."""
        return {
            "texts_embedded": len(self.text_emb),
            "audio_decoded": self.decoded,
            "audio_embedded": len(self.audio_emb),
            "audio_failed": len(self.audio_err),
        }
