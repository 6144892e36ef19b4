"""The audit loop: every system answers every query, and each answer is graded as it comes.
Each graded answer is checkpointed, so a stopped audit resumes where it stopped."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

from conclave.agents.legal_audit.grade import Grader
from conclave.agents.legal_audit.queries import CATEGORIES, Query
from conclave.agents.legal_audit.systems import System
from conclave.agents.legal_audit.trace import AuditItem, AuditResult
from conclave.agents.llm import RequestRejected


def select(queries: list[Query], categories: list[str] | None = None, limit: int | None = None) -> list[Query]:
    """The queries of these categories, at most ``limit`` of each, in file order."""
    out, seen = [], {c: 0 for c in CATEGORIES}
    for q in queries:
        if categories and q.category not in categories:
            continue
        if limit is not None and seen[q.category] >= limit:
            continue
        seen[q.category] += 1
        out.append(q)
    return out


def run(config: dict, systems: list[System], described: dict[str, dict], queries: list[Query], grader: Grader, *,
        on_event: Callable[[dict], None] | None = None, resume: list[dict] | None = None,
        checkpoint: Callable[[int, list[dict]], None] | None = None) -> AuditResult:
    """Ask every system every query and grade each answer. ``resume``: the items of a stopped
    run (from its checkpoint); they are kept and not asked again. ``checkpoint(n, items)`` is
    called after each graded answer."""
    emit = on_event or (lambda e: None)
    started = time.perf_counter()
    saved = list(resume or [])  # what the checkpoint holds: each item serialised once
    items = [AuditItem(**d) for d in saved]
    done = {(i.system, i.query_id) for i in items}
    notes = []
    total = len(systems) * len(queries)
    emit({"kind": "start", "total": total, "done": len(done)})
    for q in queries:
        for s in systems:
            if (s.name, q.id) in done:
                continue
            t0 = time.perf_counter()
            try:
                ans = s.answer(q.question)
            except RequestRejected as e:  # this request only (e.g. too long for the endpoint): note it, go on
                notes.append(f"{s.name} refused {q.id}: {e}")
                emit({"kind": "skipped", "system": s.name, "query": q.id, "error": str(e)})
                continue
            g = grader.grade(q, ans.text)
            item = AuditItem(s.name, q.id, q.category, q.question, q.premise_is_false, ans.text,
                             g.correctness.label, g.correctness.by, g.correctness.why, g.grounding.label,
                             g.grounding.why, [a.to_dict() for a in g.grounding.cited], ans.passages,
                             round(time.perf_counter() - t0, 3), ans.note)
            items.append(item)
            saved.append(asdict(item))
            if checkpoint is not None:
                checkpoint(len(items), saved)
            emit({"kind": "graded", "done": len(items), "total": total, "system": s.name, "query": q.id,
                  "correctness": item.correctness, "groundedness": item.groundedness,
                  "hallucinated": item.hallucinated})
    return AuditResult(config, described, items, round(time.perf_counter() - started, 1), notes)

