"""The main job until the UI lands: every part of the seam, end to end, on a real model."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from conclave.prompts import loader as prompts
from conclave.app.store import RunStore

QUESTION = "What is a multi-agent LLM workflow, and why would a critic agent help a coder agent?"
REVIEWS = [
    "A warm, funny and beautifully acted film. I loved every minute of it.",
    "A joyless, plodding mess with wooden acting and a script that goes nowhere.",
]
LABELS = [" positive", " negative"]


def run_demo(settings, store: RunStore, *, model=None, backend=None, console: Console, status: Console) -> dict:
    with store.run("demo", {"model": model or settings.model, "backend": backend}) as run_id:
        with status.status(f"loading {model or settings.model} …"):
            llm = settings.open_llm(model, backend=backend, sink=store.record_call)
        console.rule(f"[bold]1. A streamed answer[/] from {llm.model} ({llm.backend})")
        console.print(f"[bold]Q:[/] {QUESTION}")
        console.print("[bold]A:[/] ", end="")
        text, tokens = [], []
        for chunk in llm.stream_chat(prompts.render("demo", question=QUESTION), temperature=0.0, max_tokens=120, logprobs=True, top_logprobs=3):
            text.append(chunk.text)
            tokens.extend(chunk.logprobs)
            console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
        console.print()

        console.rule("[bold]2. Where the model was least sure[/] (log-probs of the generated tokens)")
        table = Table()
        for col in ("token", "p", "alternatives"):
            table.add_column(col)
        for t in sorted(tokens, key=lambda t: t.logprob)[:5]:
            alts = ", ".join(f"{tok!r} {math.exp(lp):.2f}" for tok, lp in t.top if tok != t.token)
            table.add_row(repr(t.token), f"{t.prob:.2f}", alts)
        console.print(table)

        console.rule("[bold]3. Classification by scoring continuations[/] (no generation)")
        table = Table()
        for col in ("review", "label", "log P(positive)", "log P(negative)"):
            table.add_column(col)
        labels = []
        for review in REVIEWS:
            pos, neg = llm.score(prompts.render("sentiment", review=review), LABELS)
            label = "positive" if pos.logprob > neg.logprob else "negative"
            labels.append(label)
            table.add_row(review, label, f"{pos.logprob:.2f}", f"{neg.logprob:.2f}")
        console.print(table)

        from conclave.app.cli import calls_table

        console.rule("[bold]4. Every call, from the call log[/]")
        rows = list(reversed(store.calls(run_id=run_id)))
        console.print(calls_table(rows, title=f"{llm.backend}:{llm.model}, run {run_id[:8]}", compact=True))
        console.print(f"[dim]call log: {store.path} (see also: conclave calls)[/]")
        result = {"answer": "".join(text), "labels": labels, "tokens": len(tokens)}
        store.finish_run(run_id, result)
        llm.close()
    return result
