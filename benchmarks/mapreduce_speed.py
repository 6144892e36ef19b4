"""Map-reduce summarization: ours against LangChain's, on the same server, model, parts and prompts.

Both talk to ``conclave serve`` (continuous batching over ``--slots`` sequences) through
the OpenAI API: ours through the openai backend (counting tokens with a vocab-only
copy of the model's tokenizer), LangChain through ``ChatOpenAI`` in
``langchain_classic``'s ``load_summarize_chain(chain_type="map_reduce")``. The server is
restarted before each run, so no run finds another's prompts in its cache, and gets one
untimed warm-up request.

What is held equal: the parts (LangChain gets exactly the parts our splitter made, as
Documents), the wording of the map and merge prompts (ours, turned into LangChain
templates; LangChain joins the summaries with blank lines where ours numbers them),
the output budgets (``--map-max-tokens`` for the map, ``--reduce-max-tokens`` for
collapse and reduce), greedy decoding, and the collapse threshold (LangChain's
``token_max`` is our merge budget, counted with the same tokenizer). What differs is the
orchestration: ours keeps ``--max-concurrency`` calls in flight and collapses only while
the answers do not fit one merge; LangChain's ``invoke`` makes its calls one after
another, and its ``ainvoke`` sends each step's calls all at once.

Reported: wall time, model calls, collapse calls, total tokens (as the server counted
them), and each run's wall time over ours.

    python benchmarks/mapreduce_speed.py [--model NAME] [--size 16000] [--chunk-tokens 1024]
        [--slots 8] [--max-concurrency 8] [--map-max-tokens 128] [--reduce-max-tokens 256]
        [--n-ctx 4096] [--threads N] [--skip-async]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from conclave.prompts import loader as prompts
from conclave.agents.backends.openai_api import OpenAILLM
from conclave.agents.mapreduce import MapReduceConfig, run
from conclave.app.settings import load_settings
from conclave.local_models import catalog
from conclave.local_models.llamacpp import LlamaCppVocab
from mapreduce_facts import base_text, long_text  # noqa: E402 (a sibling script)
from conclave.retrieval.ingest import Record
from server_throughput import Server, free_port  # noqa: E402 (a sibling script)


def serve(label: str, model: str, slots: int, n_ctx: int, threads: int | None, log_dir: Path) -> Server:
    port = free_port()
    env = {**os.environ, "CONCLAVE_N_CTX": str(n_ctx)}
    if threads:
        env["CONCLAVE_N_THREADS"] = str(threads)
    server = Server(label, [sys.executable, "-m", "conclave.app.cli", "serve", "--model", model, "--port", str(port),
                            "--slots", str(slots), "--max-queue", "256"], env, "/health", port, log_dir)
    server.start(timeout=180)
    httpx.post(f"{server.base_url}/v1/chat/completions", timeout=300,
               json={"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8})
    return server


def ours(base_url: str, model: str, vocab, doc: str, config: MapReduceConfig) -> dict:
    llm = OpenAILLM(model, base_url=f"{base_url}/v1", tokenizer=vocab, timeout=600)
    t0 = time.perf_counter()
    result = run(config, llm, [Record(doc, "document.txt")])
    wall = time.perf_counter() - t0
    llm.close()
    merges = sum(len(r) for r in result.rounds)
    return {"wall": wall, "calls": result.n_calls, "collapse": merges, "tokens": result.prompt_tokens + result.completion_tokens,
            "answer": result.answer, "parts": [doc[p.start:p.end] for p in result.parts], "merge_budget": result.budget["merge_prompt"]}


def _template(pid: str, **values) -> list[tuple[str, str]]:
    """One of our chat prompts as LangChain (role, template) pairs, its document slot as {text}."""
    rendered = prompts.render(pid, **values)
    out = []
    for m in rendered.messages:
        content = m["content"].replace("{", "{{").replace("}", "}}").replace("\x00TEXT\x00", "{text}")
        out.append(("human" if m["role"] == "user" else m["role"], content))
    return out


def langchain(base_url: str, model: str, vocab, parts: list[str], merge_budget: int, args, mode: str) -> dict:
    from langchain_classic.chains.summarize import load_summarize_chain
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.documents import Document
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    class Usage(BaseCallbackHandler):
        def __init__(self):
            self.calls = self.tokens = 0

        def on_llm_end(self, response, **kw):
            for gens in response.generations:
                for g in gens:
                    self.calls += 1
                    meta = getattr(getattr(g, "message", None), "usage_metadata", None) or {}
                    self.tokens += meta.get("total_tokens", 0)

    def chat(max_tokens: int) -> ChatOpenAI:
        # its own token counter would fetch tiktoken's files; it counts with the served model's tokenizer instead
        return ChatOpenAI(model=model, base_url=f"{base_url}/v1", api_key="none", temperature=0.0, seed=0,
                          max_tokens=max_tokens, timeout=600, max_retries=0,
                          custom_get_token_ids=lambda text: vocab.tokenize(text, add_bos=False))

    # the merge prompt lists its inputs; LangChain stuffs them into one {text}: same words around them
    merge = prompts.library().get("mapreduce_reduce_summarize")
    merge_messages = [(r, c) for r, c in merge.messages]
    head, tail = merge_messages[-1][1].split("{% for p in parts %}")[0], merge_messages[-1][1].split("{% endfor %}")[-1]
    combine = ChatPromptTemplate.from_messages(
        [("system", merge_messages[0][1]), ("human", head.replace("{", "{{").replace("}", "}}") + "{text}\n\n" + tail)]
    )
    mapping = ChatPromptTemplate.from_messages(_template("mapreduce_map_summarize", text="\x00TEXT\x00"))
    usage = Usage()
    chain = load_summarize_chain(chat(args.map_max_tokens), chain_type="map_reduce", map_prompt=mapping,
                                 combine_prompt=combine, reduce_llm=chat(args.reduce_max_tokens), token_max=merge_budget)
    docs = [Document(page_content=p) for p in parts]
    t0 = time.perf_counter()
    if mode == "invoke":
        out = chain.invoke({"input_documents": docs}, config={"callbacks": [usage]})
    else:
        out = asyncio.run(chain.ainvoke({"input_documents": docs}, config={"callbacks": [usage]}))
    wall = time.perf_counter() - t0
    return {"wall": wall, "calls": usage.calls, "collapse": max(usage.calls - len(parts) - 1, 0), "tokens": usage.tokens,
            "answer": out["output_text"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="catalog name (default: the configured model)")
    ap.add_argument("--size", type=int, default=16_000, help="document size in tokens (Hamlet, repeated)")
    ap.add_argument("--chunk-tokens", type=int, default=1024)
    ap.add_argument("--slots", type=int, default=8, help="sequences the server decodes together")
    ap.add_argument("--max-concurrency", type=int, default=8, help="our calls in flight")
    ap.add_argument("--map-max-tokens", type=int, default=128)
    ap.add_argument("--reduce-max-tokens", type=int, default=256)
    ap.add_argument("--n-ctx", type=int, default=4096, help="context per sequence on the server")
    ap.add_argument("--threads", type=int, default=None, help="server CPU threads (default: CONCLAVE_N_THREADS or all)")
    ap.add_argument("--skip-async", action="store_true", help="leave out LangChain's ainvoke")
    args = ap.parse_args()

    def on_term(signum, frame):  # so that the servers are stopped on the way out
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    settings = load_settings()
    spec = catalog.resolve(args.model or settings.model)
    vocab = LlamaCppVocab(catalog.ensure_weights(spec, settings.data_dir), name=spec.name)
    count = lambda text: len(vocab.tokenize(text, add_bos=False))  # noqa: E731
    doc = long_text(base_text("hamlet"), args.size, count)
    config = MapReduceConfig(chunk_tokens=args.chunk_tokens, max_concurrency=args.max_concurrency,
                             map_max_tokens=args.map_max_tokens, reduce_max_tokens=args.reduce_max_tokens)
    console = Console(width=max(Console().width, 140))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mapreduce-speed-") as logs:
        runs = [("ours", None), ("LangChain invoke", "invoke")] + ([] if args.skip_async else [("LangChain ainvoke", "ainvoke")])
        first = None
        for label, mode in runs:
            server = serve(label, spec.name, args.slots, args.n_ctx, args.threads, Path(logs))
            try:
                with console.status(f"{label} …"):
                    if mode is None:
                        first = ours(server.base_url, spec.name, vocab, doc, config)
                        rows.append((label, first))
                    else:
                        rows.append((label, langchain(server.base_url, spec.name, vocab, first["parts"],
                                                      first["merge_budget"], args, mode)))
            finally:
                server.stop()
            console.print(f"[dim]{label}: {rows[-1][1]['wall']:.1f} s[/]")

    table = Table(title=f"Map-reduce summarization of {count(doc):,} tokens in {len(first['parts'])} parts: {spec.name} on "
                        f"conclave serve ({args.slots} slots, n_ctx {args.n_ctx}), ours at max_concurrency {args.max_concurrency}",
                  caption="collapse: merge calls before the final reduce; tokens: prompt + completion as the server counted them; "
                          "vs ours: its wall time over ours")
    for col in ("orchestration", "wall s", "calls", "collapse", "tokens", "vs ours"):
        table.add_column(col, justify="left" if col == "orchestration" else "right")
    for label, r in rows:
        table.add_row(label, f"{r['wall']:.1f}", str(r["calls"]), str(r["collapse"]), f"{r['tokens']:,}",
                      f"{r['wall'] / first['wall']:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
