"""``conclave evoprompt``: an EvoPrompt run with a progress bar, checkpointed to the run store
after every generation, so ``--resume RUN`` picks up a stopped run where it was."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.evoprompt import RECIPES, EvoConfig, EvoError, EvoResult, Task, from_file, recipe, run
from agents.memo import Memo
from app.store import RunStore


def load_task(spec: dict) -> Task:
    """The task a run's spec names: a shipped recipe, or a CSV/JSONL file with its options."""
    sizes = dict(dev_size=spec["dev_size"], test_size=spec["test_size"], seed=spec["split_seed"])
    if spec["task"] in RECIPES:
        task = recipe(spec["task"], **sizes)
        return dataclasses.replace(task, manual_prompts=tuple(spec["prompts"])) if spec.get("prompts") else task
    return from_file(Path(spec["task"]), kind=spec["kind"], verbalizer=spec.get("verbalizer"), prompts=spec.get("prompts"),
                     text_field=spec["text_field"], label_field=spec["label_field"], **sizes)


def run_evoprompt(settings, store: RunStore, config: EvoConfig | None, spec: dict | None, *, resume: str | None = None,
                  out_file: Path | None = None, plot: Path | None = None, console: Console, status: Console) -> EvoResult:
    """A new run (``config`` and ``spec``: task and models), or ``resume``: a stopped run's id (or its prefix)."""
    state = None
    if resume:
        try:
            old = store.find_run(resume)
        except KeyError as e:
            raise EvoError(str(e).strip("'\"")) from None
        if old.workflow != "evoprompt":
            raise EvoError(f"run {old.id[:8]} is a {old.workflow} run, not an EvoPrompt run")
        config, spec = EvoConfig(**old.config["evoprompt"]), old.config["spec"]
        saved = store.checkpoint(old.id)
        state = saved[1] if saved else None
        resume = old.id
    task = load_task(spec)  # bad data fails here, before a model is loaded or a run recorded
    with store.run("evoprompt", {"evoprompt": config.model_dump(), "spec": spec}, resume=resume) as run_id:
        with status.status("loading models …"):
            task_llm = settings.open_llm(spec["model"], backend=spec["backend"], sink=store.record_call)
            same = (spec["evolver"], spec["evolver_backend"]) == (spec["model"], spec["backend"])
            evolver = task_llm if same else settings.open_llm(spec["evolver"], backend=spec["evolver_backend"],
                                                              sink=store.record_call)
        scores = Memo(settings.data_dir / "evoprompt" / "scores.db")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("best dev {task.fields[best]}, {task.fields[tokens]} tokens"), TimeElapsedColumn(),
                      console=status) as bar:
            done = len(state["generations"]) - 1 if state else 0
            gens = bar.add_task(f"{config.algorithm} generations", total=config.generations, completed=done,
                                best="-", tokens=0)

            def on_event(e: dict) -> None:
                if e["kind"] == "generation":
                    bar.update(gens, completed=e["generation"], best=f"{e['best']:.3f}", tokens=f"{e['tokens']:,}")
                elif e["kind"] == "test":
                    bar.update(gens, description=f"scoring the top {e['prompts']} on {e['examples']} test examples")

            try:
                result = run(config, evolver, task_llm, task, cache=scores, on_event=on_event, resume=state,
                             checkpoint=lambda g, s: store.save_checkpoint(run_id, g, s))
            finally:
                scores.close()
                task_llm.close()
                if evolver is not task_llm:
                    evolver.close()
        store.finish_run(run_id, result.to_dict())
    console.print(Markdown(result.report()))
    status.print(f"[dim]run {run_id[:8]} in {store.path}[/]")
    if out_file:
        out_file.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    if plot:
        result.plot(plot)
        status.print(f"[dim]fitness plot: {plot}[/]")
    return result
