"""``conclave run legal_audit``: a hallucination audit of legal research systems, recorded in
the run store and checkpointed after every graded answer, so ``--resume RUN`` continues a
stopped audit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from conclave.agents.legal_audit import AuditConfig, AuditError, AuditResult, Grader, generate, load_queries
from conclave.agents.legal_audit.audit import run, select
from conclave.agents.legal_audit.queries import SAMPLE, check_cases
from conclave.agents.legal_audit.systems import ClosedBook, Endpoint, Rag
from conclave.app.runs import present
from conclave.app.store import RunStore
from conclave.retrieval.caselaw import CASES_FILE, constitution, load_cases, records
from conclave.retrieval.index import open_index
from conclave.retrieval.ingest import files, read


def prepare(config: AuditConfig):
    """The case table and the queries, checked: bad files fail here, before any model loads."""
    cases = load_cases(config.corpus or SAMPLE)
    if config.generate:
        queries = generate(cases, per_template=config.generate, seed=config.seed)
    else:
        queries = load_queries(config.queries or SAMPLE / "queries_dev.jsonl")
    queries = select(queries, config.categories, config.limit)
    if not queries:
        raise AuditError("no queries left after the category and limit filters")
    check_cases(queries, cases)
    return cases, queries


def corpus_index(settings, store: RunStore, config: AuditConfig, cases):
    """The corpus's index, brought up to date: one passage per case, the Constitution where
    installed, and any other documents in the corpus folder."""
    where = str(Path(config.corpus).resolve()) if config.corpus else "sample"
    name = "legal-" + (hashlib.sha256(where.encode()).hexdigest()[:10] if config.corpus else "sample")
    idx = open_index(name, settings.data_dir, settings.chroma_url, sink=store.record_retrieval)
    recs = records(cases) + (constitution() if config.constitution else [])
    if config.corpus and Path(config.corpus).is_dir():
        recs += [r for f in files([Path(config.corpus)]) if f.name != CASES_FILE for r in read(f)]
    idx.add_records(recs)
    return idx


def execute(settings, store: RunStore, config: AuditConfig | None, *, resume: str | None = None,
            on_event=None) -> tuple[str, AuditResult]:
    """Run the audit, or ``resume`` a stopped one (its id or prefix): what the CLI, the web UI
    and batch jobs call. ``on_event`` gets {"kind": "run" | "loading" | "indexing" | "start" |
    "graded" | "skipped", ...}."""
    emit = on_event or (lambda e: None)
    state = None
    if resume:
        try:
            old, state = store.resumable(resume, "legal_audit")
        except KeyError as e:
            raise AuditError(str(e).strip("'\"")) from None
        config, resume = AuditConfig(**old.config["legal_audit"]), old.id
    cases, queries = prepare(config)
    with store.run("legal_audit", {"legal_audit": config.model_dump(mode="json"),
                                   "queries": len(queries)}, resume=resume) as run_id:
        emit({"kind": "run", "run_id": run_id, "total": len(queries) * len(config.systems)})
        opened, systems, described = {}, [], {}
        try:
            idx = None
            if any(s.kind == "rag" for s in config.systems):
                emit({"kind": "indexing", "cases": len(cases)})
                idx = corpus_index(settings, store, config, cases)
            params = {"max_tokens": config.max_answer_tokens, "temperature": config.temperature, "seed": config.seed}
            for s in config.systems:
                model = s.model or settings.model
                described[s.name] = {"kind": s.kind, "model": model}
                if s.kind == "endpoint":
                    from conclave.agents.backends import open_llm

                    key = os.environ.get(s.api_key_env) if s.api_key_env else None
                    llm = open_llm(model, backend="openai", data_dir=settings.data_dir, base_url=s.base_url,
                                   api_key=key or "none", timeout=settings.request_timeout,
                                   max_retries=settings.max_retries, sink=store.record_call)
                    opened[("endpoint", s.name)] = llm
                    systems.append(Endpoint(s.name, llm, **params))
                    continue
                if (model, s.backend) not in opened:
                    emit({"kind": "loading", "models": [model]})
                    opened[(model, s.backend)] = settings.open_llm(model, backend=s.backend, sink=store.record_call)
                llm = opened[(model, s.backend)]
                if s.kind == "rag":
                    search = _Search(idx, s.search)
                    systems.append(Rag(s.name, llm, search, k=s.k, **params))
                else:
                    systems.append(ClosedBook(s.name, llm, **params))
            judge = None
            if config.judge:
                key = (config.judge, config.judge_backend)
                if key not in opened:
                    emit({"kind": "loading", "models": [config.judge]})
                    opened[key] = settings.open_llm(config.judge, backend=config.judge_backend, sink=store.record_call)
                judge = opened[key]
            grader = Grader(cases, judge=judge, support_by_judge=config.support == "judge")
            result = run(config.model_dump(mode="json"), systems, described, queries, grader, on_event=emit,
                         resume=state, checkpoint=lambda n, items: store.save_checkpoint(run_id, n, items))
        finally:
            for llm in opened.values():
                llm.close()
        store.finish_run(run_id, result.to_dict())
    return run_id, result


class _Search:
    def __init__(self, idx, mode: str):
        self.idx, self.mode = idx, mode

    def search(self, query: str, k: int = 5):
        return self.idx.search(query, k, mode=self.mode)


def run_audit(settings, store: RunStore, config: AuditConfig | None, *, resume: str | None = None,
              out_file: Path | None = None, plot: Path | None = None, console: Console, status: Console,
              on_event=None) -> AuditResult:
    """``execute`` with a progress bar, then the report (and the JSON and chart, if asked for)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("hallucinated {task.fields[bad]}"), TimeElapsedColumn(), console=status) as bar:
        ids, bad = [], [0]

        def draw(e: dict) -> None:
            if on_event is not None:
                on_event(e)
            if e["kind"] == "run":
                ids.append(bar.add_task("audit", total=e["total"], bad=0))
            elif e["kind"] == "loading":
                bar.update(ids[0], description=f"loading {', '.join(e['models'])} …")
            elif e["kind"] == "indexing":
                bar.update(ids[0], description=f"indexing {e['cases']} cases …")
            elif e["kind"] == "start":
                bar.update(ids[0], completed=e["done"])
            elif e["kind"] == "graded":
                bad[0] += e["hallucinated"]
                bar.update(ids[0], completed=e["done"], bad=bad[0], description=f"{e['system']} {e['query']}")

        run_id, result = execute(settings, store, config, resume=resume, on_event=draw)
    present(result, run_id, store, console=console, status=status, out_file=out_file, plot=plot, plot_name="chart")
    return result

