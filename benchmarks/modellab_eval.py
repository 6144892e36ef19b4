"""The model lab's recipes, evaluated: each runs its default configuration (or a TOML file's)
through the run store, prints its tables with the machine they were measured on, and writes
its plots and JSON under ``--out``.

    python benchmarks/modellab_eval.py goldfish [rest minillm ademamix quant_dpo squash | all]
        [--config recipe.toml] [--out benchmarks/out] [--threads 2]

Every default finishes in under 15 minutes on 2 CPU cores (minillm needs the two Qwen models:
conclave models pull qwen2.5-coder-1.5b-instruct; conclave models pull qwen2.5-coder-0.5b-instruct).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.markdown import Markdown

from conclave.agents.modellab import RECIPES
from conclave.app.modellab import execute
from conclave.app.settings import load_settings
from conclave.app.store import RunStore
from conclave.app.workflows import read_config


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, no GPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="+", help=f"{' | '.join(RECIPES)} | all")
    ap.add_argument("--config", type=Path, help="settings for a single recipe (TOML)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    names = list(RECIPES) if a.recipes == ["all"] else a.recipes
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    if a.config and len(names) > 1:
        ap.error("--config is for one recipe at a time")
    if a.threads:
        torch.set_num_threads(a.threads)
    console = Console()
    settings = load_settings()
    store = RunStore(settings.db_path)
    a.out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]device:[/] {machine()}; torch {torch.__version__}")
    for name in names:
        cfg = RECIPES[name].config(**(read_config(a.config) if a.config else {}))
        t0 = time.perf_counter()
        last = [0.0]

        def progress(e: dict) -> None:
            if e["kind"] in ("phase", "loading") or (e["kind"] == "step" and time.perf_counter() - last[0] > 30):
                last[0] = time.perf_counter()
                what = e.get("phase") or e.get("model")
                step = f" step {e['step']}/{e['steps']} loss {e['loss']:.3f}" if e["kind"] == "step" else ""
                console.print(f"[dim]{time.perf_counter() - t0:6.0f}s {name}: {e['kind']} {what}{step}[/]")

        run_id, result = execute(settings, store, name, cfg, on_event=progress)
        console.print(Markdown(result.report()))
        plot = result.plot(a.out / f"{name}.png")
        (a.out / f"{name}.json").write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
        console.print(f"[dim]run {run_id[:8]}; plot {plot}; {time.perf_counter() - t0:.0f} s[/]\n")


if __name__ == "__main__":
    main()
