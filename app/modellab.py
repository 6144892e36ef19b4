"""``conclave run <recipe>`` for the model lab: a recipe run recorded in the run store, every
finished phase checkpointed there and every training run checkpointed under
``<data_dir>/modellab/<run>``, so ``--resume RUN`` continues a stopped run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conclave.agents.modellab import RECIPES, Lab, LabError, LabResult
from conclave.app.runs import present
from conclave.app.store import RunStore


def execute(settings, store: RunStore, recipe: str, config, *, resume: str | None = None,
            on_event=None) -> tuple[str, LabResult]:
    """Run ``recipe`` with ``config``, or ``resume`` a stopped run of it: what the CLI, the web
    UI and batch jobs call. ``on_event`` gets {"kind": "run" | "loading" | "phase" | "step", ...}."""
    emit = on_event or (lambda e: None)
    r = RECIPES[recipe]
    state = None
    if resume:
        try:
            old, state = store.resumable(resume, recipe)
        except KeyError as e:
            raise LabError(str(e).strip("'\"")) from None
        config, resume = r.config(**old.config[recipe]), old.id
    with store.run(recipe, {recipe: config.model_dump(mode="json")}, resume=resume) as run_id:
        emit({"kind": "run", "run_id": run_id, "recipe": recipe})
        workdir = settings.data_dir / "modellab" / run_id
        lab = Lab(settings.data_dir, workdir, on_event=emit, done=(state or {}).get("done"), threads=config.threads,
                  checkpoint=lambda done: store.save_checkpoint(run_id, len(done), {"done": done}))
        t0 = time.perf_counter()
        result = r.run(config, lab)
        result.wall_s = time.perf_counter() - t0
        store.finish_run(run_id, result.to_dict())
        shutil.rmtree(workdir, ignore_errors=True)
    return run_id, result


def run_recipe(settings, store: RunStore, recipe: str, config, *, resume: str | None = None,
               out_file: Path | None = None, plot: Path | None = None, console: Console, status: Console,
               on_event=None) -> LabResult:
    """``execute`` with a progress bar for each training run, then the report."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=status) as bar:
        ids = {}

        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            if e["kind"] == "run":
                ids["main"] = bar.add_task(f"{recipe} …", total=None, loss="")
            elif e["kind"] == "loading":
                bar.update(ids["main"], description=f"loading {e['model']} …")
            elif e["kind"] == "phase":
                bar.update(ids["main"], description=e["phase"])
            elif e["kind"] == "step":
                if e["phase"] not in ids:
                    ids[e["phase"]] = bar.add_task(e["phase"], total=e["steps"], loss="")
                bar.update(ids[e["phase"]], completed=e["step"], loss=f"loss {e['loss']:.3f}")

        run_id, result = execute(settings, store, recipe, config, resume=resume, on_event=draw)
    present(result, run_id, store, console=console, status=status, out_file=out_file, plot=plot, plot_name="plot")
    return result
