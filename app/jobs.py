"""Batch jobs: a workflow, its config and a schedule, run by ``conclave jobs scheduler``
(APScheduler, with its own persistent SQLite job store) or by cron calling
``conclave jobs run NAME``.

A job file:

    name = "nightly-evoprompt"
    workflow = "evoprompt"
    schedule = "0 3 * * *"        # cron: minute hour day month weekday; or every = "6h" (s, m, h, d)
    [config]                      # what `conclave run evoprompt --config` reads
    task = "rotten-tomatoes"

One run of a job at a time: each run holds a lock file (``flock``), so the scheduler, cron
and a person at a terminal cannot start it twice. A run whose process died (killed, or the
machine went down) is marked failed by the next run of its job, and a resumable workflow
(EvoPrompt) continues it from its last checkpoint; map-reduce starts again and takes the
answers it had already made from its cache.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conclave.app.workflows import WORKFLOWS, WorkflowError, prepare, read_config

DIED = "the process running it stopped before the run ended (killed, or it crashed)"
_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    workflow: Literal[WORKFLOWS]  # type: ignore[valid-type]
    schedule: str | None = Field(None, description="cron: minute hour day month weekday")
    every: str | None = Field(None, description="an interval: 30s, 15m, 6h, 1d")
    config: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_timing(self):
        if (self.schedule is None) == (self.every is None):
            raise ValueError("give exactly one of schedule (cron) and every (an interval such as 6h)")
        if self.every is not None and not _EVERY.match(self.every):
            raise ValueError(f"every must be a number and a unit (s, m, h or d), such as 15m; got {self.every!r}")
        if self.schedule is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.schedule)
            except ValueError as e:
                raise ValueError(f"schedule {self.schedule!r} is not a cron expression: {e}") from None
        return self

    def trigger(self):
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if self.schedule is not None:
            return CronTrigger.from_crontab(self.schedule)
        n, unit = _EVERY.match(self.every).groups()
        return IntervalTrigger(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: int(n)})

    @property
    def when(self) -> str:
        return f"cron {self.schedule}" if self.schedule else f"every {self.every}"


def load(path: Path, settings, store) -> Job:
    """A job file, checked in full: its fields, its schedule and its workflow's config."""
    data = read_config(path)
    try:
        job = Job(**data)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or 'job'}: {err['msg']}" for err in e.errors()]
        raise WorkflowError(f"job file {path}:\n" + "\n".join(lines)) from None
    prepare(settings, store, job.workflow, job.config)
    return job


def get(store, name: str) -> Job:
    jobs = store.jobs()
    if name not in jobs:
        raise WorkflowError(f"no job {name!r}; jobs: {', '.join(jobs) or 'none (conclave jobs add FILE)'}")
    return Job(**jobs[name])


# --- one run of a job ---------------------------------------------------------------------


def lock_path(settings, name: str) -> Path:
    return settings.data_dir / "jobs" / f"{name}.lock"


@contextmanager
def held(path: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` if free (True), else False; the OS lets it go when the
    holder exits, however it exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def reap(settings, store, name: str) -> list[str]:
    """Mark failed the runs of job ``name`` left 'running' by a process that died; returns their
    ids. Only when no process holds the job's lock, so a live run is never touched."""
    with held(lock_path(settings, name)) as mine:
        return _reap(store, name) if mine else []


def _reap(store, name: str) -> list[str]:
    dead = [r.id for r in store.job_runs(name) if r.status == "running"]
    for run_id in dead:
        store.fail_run(run_id, DIED)
    return dead


def run(settings, store, name: str, *, on_event=None, cli_io: dict | None = None) -> tuple[str, str | None]:
    """Run job ``name`` now, unless a run of it is going: ("busy", None), or ("done", run id).
    Dead runs are marked failed first, and the newest resumable one is continued."""
    job = get(store, name)
    with held(lock_path(settings, name)) as mine:
        if not mine:
            return "busy", None
        _reap(store, name)
        prepared = prepare(settings, store, job.workflow, job.config)
        resume = None
        if prepared.resumable:
            last = next(iter(store.job_runs(name, limit=1)), None)
            if last is not None and last.status == "failed" and store.checkpoint(last.id) is not None:
                resume = last.id
        ids: list[str] = []

        def events(e: dict) -> None:
            if e.get("kind") == "run":  # linked as soon as the run exists, so a kill leaves it findable
                store.link_job_run(name, e["run_id"])
                ids.append(e["run_id"])
            if on_event is not None:
                on_event(e)

        if cli_io is not None:  # the terminal's progress bars
            prepared.cli(resume=resume, on_event=events, **cli_io)
        else:
            prepared.execute(resume=resume, on_event=events)
        return "done", ids[-1] if ids else None


# --- the scheduler ------------------------------------------------------------------------


def fire(name: str, data_dir: str, spec: dict) -> int:
    """One scheduled run, in a process of its own (``conclave jobs run NAME``): a crash in it
    cannot take the scheduler down, and its lock keeps it from overlapping any other run.
    ``spec`` is unused here; it is stored so the scheduler sees when a job file changed."""
    env = {**os.environ, "CONCLAVE_DATA_DIR": data_dir}
    started = time.time()
    print(f"{time.strftime('%H:%M:%S')} job {name}: starting", flush=True)
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "jobs", "run", name], env=env, capture_output=True, text=True)
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] if done.returncode else []
    print(f"{time.strftime('%H:%M:%S')} job {name}: {'ok' if done.returncode == 0 else 'failed'} in "
          f"{time.time() - started:.0f} s{': ' + tail[0] if tail else ''}", flush=True)
    return done.returncode


def scheduler(settings, store, *, sync_every: float = 5.0) -> None:
    """Run every job on its schedule until interrupted (Ctrl-C) or terminated (SIGTERM). The jobs
    table is the truth: jobs added, changed or removed while this runs are picked up within
    ``sync_every`` seconds. APScheduler keeps its next fire times in
    ``<data_dir>/jobs/schedule.db``, so a restart catches up on runs it missed (at most one
    each: ``coalesce``)."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    path = settings.data_dir / "jobs" / "schedule.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    sched = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}")},
                                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})

    def sync() -> None:
        wanted = store.jobs()
        for j in sched.get_jobs():
            if j.id not in wanted:
                sched.remove_job(j.id)
                print(f"job {j.id}: removed", flush=True)
        for name, spec in wanted.items():
            current = sched.get_job(name)
            if current is None or current.kwargs.get("spec") != spec:
                job = Job(**spec)
                sched.add_job(fire, job.trigger(), id=name, name=name, replace_existing=True,
                              kwargs={"name": name, "data_dir": str(settings.data_dir), "spec": spec})
                print(f"job {name}: scheduled, {job.when}", flush=True)

    # Syncing runs here, on the main thread, never on the scheduler's workers: shutdown holds the
    # job-store lock while it waits for its workers, so a worker that wants that lock (as a sync
    # does) would wait for ever, and Ctrl-C would hang. Started before the first sync, so that a
    # job already in schedule.db keeps its stored next run time (and a missed run is caught up).
    # SIGTERM (a service manager's stop) ends it as Ctrl-C does; SIGINT alone is not enough, since
    # a process started in the background of a script inherits SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sched.start()
    try:
        while True:
            sync()
            time.sleep(sync_every)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:  # stop the executors after the runs in flight finish, or the process lingers on their threads
        sched.shutdown(wait=True)
