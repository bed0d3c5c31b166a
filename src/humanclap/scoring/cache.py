"""On-disk embedding cache (``--cache DIR``): scoring the same files again costs almost nothing.

Keys are SHA-256 digests of everything that decides an embedding's bits: the model
revision (config, weights, tokenizer and extractor files), the preprocessing settings, the
compute dtype, the numerics (device, torch, fixed forward shapes: ``Scorer.numerics``)
and the audio file's *content* hash (or the text itself). Renaming a file keeps its cache
entry; editing it does not. Storage is one SQLite file (stdlib, atomic commits, safe to
share between runs).

A cache that cannot be used is a :class:`UsageError` when it is opened, before any
scoring (:func:`check_cache_folder`, then a write probe); an SQLite error later in the
run only switches the cache off for the rest of the run with a warning: a cache is an
optimisation, and losing it never changes a score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from humanclap.errors import UsageError

log = logging.getLogger(__name__)

DB_NAME = "embeddings.sqlite"


def check_cache_folder(folder: str | Path) -> Path:
    """Refuse (``UsageError``) a ``--cache`` path that cannot hold the cache: a file, a
    folder that cannot be created or written, a database that is not SQLite or is
    read-only. Cheap and model-free, so a CLI can call it before loading a model."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"--cache {folder}: is a file, not a folder; pass a folder (it is created "
            f"if missing) where {DB_NAME} can be kept"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--cache {folder}: cannot create the folder ({exc.strerror}); pass a writable folder"
        ) from None
    db = folder / DB_NAME
    if db.exists() and not db.is_file():
        raise UsageError(f"--cache {folder}: {db} is not a file; remove it or pass another folder")
    if not db.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--cache {folder}: the folder is not writable; pass a writable folder or fix its permissions")
    conn = _connect(db)
    conn.close()
    return folder


def _connect(db: Path) -> sqlite3.Connection:
    """Open the database, create its table and prove that it can be written."""
    try:
        conn = sqlite3.connect(str(db), check_same_thread=False)
    except sqlite3.Error as exc:
        raise UsageError(f"--cache: cannot open {db} ({exc}); pass a writable folder") from None
    try:
        with conn:  # one transaction: the table exists and a write succeeds, or nothing changed
            conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY)")
            conn.execute("INSERT OR REPLACE INTO probe (id) VALUES (1)")
        conn.execute("SELECT key, vec FROM emb LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            what = "is not an SQLite database (corrupt, or another file)"
        elif "readonly" in str(exc) or "read-only" in str(exc):
            what = "is read-only"
        else:
            what = f"cannot be used ({exc})"
        raise UsageError(
            f"--cache: {db} {what}; delete it (the cache is rebuilt on the next run) or pass another folder"
        ) from None
    return conn


class EmbeddingCache:
    """A persistent ``key -> float32 vector`` store for one model configuration."""

    def __init__(self, folder: str | Path, model_key: dict):
        self.folder = check_cache_folder(folder)
        self._prefix = json.dumps(model_key, sort_keys=True)
        # Lookups happen in the prefetch thread, writes in the main one: share under a lock.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = _connect(self.folder / DB_NAME)
        self.hits = 0
        self.misses = 0
        self.disabled = ""  # why the cache was switched off mid-run ("" while it works)

    def key(self, kind: str, content: str) -> str:
        """Cache key of an ``audio`` content hash or a ``text`` under this model configuration."""
        return hashlib.sha256(f"{self._prefix}\0{kind}\0{content}".encode()).hexdigest()

    def _disable(self, exc: sqlite3.Error) -> None:
        # Called with the lock held. Scores stay right without the cache, only slower.
        self.disabled = f"{type(exc).__name__}: {exc}"
        log.warning(
            "embedding cache %s stopped working (%s); continuing without it", self.folder / DB_NAME, self.disabled
        )
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._db = None

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            row = None
            if self._db is not None:
                try:
                    row = self._db.execute("SELECT vec FROM emb WHERE key = ?", (key,)).fetchone()
                except sqlite3.Error as exc:
                    self._disable(exc)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                with self._db:  # one transaction per batch
                    self._db.executemany(
                        "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                        [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
                    )
            except sqlite3.Error as exc:
                self._disable(exc)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
