"""Workflows from config files (`conclave run`) and batch jobs (`conclave jobs`), as a user runs
them: subprocesses on the real SmolLM2, a real scheduler, a real kill."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conclave.app.store import RunStore
from conclave.local_models import catalog
from tests.test_cli import conclave

pytestmark = pytest.mark.timeout(600)

EVO = """
task = "rotten-tomatoes"
population = 2
generations = {generations}
dev_size = 4
test_size = 2
"""


@pytest.fixture
def data(model_dir, tmp_path):
    """A fresh data dir (run store, jobs) that holds the session's pulled models."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "models").symlink_to(catalog.models_dir(model_dir), target_is_directory=True)
    return d


def env(data) -> dict:
    return {"CONCLAVE_DATA_DIR": str(data)}


def job_file(tmp_path, name="evo", timing='every = "2s"', generations=0):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nworkflow = "evoprompt"\n{timing}\n[config]\n{EVO.format(generations=generations)}')
    return path


def test_workflows_run_from_config_files_and_bad_configs_are_refused(data, tmp_path):
    (tmp_path / "evo.toml").write_text(EVO.format(generations=0))
    r = conclave("run", "evoprompt", "--config", str(tmp_path / "evo.toml"), env=env(data), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "best initial" in r.stdout

    (tmp_path / "doc.txt").write_text("\n\n".join(f"Note {i}: the pump at station {i} was checked." for i in range(60)))
    (tmp_path / "mr.toml").write_text(f'files = ["{tmp_path / "doc.txt"}"]\nchunk_tokens = 300\nmap_max_tokens = 32\n'
                                      'reduce_max_tokens = 64\n')
    r = conclave("run", "mapreduce", "--config", str(tmp_path / "mr.toml"), env=env(data), timeout=300)
    assert r.returncode == 0, r.stderr
    runs = RunStore(data / "conclave.db").list_runs()
    assert [(r.workflow, r.status) for r in runs] == [("mapreduce", "done"), ("evoprompt", "done")]
    assert len(runs[0].result["parts"]) >= 2

    bad = {
        "not toml": ("evoprompt", "task = ", "not valid TOML"),
        "unknown key": ("evoprompt", 'task = "rotten-tomatoes"\npopulaton = 3', "unknown setting populaton"),
        "bad value": ("evoprompt", 'task = "rotten-tomatoes"\npopulation = 1', "population"),
        "no task": ("evoprompt", "population = 4", "needs task"),
        "no files": ("mapreduce", 'task = "summarize"', "needs files"),
        "no such workflow": ("nope", 'task = "x"', "unknown workflow"),
    }
    for case, (workflow, text, message) in bad.items():
        (tmp_path / "bad.toml").write_text(text)
        r = conclave("run", workflow, "--config", str(tmp_path / "bad.toml"), env=env(data))
        assert r.returncode == 1 and message in r.stderr, (case, r.stderr)
    missing = conclave("run", "evoprompt", "--config", str(tmp_path / "none.toml"), env=env(data))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert len(RunStore(data / "conclave.db").list_runs()) == 2  # nothing bad started a run


def test_jobs_are_added_listed_replaced_and_removed(data, tmp_path):
    assert conclave("jobs", "add", str(job_file(tmp_path, timing='schedule = "0 3 * * *"')), env=env(data)).returncode == 0
    listed = conclave("jobs", "list", env=env(data))
    assert "evo" in listed.stdout and "cron 0 3 * * *" in listed.stdout and "never run" in listed.stdout
    again = conclave("jobs", "add", str(job_file(tmp_path, timing='every = "6h"')), env=env(data))
    assert "replaced" in again.stdout and "every 6h" in conclave("jobs", "list", env=env(data)).stdout
    for timing, message in (('schedule = "61 * * * *"', "not a cron expression"), ('every = "soon"', "number and a unit"),
                            ('schedule = "0 3 * * *"\nevery = "1h"', "exactly one")):
        r = conclave("jobs", "add", str(job_file(tmp_path, name="bad", timing=timing)), env=env(data))
        assert r.returncode == 1 and message in r.stderr, r.stderr
    (tmp_path / "typo.toml").write_text('name = "t"\nworkflow = "evoprompt"\nevery = "1h"\n[config]\ntask = "rotten-tomatoes"\n'
                                        "generatons = 2\n")
    r = conclave("jobs", "add", str(tmp_path / "typo.toml"), env=env(data))
    assert r.returncode == 1 and "unknown setting generatons" in r.stderr
    assert conclave("jobs", "remove", "evo", env=env(data)).returncode == 0
    assert "no job" in conclave("jobs", "remove", "evo", env=env(data)).stderr
    assert "no job 'evo'" in conclave("jobs", "run", "evo", env=env(data)).stderr


def test_the_scheduler_runs_a_job_on_time_and_never_twice_at_once(data, tmp_path):
    from conclave.app import jobs
    from conclave.app.settings import load_settings

    assert conclave("jobs", "add", str(job_file(tmp_path)), env=env(data)).returncode == 0
    store = RunStore(data / "conclave.db")
    # a run going (here: its lock held) means `jobs run` starts nothing
    with jobs.held(jobs.lock_path(load_settings(data_dir=data), "evo")) as mine:
        assert mine
        busy = conclave("jobs", "run", "evo", env=env(data))
        assert busy.returncode == 0 and "running already" in busy.stderr and store.list_runs() == []

    sched = subprocess.Popen([sys.executable, "-m", "conclave.app.cli", "jobs", "scheduler"], env={**os.environ, **env(data)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while len([r for r in store.job_runs("evo") if r.status == "done"]) < 2 and time.time() < deadline:
            time.sleep(0.5)
    finally:
        sched.send_signal(signal.SIGTERM)  # not SIGINT: a suite started in the background has it ignored
        log = sched.communicate(timeout=60)[0]
    runs = sorted(store.job_runs("evo"), key=lambda r: r.created_at)
    assert len(runs) >= 2 and all(r.status == "done" for r in runs), log
    for a, b in zip(runs, runs[1:]):  # every 2 s, but a run takes longer: never two at once
        assert a.finished_at <= b.created_at, log


def test_a_killed_job_is_marked_failed_and_its_next_run_resumes_it(data, tmp_path):
    assert conclave("jobs", "add", str(job_file(tmp_path, timing='every = "1d"', generations=3)), env=env(data)).returncode == 0
    store = RunStore(data / "conclave.db")
    proc = subprocess.Popen([sys.executable, "-m", "conclave.app.cli", "jobs", "run", "evo"], env={**os.environ, **env(data)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once generation 1 is checkpointed, however fast or slow the machine: the test holds the
    # store's write lock and lets the job's writes through one commit at a time, so the job cannot
    # get further than the checkpoint seen while the lock is held (nor finish) before it is killed.
    gate = sqlite3.connect(data / "conclave.db", timeout=120, isolation_level=None)
    watch = sqlite3.connect(data / "conclave.db", isolation_level=None)

    def commits() -> int:  # changes whenever another connection commits
        return watch.execute("PRAGMA data_version").fetchone()[0]

    deadline = time.monotonic() + 400  # a generous bound for a slow machine, never the thing checked
    gate.execute("BEGIN IMMEDIATE")
    try:
        while not ((runs := store.job_runs("evo")) and (saved := store.checkpoint(runs[0].id)) and saved[0] >= 1):
            assert proc.poll() is None, "the job exited before checkpointing generation 1"
            assert time.monotonic() < deadline, "generation 1 was never checkpointed"
            gate.execute("COMMIT")  # the job may write once...
            seen = commits()
            while commits() == seen and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            gate.execute("BEGIN IMMEDIATE")  # ...and is held at its next write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:  # a failed wait: no job left running
            proc.kill()
            proc.wait()
        gate.execute("ROLLBACK")
        gate.close()
        watch.close()
    [killed] = store.job_runs("evo")
    assert store.get_run(killed.id).status == "running"  # as a kill leaves it
    assert store.checkpoint(killed.id)[0] == saved[0] < 3  # killed where it was held: generations still to run

    listed = conclave("jobs", "list", env=env(data))
    assert "failed" in listed.stdout and store.get_run(killed.id).error.startswith("the process running it stopped")
    r = conclave("jobs", "run", "evo", env=env(data), timeout=300)
    assert r.returncode == 0, r.stderr
    [resumed] = store.job_runs("evo")  # the same run, continued from its checkpoint
    assert resumed.id == killed.id and resumed.status == "done"
    assert len(resumed.result["generations"]) == 4
