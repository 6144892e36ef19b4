"""``conclave evoprompt``: an EvoPrompt run with a progress bar, checkpointed to the run store
after every generation, so ``--resume RUN`` picks up a stopped run where it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conclave.agents.evoprompt import RECIPES, EvoConfig, EvoError, EvoResult, Task, from_file, recipe, run
from conclave.agents.memo import Memo
from conclave.app.runs import present
from conclave.app.store import RunStore


def parse_verbalizer(text: str | None) -> dict[str, str] | None:
    """"label=word,label=word" to a mapping (None for none given)."""
    if not text or not text.strip():
        return None
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
        raise EvoError(f"a verbalizer is label=word pairs separated by commas, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def make_spec(settings, task: str, *, model: str | None = None, backend: str | None = None, evolver: str | None = None,
              evolver_backend: str | None = None, kind: str = "classification", verbalizer: dict | None = None,
              prompts: list[str] | None = None, text_field: str = "text", label_field: str = "label",
              dev_size: int = 100, test_size: int = 300, split_seed: int = 0) -> dict:
    """A run's task and models, as recorded with it: the evolver defaults to the task model."""
    model = model or settings.model
    return {"task": task, "kind": kind, "verbalizer": verbalizer, "prompts": prompts or None, "text_field": text_field,
            "label_field": label_field, "dev_size": dev_size, "test_size": test_size, "split_seed": split_seed,
            "model": model, "backend": backend, "evolver": evolver or model,
            "evolver_backend": evolver_backend if evolver else (evolver_backend or backend)}


def load_task(spec: dict) -> Task:
    """The task a run's spec names: a shipped recipe, or a CSV/JSONL file with its options."""
    sizes = dict(dev_size=spec["dev_size"], test_size=spec["test_size"], seed=spec["split_seed"])
    if spec["task"] in RECIPES:
        task = recipe(spec["task"], **sizes)
        return dataclasses.replace(task, manual_prompts=tuple(spec["prompts"])) if spec.get("prompts") else task
    return from_file(Path(spec["task"]), kind=spec["kind"], verbalizer=spec.get("verbalizer"), prompts=spec.get("prompts"),
                     text_field=spec["text_field"], label_field=spec["label_field"], **sizes)


def execute(settings, store: RunStore, config: EvoConfig | None, spec: dict | None, *, resume: str | None = None,
            on_event=None) -> tuple[str, EvoResult]:
    """Run EvoPrompt, or ``resume`` a stopped run (its id or prefix), recorded and checkpointed in
    the run store: what the CLI, the web UI and batch jobs all call. ``on_event`` gets
    {"kind": "run" | "loading" | "generation" | "test", ...} as the run goes. Returns (run id, result)."""
    emit = on_event or (lambda e: None)
    state = None
    if resume:
        try:
            old, state = store.resumable(resume, "evoprompt")
        except KeyError as e:
            raise EvoError(str(e).strip("'\"")) from None
        config, spec = EvoConfig(**old.config["evoprompt"]), old.config["spec"]
        resume = old.id
    task = load_task(spec)  # bad data fails here, before a model is loaded or a run recorded
    with store.run("evoprompt", {"evoprompt": config.model_dump(), "spec": spec}, resume=resume) as run_id:
        emit({"kind": "run", "run_id": run_id, "algorithm": config.algorithm, "generations": config.generations,
              "done": len(state["generations"]) - 1 if state else 0})
        emit({"kind": "loading", "models": sorted({spec["model"], spec["evolver"]})})
        task_llm = settings.open_llm(spec["model"], backend=spec["backend"], sink=store.record_call)
        same = (spec["evolver"], spec["evolver_backend"]) == (spec["model"], spec["backend"])
        scores = Memo(settings.data_dir / "evoprompt" / "scores.db")
        evolver = task_llm
        try:
            if not same:
                evolver = settings.open_llm(spec["evolver"], backend=spec["evolver_backend"], sink=store.record_call)
            result = run(config, evolver, task_llm, task, cache=scores, on_event=emit, resume=state,
                         checkpoint=lambda g, s: store.save_checkpoint(run_id, g, s))
        finally:
            scores.close()
            task_llm.close()
            if evolver is not task_llm:
                evolver.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


def run_evoprompt(settings, store: RunStore, config: EvoConfig | None, spec: dict | None, *, resume: str | None = None,
                  out_file: Path | None = None, plot: Path | None = None, console: Console, status: Console,
                  on_event=None) -> EvoResult:
    """``execute`` with a progress bar, then the report (and the JSON and plot, if asked for).
    ``on_event`` hears the events too."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("best dev {task.fields[best]}, {task.fields[tokens]} tokens"), TimeElapsedColumn(),
                  console=status) as bar:
        bar_id, label = [], []

        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            if e["kind"] == "run":
                label.append(f"{e['algorithm']} generations")
                bar_id.append(bar.add_task(label[0], total=e["generations"], completed=e["done"], best="-", tokens=0))
            elif e["kind"] == "loading":
                bar.update(bar_id[0], description=f"loading {', '.join(e['models'])} …")
            elif e["kind"] == "generation":
                bar.update(bar_id[0], description=label[0], completed=e["generation"], best=f"{e['best']:.3f}",
                           tokens=f"{e['tokens']:,}")
            elif e["kind"] == "test":
                bar.update(bar_id[0], description=f"scoring the top {e['prompts']} on {e['examples']} test examples")

        run_id, result = execute(settings, store, config, spec, resume=resume, on_event=draw)
    present(result, run_id, store, console=console, status=status, out_file=out_file, plot=plot, plot_name="fitness plot")
    return result
