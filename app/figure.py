"""``conclave figure``: the figure team, recorded in the run store, with the team's messages
drawn as they come and the chosen figure written to a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from conclave.agents.figure import FigureConfig, FigureResult, run
from conclave.agents.figure.data import describe
from conclave.app.store import RunStore


def execute(settings, store: RunStore, config: FigureConfig, *, coder: str | None = None, critic: str | None = None,
            backend: str | None = None, critic_backend: str | None = None, on_event=None) -> tuple[str, FigureResult]:
    """Run the team on one request: what the CLI, the web UI and batch jobs call. The critic
    defaults to the coder's model, loaded once. ``on_event`` gets {"kind": "run" | "loading"
    | "start" | "message" | "iteration" | "critique", ...}."""
    emit = on_event or (lambda e: None)
    if config.data is not None:
        describe(config.data)  # a bad data file fails before any model loads or any run is recorded
    coder = coder or settings.model
    spec = {"coder": coder, "critic": critic or coder, "backend": backend, "critic_backend": critic_backend}
    with store.run("figure", {"figure": config.model_dump(mode="json"), "spec": spec}) as run_id:
        emit({"kind": "run", "run_id": run_id, "max_iterations": config.max_iterations})
        same = spec["critic"] == coder and critic_backend in (None, backend)
        emit({"kind": "loading", "models": [coder] if same else [coder, spec["critic"]]})
        coder_llm = settings.open_llm(coder, backend=backend, sink=store.record_call)
        critic_llm = None
        try:
            if not same:
                critic_llm = settings.open_llm(spec["critic"], backend=critic_backend, sink=store.record_call)
            result = run(config, coder_llm, critic_llm, on_event=emit)
        finally:
            coder_llm.close()
            if critic_llm is not None:
                critic_llm.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


def run_figure(settings, store: RunStore, config: FigureConfig, *, coder: str | None = None, critic: str | None = None,
               backend: str | None = None, critic_backend: str | None = None, png: Path | None = None,
               out_file: Path | None = None, console: Console, status: Console, on_event=None) -> FigureResult:
    """``execute``, printing each agent's turn, then the report; the chosen figure goes to ``png``."""

    def draw(e: dict) -> None:
        if on_event is not None:
            on_event(e)
        if e["kind"] == "loading":
            status.print(f"[dim]loading {', '.join(e['models'])} …[/]")
        elif e["kind"] == "message" and e["source"] != "executor":
            status.print(f"[bold]{e['source']}[/]: {escape(e['text'][:400])}{' …' if len(e['text']) > 400 else ''}",
                         highlight=False)
        elif e["kind"] == "iteration":
            status.print(f"[bold]executor[/]: iteration {e['index']} {e['status']}, checklist {e['score']:.2f} "
                         f"({e['seconds']:.1f} s)")

    run_id, result = execute(settings, store, config, coder=coder, critic=critic, backend=backend,
                             critic_backend=critic_backend, on_event=draw)
    console.print(Markdown(result.report()))
    status.print(f"[dim]run {run_id[:8]} in {store.path}[/]")
    target = png or Path("figure.png")
    if result.figure is not None:
        result.save_png(target)
        status.print(f"figure: {target}")
    if out_file:
        out_file.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    return result
