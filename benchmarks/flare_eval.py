"""FLARE against its baselines on our invented multi-hop set (agents/flare/multihop.py).

For each method (none, single, interval, direct-masked, direct-questions, instruct) it
answers the questions with a BM25 retriever over the 40 passages and prints, per hop
count: answer containment EM, the retrieval trigger rate (fraction of generation steps
that retrieved), recall of the gold passages among everything retrieved, and model
calls per question.

    python benchmarks/flare_eval.py [--limit 10] [--hops 1,2] [--model smollm2-135m-instruct]
    python benchmarks/flare_eval.py --model qwen2.5-coder-1.5b-instruct   # if installed (conclave models pull ...)
    python benchmarks/flare_eval.py --retriever hybrid                    # retrieval.index.Index (BM25 + MiniLM in Chroma)

The 135M default is there to show the harness runs anywhere; expect low EM from it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conclave.agents.flare import FlareConfig, run
from conclave.agents.flare.multihop import build
from conclave.app.settings import load_settings
from conclave.retrieval.hits import Hit
from conclave.retrieval.index import Index, chroma_client
from conclave.retrieval.ingest import Record
from conclave.retrieval.lexical import BM25, words

METHODS = {
    "none": dict(method="none"),
    "single": dict(method="single"),
    "interval": dict(method="interval"),
    "direct-masked": dict(method="direct", query_mode="masked"),
    "direct-questions": dict(method="direct", query_mode="questions"),
    "instruct": dict(method="instruct"),
}


def contains(answer: str, gold: str) -> bool:
    return f" {' '.join(words(gold))} " in f" {' '.join(words(answer))} "


class _ByPassage:
    """The hybrid index names its own chunk ids; this maps hits back to our passage ids, so
    recall of the gold passages is measured the same way for both retrievers."""

    def __init__(self, index):
        self.index = index

    def search(self, query: str, k: int = 5):
        return [Hit(h.meta.get("passage_id", h.id), h.text, h.source, h.score, h.meta) for h in self.index.search(query, k)]


def open_retriever(kind: str, passages):
    if kind == "bm25":
        return BM25(passages)
    where = tempfile.mkdtemp(prefix="flare-eval-")
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    index = Index("flare-eval", chroma_client(Path(where)))
    # every passage is far below one chunk, so each stays whole and keeps its id in meta
    index.add_records([Record(text, f"{source}/{pid}", {**meta, "passage_id": pid}) for pid, text, source, meta in passages])
    return _ByPassage(index)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=None, help="questions per hop count (default: all)")
    ap.add_argument("--hops", default="1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--retriever", choices=["bm25", "hybrid"], default="bm25")
    ap.add_argument("--seed", type=int, default=0, help="seed of the multi-hop set")
    ap.add_argument("--max-answer-tokens", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--json", type=Path, help="write every run's trace here")
    args = ap.parse_args(argv)
    console = Console()

    hops = [int(h) for h in args.hops.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - METHODS.keys()
    if unknown or not set(hops) <= {1, 2}:
        ap.error(f"unknown methods {sorted(unknown)} or hops {hops}; methods: {', '.join(METHODS)}; hops: 1,2")
    mh = build(args.seed)
    retriever = open_retriever(args.retriever, mh.passages)
    settings = load_settings()
    llm = settings.open_llm(args.model)
    console.print(f"model {llm.model} ({llm.backend}), retriever {args.retriever}, {len(mh.passages)} passages")

    traces = []
    for h in hops:
        questions = [q for q in mh.questions if q.hops == h][: args.limit]
        table = Table(title=f"{h}-hop questions (n={len(questions)})")
        for col in ("method", "EM", "trigger rate", "gold recall", "calls/q", "retrievals/q", "s/q"):
            table.add_column(col, justify="right" if col != "method" else "left")
        for name in methods:
            config = FlareConfig(**METHODS[name], max_answer_tokens=args.max_answer_tokens, max_steps=args.max_steps,
                                 lookahead_tokens=min(64, args.max_answer_tokens))
            em = trig = recall = calls = rets = 0.0
            t0 = time.perf_counter()
            for q in questions:
                res = run(config, llm, retriever, q.text)
                em += contains(res.answer, q.answer)
                trig += res.trigger_rate
                recall += sum(g in res.retrieved_ids for g in q.gold_ids) / len(q.gold_ids)
                calls += res.n_calls
                rets += res.n_retrievals
                traces.append({**res.to_dict(), "question_id": q.id, "gold": q.answer, "variant": name})
            n = max(len(questions), 1)
            row = (name, f"{em / n:.2f}", f"{trig / n:.2f}", f"{recall / n:.2f}", f"{calls / n:.1f}",
                   f"{rets / n:.1f}", f"{(time.perf_counter() - t0) / n:.1f}")
            table.add_row(*row)
            console.print(f"{h}-hop  " + "  ".join(row), highlight=False)  # a long run shows each row as it lands
        console.print(table)
    if args.json:
        args.json.write_text(json.dumps(traces, indent=1))
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
