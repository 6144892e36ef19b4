"""``conclave mapreduce``: a map-reduce run with a progress bar, recorded in the run store."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conclave.agents.mapreduce import Cache, MapReduceConfig, MapReduceResult, RayExecutor, read_documents, run
from conclave.app.store import RunStore


def execute(settings, store: RunStore, config: MapReduceConfig, files: list[Path], *, model=None, backend=None,
            use_ray: bool = False, cache: bool = True, on_event=None) -> tuple[str, MapReduceResult]:
    """A map-reduce run recorded in the run store: what the CLI, the web UI and batch jobs all
    call. ``on_event`` gets {"kind": "run" | "loading" | "split" | "map" | "round" | "merge" |
    "reduce" | "done" | "warning", ...} as the run goes. Returns (run id, result)."""
    emit = on_event or (lambda e: None)
    records = read_documents(files)  # bad files fail here, before a model is loaded or a run recorded
    name = model or settings.model
    with store.run("mapreduce", {**config.model_dump(), "files": [str(f) for f in files], "model": name,
                                 "backend": backend, "ray": use_ray}) as run_id:
        emit({"kind": "run", "run_id": run_id})
        emit({"kind": "loading", "models": [name]})
        llm = settings.open_llm(model, backend=backend, sink=store.record_call)
        answers = Cache(settings.data_dir / "mapreduce" / "cache.db" if cache else None)
        try:
            executor = None
            if use_ray:
                # a served model works on its server: its calls need little CPU of their own
                share = 0.25 if llm.backend == "openai" else 1.0
                executor = RayExecutor(settings.llm_factory(model, backend=backend), num_cpus=share)
            result = run(config, llm, records, cache=answers, executor=executor, on_event=emit)
        finally:
            answers.close()
            llm.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


def run_mapreduce(settings, store: RunStore, config: MapReduceConfig, files: list[Path], *, model=None, backend=None,
                  use_ray: bool = False, cache: bool = True, out_file: Path | None = None, console: Console,
                  status: Console, on_event=None):
    """``execute`` with progress bars, then the answer (and the JSON, if asked for). ``on_event``
    hears the events too."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[tokens]} tokens"), TimeElapsedColumn(), console=status) as bar:
        tasks: dict[str, int] = {}

        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            kind = e["kind"]
            if kind == "loading":
                tasks["loading"] = bar.add_task(f"loading {', '.join(e['models'])} …", total=None, tokens=0)
            elif kind == "split":
                if "loading" in tasks:
                    bar.remove_task(tasks.pop("loading"))
                tasks["map"] = bar.add_task(f"map ({e['chunk_tokens']}-token parts)", total=e["parts"], tokens=0)
            elif kind == "map":
                bar.update(tasks["map"], completed=e["done"], tokens=e["tokens"])
            elif kind == "round":
                tasks["round"] = bar.add_task(f"collapse round {e['round']} ({e['items']} answers)",
                                              total=e["merges"], tokens=0)
            elif kind == "merge":
                bar.update(tasks["round"], completed=e["done"], tokens=e["tokens"])
            elif kind == "reduce":
                tasks["reduce"] = bar.add_task(f"reduce ({e['items']} answers)", total=1, tokens=e["tokens"])
            elif kind == "done" and "reduce" in tasks:
                bar.update(tasks["reduce"], completed=1, tokens=e["tokens"])
            elif kind == "warning":
                bar.console.print(f"[yellow]warning:[/] {escape(e['message'])}", highlight=False)

        run_id, result = execute(settings, store, config, files, model=model, backend=backend, use_ray=use_ray,
                                 cache=cache, on_event=draw)
    if result.data is not None:
        console.print_json(result.answer)
    else:
        console.print(Markdown(result.answer) if result.answer else "[dim](no answer)[/]")
    status.print(f"[dim]parts: {len(result.parts)}, collapse rounds: {len(result.rounds)}, model calls: {result.n_calls} "
                 f"(and {result.n_cached} from the cache), tokens: {result.prompt_tokens + result.completion_tokens}; "
                 f"run {run_id[:8]} in {store.path}[/]")
    if out_file:
        out_file.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    return result
