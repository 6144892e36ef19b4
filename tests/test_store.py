import json
import multiprocessing as mp
import sqlite3
import threading

import pytest

from conclave.agents.llm import CallRecord
from conclave.app.store import SCHEMA, RunStore
from conclave.retrieval.hits import RetrievalRecord


def record(i, **kw):
    base = dict(backend="llamacpp", model="m", kind="chat", prompt_ref="demo@1", prompt_tokens=i, completion_tokens=1,
                latency_s=0.01, error=None, started_at=1000.0 + i)
    base.update(kw)
    return CallRecord(**base)


def test_schema_is_wal_and_versioned(tmp_path):
    store = RunStore(tmp_path / "c.db")
    conn = sqlite3.connect(tmp_path / "c.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SCHEMA)
    RunStore(tmp_path / "c.db")  # opening again migrates nothing and loses nothing
    assert store.list_runs() == []


def test_run_lifecycle_and_calls_are_tied_to_the_run(tmp_path):
    store = RunStore(tmp_path / "c.db")
    store.record_call(record(0))  # outside any run
    with store.run("demo", {"model": "m", "n": 3}) as run_id:
        store.record_call(record(1))
        store.finish_run(run_id, {"answer": "42"})
    run = store.get_run(run_id)
    assert run.status == "done" and run.result == {"answer": "42"} and run.config == {"model": "m", "n": 3}
    assert run.finished_at >= run.created_at
    assert [c["run_id"] for c in store.calls(run_id=run_id)] == [run_id]
    assert [c["run_id"] for c in store.calls()] == [run_id, None]
    assert [c["prompt_tokens"] for c in store.calls(since=1000.5)] == [1]  # monitoring's window
    assert store.calls(run_id=run_id, since=1001.5) == []
    assert store.count_runs() == 1 and store.count_runs("done") == 1 and store.count_runs("failed") == 0


def test_a_failing_run_is_marked_failed_with_its_error(tmp_path):
    store = RunStore(tmp_path / "c.db")
    with pytest.raises(KeyError):
        with store.run("demo", {}) as run_id:
            raise KeyError("boom")
    run = store.get_run(run_id)
    assert run.status == "failed" and "boom" in run.error


def _writer(path, worker, n):
    store = RunStore(path)
    for i in range(n):
        with store.run(f"w{worker}", {"i": i}) as run_id:
            store.record_call(record(i, model=f"w{worker}"))
            store.finish_run(run_id, {"i": i})


def test_concurrent_writers_from_processes_and_threads_lose_nothing(tmp_path):
    path = tmp_path / "c.db"
    RunStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(3)]
    threads = [threading.Thread(target=_writer, args=(path, 10 + w, 60)) for w in range(3)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for p in procs:
        p.join(120)
    for t in threads:
        t.join(120)
    assert all(p.exitcode == 0 for p in procs)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0] == 360
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 360
    per_worker = dict(conn.execute("SELECT model, count(*) FROM calls GROUP BY model").fetchall())
    assert per_worker == {f"w{w}": 60 for w in (0, 1, 2, 10, 11, 12)}
    results = [json.loads(r[0])["i"] for r in conn.execute("SELECT result FROM runs WHERE workflow = 'w1'")]
    assert sorted(results) == list(range(60))


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.db"
    RunStore(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        RunStore(path)


def test_a_version_1_store_gains_the_retrieval_log_and_keeps_its_calls(tmp_path):
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA[0] + ";PRAGMA user_version = 1;")
    conn.execute("INSERT INTO calls (started_at, backend, model, kind, prompt_tokens, completion_tokens, latency_s)"
                 " VALUES (1.0, 'llamacpp', 'm', 'chat', 3, 4, 0.5)")
    conn.commit()
    conn.close()
    store = RunStore(path)
    assert [c["prompt_tokens"] for c in store.calls()] == [3]
    store.record_retrieval(RetrievalRecord("wiki", "dense", 3, (0.9, 0.5), (0.9, 0.5), 0.02, 2.0))
    assert store.retrievals()[0]["similarities"] == [0.9, 0.5]


def test_searches_are_logged_under_their_run_with_their_similarities(tmp_path):
    store = RunStore(tmp_path / "c.db")
    store.record_retrieval(RetrievalRecord("wiki", "lexical", 5, (7.5,), (), 0.001, 1.0))
    with store.run("flare", {}) as run_id:
        store.record_retrieval(RetrievalRecord("wiki", "hybrid", 3, (0.03, 0.02), (0.61, 0.42), 0.05, 2.0))
        store.record_retrieval(RetrievalRecord("wiki", "dense", 3, (), (), 0.01, 3.0, error="ConnectionError: down"))
    mine = store.retrievals(run_id=run_id)
    assert [r["mode"] for r in mine] == ["dense", "hybrid"]  # newest first
    failed, hybrid = mine
    assert failed["error"] == "ConnectionError: down" and failed["n_hits"] == 0 and failed["top_similarity"] is None
    assert hybrid["top_similarity"] == 0.61 and hybrid["scores"] == [0.03, 0.02] and hybrid["n_hits"] == 2
    assert len(store.retrievals()) == 3 and store.retrievals(since=1.5) == mine
    lexical = store.retrievals()[-1]
    assert lexical["run_id"] is None and lexical["similarities"] == [] and lexical["top_similarity"] is None
