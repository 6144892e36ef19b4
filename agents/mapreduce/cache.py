"""Model answers kept on disk, keyed by everything that decides them, so that a re-run, or a
resume after a crash, asks the model only what it has not answered yet.

The key hashes the model (backend and name), the prompt ref, the exact messages (which
hold the part's text, the question or schema) and the sampling parameters. Each answer
is committed as it arrives: a crash loses none that finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from agents.llm import Completion


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, out: Completion) -> Answer:
        return cls(out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens)


def key(*, backend: str, model: str, prompt_ref: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps([backend, model, prompt_ref, messages, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """SQLite at ``path`` (created if new); ``None`` keeps answers in memory for one run only."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT NOT NULL,"
            " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
        )

    def get(self, k: str) -> Answer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM answers WHERE key = ?", (k,)
            ).fetchone()
        return Answer(*row) if row else None

    def put(self, k: str, answer: Answer) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                (k, answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
