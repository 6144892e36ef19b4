"""EvoPrompt fitness: scoring the label words' log-probabilities against generating an answer
and parsing a label out of it, on the same model, prompt and examples.

The anchor is generate-and-parse (greedy, ``--max-tokens`` tokens, the first label word
in the reply wins; no label word is a miss). Ours is one scoring call per example through
the seam, as agents/evoprompt/fitness.py does it. Reported: examples per second, the
ratio, accuracy of each, and how often the two agree.

    python benchmarks/evoprompt_scoring.py [--model smollm2-135m-instruct] [--n 100] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import re
import time

from rich.console import Console
from rich.table import Table

import prompts
from agents.evoprompt import EvoConfig, Fitness, recipe
from app.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--n", type=int, default=100, help="examples")
    ap.add_argument("--max-tokens", type=int, default=8, help="generate-and-parse: tokens generated per example")
    args = ap.parse_args()
    console = Console()
    settings = load_settings()
    llm = settings.open_llm(args.model)
    task = recipe(args.task, dev_size=args.n, test_size=0, seed=0)
    instruction = task.manual_prompts[0]
    fit = Fitness(task, llm, EvoConfig(max_concurrency=1))
    words = {lab: w.lower() for lab, w in task.verbalizer.items()}
    llm.score(prompts.render("evoprompt_classify", instruction=instruction, text="warm-up"), fit.words)

    t = time.perf_counter()
    ours = [fit.predict(instruction, ex.text) for ex in task.dev]
    ours_s = time.perf_counter() - t

    t = time.perf_counter()
    parsed, misses = [], 0
    for ex in task.dev:
        out = llm.complete(prompts.render("evoprompt_classify", instruction=instruction, text=ex.text),
                           max_tokens=args.max_tokens, temperature=0.0)
        found = [(m.start(), lab) for lab, w in words.items() for m in [re.search(rf"\b{re.escape(w)}\b", out.text.lower())] if m]
        parsed.append(min(found)[1] if found else None)
        misses += not found
    anchor_s = time.perf_counter() - t

    gold = [ex.label for ex in task.dev]
    acc = lambda preds: sum(p == g for p, g in zip(preds, gold)) / len(gold)  # noqa: E731
    table = Table(title=f"{args.task}: {args.n} examples, {llm.model} ({llm.backend}); prompt: {instruction!r}")
    for col in ("scoring", "examples/s", "vs anchor", "accuracy", "no label found"):
        table.add_column(col, justify="left" if col == "scoring" else "right")
    table.add_row(f"generate {args.max_tokens} tokens + parse (anchor)", f"{args.n / anchor_s:.1f}", "1.00x",
                  f"{acc(parsed):.3f}", str(misses))
    table.add_row("label-word log-probs (ours)", f"{args.n / ours_s:.1f}", f"{anchor_s / ours_s:.2f}x", f"{acc(ours):.3f}", "0")
    console.print(table)
    agree = sum(a == b for a, b in zip(ours, parsed)) / args.n
    console.print(f"the two agree on {agree:.0%} of examples")
    llm.close()


if __name__ == "__main__":
    main()
