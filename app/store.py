"""The run store: runs, their results, and the logs of every model call and every search,
in SQLite (WAL).

Each thread gets its own connection; WAL lets readers work while one writer writes,
and a 30 s busy timeout makes concurrent writers (threads, processes, a scheduler
and the UI) queue instead of failing.
"""

from __future__ import annotations

import contextvars
import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from conclave.agents.llm import CallRecord
from conclave.retrieval.hits import RetrievalRecord

SCHEMA = [
    # version 1
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
        result TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX runs_by_workflow ON runs (workflow, created_at);
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        run_id TEXT REFERENCES runs (id),
        started_at REAL NOT NULL,
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        kind TEXT NOT NULL,
        prompt_ref TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        error TEXT
    );
    CREATE INDEX calls_by_time ON calls (started_at);
    CREATE INDEX calls_by_run ON calls (run_id);
    """,
    # version 2: searches, with their similarity scores (for drift monitoring)
    """
    CREATE TABLE retrievals (
        id INTEGER PRIMARY KEY,
        run_id TEXT REFERENCES runs (id),
        started_at REAL NOT NULL,
        index_name TEXT NOT NULL,
        mode TEXT NOT NULL,
        k INTEGER NOT NULL,
        n_hits INTEGER NOT NULL,
        top_similarity REAL,
        scores TEXT NOT NULL,
        similarities TEXT NOT NULL,
        latency_s REAL NOT NULL,
        error TEXT
    );
    CREATE INDEX retrievals_by_time ON retrievals (started_at);
    CREATE INDEX retrievals_by_run ON retrievals (run_id);
    """,
    # version 3: checkpoints of long runs (one row per run: the latest state), so a run can resume
    """
    CREATE TABLE checkpoints (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        step INTEGER NOT NULL,
        state TEXT NOT NULL,
        saved_at REAL NOT NULL
    );
    """,
    # version 4: batch jobs (a workflow, its config and a schedule) and the runs each job made
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE job_runs (
        job TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs (id),
        started_at REAL NOT NULL,
        PRIMARY KEY (job, run_id)
    );
    """,
]

_current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("conclave_run", default=None)


@dataclass(frozen=True)
class Run:
    id: str
    workflow: str
    config: dict
    status: str
    result: Any
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None


class RunStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            have = conn.execute("PRAGMA user_version").fetchone()[0]
            if have > len(SCHEMA):
                raise RuntimeError(f"{self.path} has schema version {have}, newer than this Conclave ({len(SCHEMA)})")
            for version in range(have, len(SCHEMA)):
                for stmt in SCHEMA[version].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    # --- runs -------------------------------------------------------------------------

    def start_run(self, workflow: str, config: dict) -> str:
        run_id = uuid.uuid4().hex
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO runs (id, workflow, config, status, created_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, workflow, json.dumps(config, default=str), now, now),
            )
        return run_id

    def finish_run(self, run_id: str, result: Any) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "UPDATE runs SET status = 'done', result = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                (json.dumps(result, default=str), now, now, run_id),
            )

    def fail_run(self, run_id: str, error: str) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                (error[:10_000], now, now, run_id),
            )

    def reopen_run(self, run_id: str, workflow: str) -> Run:
        """Mark a stopped run (failed, or left 'running' by a crash) as running again, to resume it."""
        run = self.get_run(run_id)
        if run.workflow != workflow:
            raise ValueError(f"run {run_id} is a {run.workflow!r} run, not {workflow!r}")
        if run.status == "done":
            raise ValueError(f"run {run_id} has finished; there is nothing to resume")
        with self._tx() as conn:
            conn.execute("UPDATE runs SET status = 'running', error = NULL, updated_at = ?, finished_at = NULL WHERE id = ?",
                         (time.time(), run_id))
        return run

    def find_run(self, prefix: str) -> Run:
        """The run whose id starts with ``prefix`` (as printed: the first 8 characters)."""
        prefix = prefix.strip().lower()
        rows = self._conn().execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ? LIMIT 2", (len(prefix), prefix)).fetchall()
        if not prefix or not rows:
            raise KeyError(f"no run {prefix!r}")
        if len(rows) > 1:
            raise KeyError(f"{prefix!r} names more than one run; give more of its id")
        return _run(rows[0])

    @contextmanager
    def run(self, workflow: str, config: dict, *, resume: str | None = None) -> Iterator[str]:
        """A run whose model calls are logged under its id; it ends 'failed' if the body raises.
        The body sets the result with ``finish_run``; if it does not, the run ends 'done' with none.
        ``resume``: the id of a stopped run to continue under its own id (see ``checkpoint``)."""
        run_id = self.reopen_run(resume, workflow).id if resume else self.start_run(workflow, config)
        token = _current_run.set(run_id)
        try:
            yield run_id
        except BaseException as e:
            self.fail_run(run_id, f"{type(e).__name__}: {e}")
            raise
        finally:
            _current_run.reset(token)
        if self.get_run(run_id).status == "running":
            self.finish_run(run_id, None)

    def get_run(self, run_id: str) -> Run:
        row = self._conn().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return _run(row)

    def list_runs(self, workflow: str | None = None, limit: int = 50, status: str | None = None) -> list[Run]:
        """The newest runs first; of one workflow, or in one status, if given."""
        where, args = [], []
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if status:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_at DESC LIMIT ?"
        return [_run(r) for r in self._conn().execute(sql, (*args, limit))]

    def count_runs(self, status: str | None = None) -> int:
        sql, args = ("SELECT count(*) FROM runs WHERE status = ?", (status,)) if status else ("SELECT count(*) FROM runs", ())
        return self._conn().execute(sql, args).fetchone()[0]

    # --- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, run_id: str, step: int, state: Any) -> None:
        """Keep ``state`` (JSON) as the run's latest checkpoint, in one transaction."""
        now = time.time()
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)", (run_id, step, json.dumps(state), now))
            conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now, run_id))

    def resumable(self, prefix: str, workflow: str) -> tuple[Run, Any | None]:
        """A stopped run of ``workflow`` to resume, and the state of its latest checkpoint (None
        if it has none). KeyError, in words a user can read, if there is no such run."""
        run = self.find_run(prefix)
        if run.workflow != workflow:
            raise KeyError(f"run {run.id[:8]} is a {run.workflow} run; only a {workflow} run resumes here")
        saved = self.checkpoint(run.id)
        return run, saved[1] if saved else None

    def checkpoint(self, run_id: str) -> tuple[int, Any] | None:
        """(step, state) of the run's latest checkpoint, or None."""
        row = self._conn().execute("SELECT step, state FROM checkpoints WHERE run_id = ?", (run_id,)).fetchone()
        return (row["step"], json.loads(row["state"])) if row else None

    # --- batch jobs -------------------------------------------------------------------

    def put_job(self, name: str, spec: dict) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (name, json.dumps(spec), time.time()))

    def remove_job(self, name: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount > 0

    def jobs(self) -> dict[str, dict]:
        return {r["name"]: json.loads(r["spec"]) for r in self._conn().execute("SELECT * FROM jobs ORDER BY name")}

    def link_job_run(self, job: str, run_id: str) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO job_runs VALUES (?, ?, ?)", (job, run_id, time.time()))

    def job_runs(self, job: str, limit: int = 50) -> list[Run]:
        """A job's runs, newest first."""
        rows = self._conn().execute("SELECT runs.* FROM runs JOIN job_runs ON runs.id = job_runs.run_id WHERE job = ? "
                                    "ORDER BY runs.created_at DESC LIMIT ?", (job, limit))
        return [_run(r) for r in rows]

    # --- the call log -----------------------------------------------------------------

    def record_call(self, rec: CallRecord) -> None:
        """The seam's ``CallSink``: logs a call under the run in progress, if any."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO calls (run_id, started_at, backend, model, kind, prompt_ref, prompt_tokens,"
                " completion_tokens, latency_s, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _current_run.get(),
                    rec.started_at,
                    rec.backend,
                    rec.model,
                    rec.kind,
                    rec.prompt_ref,
                    rec.prompt_tokens,
                    rec.completion_tokens,
                    rec.latency_s,
                    rec.error,
                ),
            )

    def calls(self, limit: int = 50, run_id: str | None = None, since: float | None = None) -> list[dict]:
        """The newest calls first; of one run, or since a time, if given."""
        sql, args = _filtered("calls", run_id, since)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]

    # --- the retrieval log ------------------------------------------------------------

    def record_retrieval(self, rec: RetrievalRecord) -> None:
        """The retrieval layer's ``RetrievalSink``: logs a search under the run in progress, if any."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO retrievals (run_id, started_at, index_name, mode, k, n_hits, top_similarity, scores,"
                " similarities, latency_s, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _current_run.get(),
                    rec.started_at,
                    rec.index,
                    rec.mode,
                    rec.k,
                    len(rec.scores),
                    max(rec.similarities) if rec.similarities else None,
                    json.dumps(list(rec.scores)),
                    json.dumps(list(rec.similarities)),
                    rec.latency_s,
                    rec.error,
                ),
            )

    def retrievals(self, limit: int = 50, run_id: str | None = None, since: float | None = None) -> list[dict]:
        """The newest searches first; of one run, or since a time, if given."""
        sql, args = _filtered("retrievals", run_id, since)
        rows = [dict(r) for r in self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]
        for r in rows:
            r["scores"], r["similarities"] = json.loads(r["scores"]), json.loads(r["similarities"])
        return rows

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _filtered(table: str, run_id: str | None, since: float | None) -> tuple[str, list]:
    where, args = [], []
    if run_id:
        where.append("run_id = ?")
        args.append(run_id)
    if since is not None:
        where.append("started_at >= ?")
        args.append(since)
    return f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else ""), args


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        workflow=row["workflow"],
        config=json.loads(row["config"]),
        status=row["status"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )
