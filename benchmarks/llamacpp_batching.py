"""Does reading several prompts in one llama.cpp decode pay on this machine?

Reads ``--seqs`` prompts of ``--tokens`` tokens each, one decode per prompt (the anchor),
then all of them in one multi-sequence decode (as ``conclave serve`` batches prefill),
with llama.cpp's per-sequence KV streams (our engine's setting) and with one unified
cache; beside them, one sequence as long as all of them together. Also the prefill rate
at growing context, which shows what attention costs on long prompts.

    python benchmarks/llamacpp_batching.py [--model smollm2-135m-instruct] [--seqs 4] [--tokens 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import time

from rich.console import Console
from rich.table import Table

from conclave.app.settings import load_settings
from conclave.local_models import catalog
from conclave.local_models.llamacpp import LlamaCppEngine


def unified(engine: LlamaCppEngine, n_ctx: int, n_seqs: int, threads: int) -> None:
    """Swap the engine's context for one with a single KV cache shared by every sequence."""
    import llama_cpp
    from llama_cpp import _internals

    p = llama_cpp.llama_context_default_params()
    p.n_ctx, p.n_seq_max, p.kv_unified = n_ctx * n_seqs, n_seqs, True
    p.n_batch = p.n_ubatch = engine.n_batch
    p.n_threads = p.n_threads_batch = threads
    engine._ctx = _internals.LlamaContext(model=engine._model, params=p, verbose=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    settings = load_settings()
    spec = catalog.resolve(args.model or settings.model)
    path = catalog.ensure_weights(spec, settings.data_dir)
    threads = settings.n_threads or __import__("os").cpu_count()
    rng = random.Random(0)
    seqs = [[rng.randrange(1000, 20000) for _ in range(args.tokens)] for _ in range(args.seqs)]

    def timed(engine, make_work) -> float:
        engine.decode(make_work()[0])  # warm-up
        for s in range(args.seqs):
            engine.truncate(s, 0)
        t = time.perf_counter()
        for _ in range(args.rounds):
            for work in make_work():
                engine.decode(work)
            for s in range(args.seqs):
                engine.truncate(s, 0)
        return (time.perf_counter() - t) / args.rounds

    rows = []
    for label, shared in (("per-sequence KV streams", False), ("unified KV cache", True)):
        engine = LlamaCppEngine(path, name=spec.name, n_ctx=max(512, 2 * args.tokens * args.seqs), n_threads=threads,
                                n_slots=args.seqs)
        if shared:
            unified(engine, engine.n_ctx, args.seqs, threads)
        one_by_one = timed(engine, lambda: [[(s, seqs[s], False)] for s in range(args.seqs)])
        together = timed(engine, lambda: [[(s, seqs[s], False) for s in range(args.seqs)]])
        rows.append((f"{args.seqs} x {args.tokens} tokens, one decode each (anchor), {label}", one_by_one, one_by_one))
        rows.append((f"{args.seqs} x {args.tokens} tokens in one decode, {label}", together, one_by_one))
        if not shared:
            whole = timed(engine, lambda: [[(0, sum(seqs, []), False)]])
            rows.append((f"one sequence of {args.seqs * args.tokens} tokens", whole, one_by_one))
        del engine

    console = Console(width=120)
    table = Table(title=f"Prompt reading in llama.cpp: {spec.name}, {threads} threads, mean of {args.rounds} rounds")
    for col in ("what", "ms", "ms/token", "vs anchor"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for what, secs, anchor in rows:
        table.add_row(what, f"{secs * 1000:.0f}", f"{secs * 1000 / (args.seqs * args.tokens):.2f}", f"{anchor / secs:.2f}x")
    console.print(table)

    engine = LlamaCppEngine(path, name=spec.name, n_ctx=4096, n_threads=threads)
    table = Table(title="Prefill rate against context length (one sequence, 512-token batches)")
    for col in ("context", "tok/s"):
        table.add_column(col, justify="right")
    for n in (256, 512, 1024, 2048, 4000):
        toks = [rng.randrange(1000, 20000) for _ in range(n)]
        engine.truncate(0, 0)
        t = time.perf_counter()
        engine.prefill(toks)
        table.add_row(str(n), f"{n / (time.perf_counter() - t):.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
