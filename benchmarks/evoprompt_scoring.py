"""EvoPrompt fitness: scoring the label words' log-probabilities against generating an answer
and parsing a label out of it, on the same model, prompt and examples.

The anchor is generate-and-parse as usually run: a greedy answer of ``--max-tokens``
tokens, in which the first label word wins (none is a miss).
Beside it, generate-and-parse at its best: streamed, and cut off as soon as a label word
is out. Ours is one scoring call per example through
the seam, as agents/evoprompt/fitness.py does it. Reported: examples per second, the
ratio, accuracy of each, and how often the two agree.

    python benchmarks/evoprompt_scoring.py [--model smollm2-135m-instruct] [--n 100] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import re
import time

from rich.console import Console
from rich.table import Table

from conclave.prompts import loader as prompts
from conclave.agents.evoprompt import EvoConfig, Fitness, recipe
from conclave.app.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--n", type=int, default=100, help="examples")
    ap.add_argument("--max-tokens", type=int, default=16, help="generate-and-parse: tokens generated per example")
    ap.add_argument("--batch", type=int, default=8, help="examples per scoring call (EvoConfig.score_batch)")
    args = ap.parse_args()
    console = Console()
    settings = load_settings()
    llm = settings.open_llm(args.model)
    task = recipe(args.task, dev_size=args.n, test_size=0, seed=0)
    instruction = task.manual_prompts[0]
    fit = Fitness(task, llm, EvoConfig(max_concurrency=1))
    words = {lab: w.lower() for lab, w in task.verbalizer.items()}
    llm.score(prompts.render("evoprompt_classify", instruction=instruction, text="warm-up"), fit.words)

    def first_label(text: str) -> str | None:
        found = [(m.start(), lab) for lab, w in words.items() for m in [re.search(rf"\b{re.escape(w)}\b", text.lower())] if m]
        return min(found)[1] if found else None

    def fixed_budget(ex) -> str:
        """The anchor as usually run: greedy, a short answer of a fixed budget, then parsed."""
        out = llm.complete(prompts.render("evoprompt_classify", instruction=instruction, text=ex.text),
                           max_tokens=args.max_tokens, temperature=0.0)
        return first_label(out.text)

    def early_exit(ex) -> str:
        """The anchor at its best: streamed, and cut off as soon as a label word is out."""
        text = ""
        for chunk in llm.stream_complete(prompts.render("evoprompt_classify", instruction=instruction, text=ex.text),
                                         max_tokens=args.max_tokens, temperature=0.0):
            text += chunk.text
            label = first_label(text if chunk.finish_reason else re.sub(r"\w+$", "", text))  # the last word may grow
            if label:
                return label
        return first_label(text)

    runs = {}
    for name, fn in ((f"generate {args.max_tokens} tokens + parse (anchor)", fixed_budget),
                     ("generate until a label word is out + parse", early_exit),
                     (f"label-word log-probs, {args.batch} a call (ours)", None)):
        t = time.perf_counter()
        if fn is None:  # as EvoPrompt scores: score_many over batches (one request each to an endpoint)
            texts = [ex.text for ex in task.dev]
            preds = [p for i in range(0, len(texts), args.batch) for p in fit.predict(instruction, texts[i : i + args.batch])]
        else:
            preds = [fn(ex) for ex in task.dev]
        runs[name] = (time.perf_counter() - t, preds)

    gold = [ex.label for ex in task.dev]
    anchor_s = next(iter(runs.values()))[0]
    ours = list(runs.values())[-1][1]
    table = Table(title=f"{args.task}: {args.n} examples, {llm.model} ({llm.backend}); prompt: {instruction!r}")
    for col in ("scoring", "examples/s", "vs anchor", "accuracy", "no label found", "agrees with ours"):
        table.add_column(col, justify="left" if col == "scoring" else "right")
    for name, (secs, preds) in runs.items():
        table.add_row(name, f"{args.n / secs:.1f}", f"{anchor_s / secs:.2f}x",
                      f"{sum(p == g for p, g in zip(preds, gold)) / len(gold):.3f}", str(sum(p is None for p in preds)),
                      f"{sum(p == o for p, o in zip(preds, ours)) / len(ours):.0%}")
    console.print(table)
    llm.close()


if __name__ == "__main__":
    main()
