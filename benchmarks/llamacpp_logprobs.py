"""Tokens/s of the llamacpp backend with and without log-probs, on the embedded model.

Anchors, measured side by side in the same run on the same weights and settings:
llama-cpp-python's own ``create_completion`` (plain), and its log-prob path, which
needs ``logits_all=True``. Every path, ours and theirs, generates the same ``--tokens``
for the same ``--rounds`` after one untimed warm-up run of its own. Goal: our log-prob path
keeps >= 80% of our plain speed.

    python benchmarks/llamacpp_logprobs.py [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from rich.console import Console
from rich.table import Table

from conclave.agents.backends.local import LocalLLM
from conclave.app.settings import load_settings
from conclave.local_models import catalog
from conclave.local_models.llamacpp import LlamaCppEngine, stock_llama

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def rate(fn, rounds: int) -> tuple[float, int]:
    """Median tokens/s over ``rounds`` runs of ``fn`` (which returns the tokens it generated),
    after one untimed run: every path is timed warm, none pays the first run's costs."""
    fn()
    rates, n = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    settings = load_settings()
    spec = catalog.CATALOG[catalog.DEFAULT_MODEL]
    path = catalog.ensure_weights(spec, settings.data_dir)
    threads = settings.n_threads or os.cpu_count()
    n = args.tokens

    stock = stock_llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=True)
    stock_all = stock_llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=True, logits_all=True)
    ours = LocalLLM(LlamaCppEngine(path, n_ctx=2048, n_threads=threads), backend="llamacpp", model=spec.name)

    def stock_plain():
        return stock.create_completion(PROMPT, max_tokens=n, temperature=0)["usage"]["completion_tokens"]

    def stock_logprobs():
        return stock_all.create_completion(PROMPT, max_tokens=n, temperature=0, logprobs=1)["usage"]["completion_tokens"]

    def ours_with(**kw):
        return lambda: ours.complete(PROMPT, max_tokens=n, temperature=0, **kw).usage.completion_tokens

    rows = []
    for name, fn in [
        ("llama-cpp-python create_completion (anchor)", stock_plain),
        ("llama-cpp-python logprobs=1 (logits_all=True)", stock_logprobs),
        ("conclave llamacpp, plain", ours_with()),
        ("conclave llamacpp, logprobs", ours_with(logprobs=True)),
        ("conclave llamacpp, logprobs + top 5", ours_with(logprobs=True, top_logprobs=5)),
    ]:
        tps, got = rate(fn, args.rounds)
        rows.append((name, got, tps))

    anchor = rows[0][2]
    ours_base = rows[2][2]
    table = Table(title=f"{spec.name} ({spec.filename}), greedy, {n} tokens asked, median of {args.rounds} warm rounds, "
                        f"{threads} threads, {platform.processor() or platform.machine()}")
    for col in ("path", "tokens", "tok/s", "vs anchor", "vs conclave plain"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, got, tps in rows:
        table.add_row(name, str(got), f"{tps:.1f}", f"{tps / anchor:.2f}x", f"{tps / ours_base:.2f}x")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    if len({got for _, got, _ in rows}) > 1:  # a path that stopped early (end of text) did other work
        console.print("[bold red]the paths generated different token counts: their rates are not of the same work[/]")
    keep = rows[3][2] / ours_base
    console.print(f"log-prob path keeps {keep:.0%} of plain speed (goal >= 80%): {'met' if keep >= 0.8 else 'NOT met'}")
    console.print(f"conclave log-probs vs llama-cpp-python log-probs: {rows[3][2] / rows[1][2]:.1f}x")


if __name__ == "__main__":
    main()
