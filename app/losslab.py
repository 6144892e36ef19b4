"""``conclave losslab``: loss discovery with a progress bar, checkpointed to the run store after
every judged candidate, so ``--resume RUN`` continues a stopped run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conclave.agents.losslab import LossLabConfig, LossLabError, LossLabResult, run
from conclave.agents.memo import Memo
from conclave.app.runs import present
from conclave.app.store import RunStore


def execute(settings, store: RunStore, config: LossLabConfig | None, *, model: str | None = None,
            backend: str | None = None, resume: str | None = None, on_event=None) -> tuple[str, LossLabResult]:
    """Run loss discovery, or ``resume`` a stopped run (its id or prefix), recorded and
    checkpointed in the run store: what the CLI, the web UI and batch jobs call. ``on_event``
    gets {"kind": "run" | "loading" | "start" | "proposing" | "candidate", ...}."""
    emit = on_event or (lambda e: None)
    state = None
    spec = {"model": model or settings.model, "backend": backend}
    if resume:
        try:
            old, state = store.resumable(resume, "losslab")
        except KeyError as e:
            raise LossLabError(str(e).strip("'\"")) from None
        config, spec = LossLabConfig(**old.config["losslab"]), old.config["spec"]
        resume = old.id
    with store.run("losslab", {"losslab": config.model_dump(mode="json"), "spec": spec}, resume=resume) as run_id:
        emit({"kind": "run", "run_id": run_id, "candidates": config.candidates, "baselines": len(config.baselines)})
        llm = None
        if config.candidates:
            emit({"kind": "loading", "models": [spec["model"]]})
            llm = settings.open_llm(spec["model"], backend=spec["backend"], sink=store.record_call)
        verdicts = Memo(settings.data_dir / "losslab" / "verdicts.db")
        try:
            result = run(config, llm, cache=verdicts, on_event=emit, resume=state, data_dir=settings.data_dir,
                         checkpoint=lambda i, s: store.save_checkpoint(run_id, i, s))
        finally:
            verdicts.close()
            if llm is not None:
                llm.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


def run_losslab(settings, store: RunStore, config: LossLabConfig | None, *, model: str | None = None,
                backend: str | None = None, resume: str | None = None, out_file: Path | None = None,
                plot: Path | None = None, console: Console, status: Console, on_event=None) -> LossLabResult:
    """``execute`` with a progress bar, then the report (and the JSON and plot, if asked for)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), console=status) as bar:
        ids = []

        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            if e["kind"] == "run":
                ids.append(bar.add_task("baselines", total=e["baselines"] + e["candidates"], best="-"))
            elif e["kind"] == "loading":
                bar.update(ids[0], description=f"loading {', '.join(e['models'])} …")
            elif e["kind"] == "proposing":
                bar.update(ids[0], description=f"proposal {e['proposal']} of {e['candidates']}")
            elif e["kind"] == "candidate":
                best = "-" if e["best"] is None else f"{e['best']:.4f}"
                bar.update(ids[0], completed=e["index"] + 1, best=best,
                           description=f"{e['name']}: {'%.4f' % e['fitness'] if e['valid'] else 'failed at ' + e['stage']}")

        run_id, result = execute(settings, store, config, model=model, backend=backend, resume=resume, on_event=draw)
    present(result, run_id, store, console=console, status=status, out_file=out_file, plot=plot, plot_name="plot")
    return result
