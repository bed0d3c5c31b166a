"""On-disk embedding cache (``--cache DIR``): scoring the same files again costs almost nothing.

Keys are SHA-256 digests of everything that decides an embedding: the model revision,
the preprocessing settings, the compute dtype, and the audio file's *content* hash (or
the text itself). Renaming a file keeps its cache entry; editing it does not.
Storage is one SQLite file (stdlib, atomic commits, safe to share between runs).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """A persistent ``key -> float32 vector`` store for one model configuration."""

    def __init__(self, folder: str | Path, model_key: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prefix = json.dumps(model_key, sort_keys=True)
        # Lookups happen in the prefetch thread, writes in the main one: share under a lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.folder / "embeddings.sqlite"), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def key(self, kind: str, content: str) -> str:
        """Cache key of an ``audio`` content hash or a ``text`` under this model configuration."""
        return hashlib.sha256(f"{self._prefix}\0{kind}\0{content}".encode()).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            row = self._db.execute("SELECT vec FROM emb WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._lock, self._db:  # one transaction per batch
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()
