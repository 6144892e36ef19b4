"""What every page shares: the settings, the run store, the background runs, the model
choices, and the live view and history of a workflow's runs."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import streamlit as st

from conclave.app.settings import Settings, load_settings
from conclave.app.store import Run, RunStore
from conclave.app.ui.background import Background, Registry
from conclave.local_models import catalog


def page(title: str) -> None:
    """Every page opens with this: the browser tab's title and the wide layout."""
    st.set_page_config(page_title=f"{title} · Conclave" if title != "Conclave" else title, page_icon=":material/hub:",
                       layout="wide")


@st.cache_resource
def settings() -> Settings:
    return load_settings()


@st.cache_resource
def store() -> RunStore:
    return RunStore(settings().db_path)


@st.cache_resource
def registry() -> Registry:
    return Registry()


def save_upload(upload) -> Path:
    """An uploaded file, kept under the data dir by content hash: a run's recorded config then
    names a file that exists, and the same upload twice is one file."""
    data = upload.getvalue()
    path = settings().data_dir / "uploads" / f"{hashlib.sha256(data).hexdigest()[:12]}-{Path(upload.name).name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def model_choices() -> list[str]:
    """The configured model first, then every installed catalog model."""
    s = settings()
    names = [s.model] + [m.name for m in catalog.CATALOG.values() if catalog.is_installed(m, s.data_dir)]
    return list(dict.fromkeys(names))


def when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def took(run: Run) -> str:
    end = run.finished_at or (time.time() if run.status == "running" else run.updated_at)
    return f"{end - run.created_at:.0f} s"


def live(workflow: str, show: Callable[[Background], None]) -> Background | None:
    """The newest background run of ``workflow`` started from this server, shown by ``show``
    while it runs, refreshed every second without blocking the page; when it ends, the whole
    page runs again, once, to show its result. Returns it."""
    runs = registry().of(workflow)
    if not runs:
        return None
    bg = runs[0]
    finished = st.session_state.setdefault("conclave_finished", set())
    if bg.done:
        finished.add(bg.id)
        if bg.error:
            st.error(f"The last run failed: {bg.error}")
        return bg

    @st.fragment(run_every=1.0)
    def view() -> None:
        if bg.done:
            if bg.id not in finished:
                finished.add(bg.id)
                st.rerun()
            return
        with st.status(f"{bg.label}: running for {time.time() - bg.started:.0f} s", expanded=True):
            show(bg)

    view()
    return bg


def history(workflow: str, summary: Callable[[Run], dict], key: str) -> Run | None:
    """Past runs of ``workflow`` from the run store, newest first, as a table; the run picked
    below it (the newest by default) is returned to be shown."""
    runs = store().list_runs(workflow, limit=200)
    if not runs:
        st.info("No runs yet. Start one above; it is kept in the run store, with its calls.")
        return None
    rows = [{"run": r.id[:8], "status": r.status, "started": when(r.created_at), "took": took(r), **summary(r)} for r in runs]
    st.dataframe(rows, hide_index=True, width="stretch")
    labels = {f"{r.id[:8]} · {r.status} · {when(r.created_at)}": r for r in runs}
    # keyed by the newest run: a run that lands while the page is open is the one shown
    picked = st.selectbox("Open a run", list(labels), key=f"{key}-{runs[0].id}")
    return labels[picked] if picked else None


def unfinished(workflow: str, run: Run, label: str, resume: Callable[[Callable[[dict], None]], object],
               progress: Callable[[tuple[int, object]], str]) -> None:
    """A run with no result: its status, how far its checkpoint got (``progress`` words it),
    and, for a failed run that is not going already, a button that resumes it in the
    background with ``resume(on_event)``."""
    saved = store().checkpoint(run.id)
    going = any(b.run_id == run.id and not b.done for b in registry().of(workflow))
    st.info(f"Run {run.id[:8]} is {run.status}" + (f": {run.error}" if run.error else ".") +
            (f" {progress(saved)}" if saved else ""))
    if saved and run.status == "failed" and not going and st.button("Resume it from its checkpoint"):
        registry().start(workflow, f"{label}, resuming {run.id[:8]}", resume)
        st.rerun()
