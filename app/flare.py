"""``conclave flare``: one question answered with FLARE (or a baseline) over an index, recorded
in the run store with its model calls and searches."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from conclave.agents.flare import FlareConfig, FlareResult, run
from conclave.app.store import RunStore
from conclave.retrieval.index import open_index


def execute(settings, store: RunStore, config: FlareConfig, question: str, index: str, *, search: str = "hybrid",
            model: str | None = None, backend: str | None = None, on_event=None) -> tuple[str, FlareResult]:
    """What the CLI, the web UI and batch jobs call. ``on_event`` gets {"kind": "run" | "loading"
    | FLARE's own step events, ...}. Returns (run id, result)."""
    emit = on_event or (lambda e: None)
    idx = open_index(index, settings.data_dir, settings.chroma_url, create=False, sink=store.record_retrieval)
    with store.run("flare", {**config.model_dump(), "index": index, "search": search, "question": question,
                             "model": model or settings.model}) as run_id:
        emit({"kind": "run", "run_id": run_id})
        emit({"kind": "loading", "models": [model or settings.model]})
        llm = settings.open_llm(model, backend=backend, sink=store.record_call)

        class Search:  # the index, in the chosen search mode
            def search(self, query: str, k: int = 5):
                return idx.search(query, k, mode=search)

        try:
            result = run(config, llm, Search(), question, on_event=emit)
        finally:
            llm.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


def run_flare(settings, store: RunStore, config: FlareConfig, question: str, index: str, *, search: str = "hybrid",
              model: str | None = None, backend: str | None = None, out_file: Path | None = None, console: Console,
              status: Console, on_event=None) -> FlareResult:
    """``execute`` with a spinner, then the answer and its step trace. ``on_event`` hears the
    events too."""
    with status.status("opening the index …") as spinner:
        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            if e["kind"] == "loading":
                spinner.update(f"loading {', '.join(e['models'])} …")
            elif e["kind"] != "run":
                spinner.update(f"step {e.get('step')}: {e.get('kind')} …")

        run_id, result = execute(settings, store, config, question, index, search=search, model=model, backend=backend,
                                 on_event=draw)
    console.print(Markdown(result.report()))
    console.print(f"[dim]run {run_id[:8]} in {store.path}[/]")
    if out_file:
        out_file.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    return result
