"""Results kept on disk under a key that hashes everything deciding them, so that a re-run,
or a resume after a crash, computes only what it has not computed yet.

Values are JSON, committed one by one as they arrive: a crash loses none that finished.
Safe to share between threads; SQLite in WAL mode lets another process read meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def digest(*parts: Any) -> str:
    """A key for ``parts`` (anything JSON can write), stable across processes."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Memo:
    """SQLite at ``path`` (created if new); ``None`` keeps values in memory for this process only."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS memo (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM memo WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM memo").fetchone()[0]

    def close(self) -> None:
        self._db.close()
