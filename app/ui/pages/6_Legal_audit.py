"""Legal audit: legal research systems answer legal queries, and every answer is graded for
correctness and groundedness (Magesh et al. 2024); rates with intervals, the 6-cell table,
worked examples, and past audits."""

import json

import matplotlib.pyplot as plt
import streamlit as st
from pydantic import ValidationError

from conclave.agents.legal_audit import CATEGORIES, AuditConfig, AuditResult, SystemSpec
from conclave.agents.legal_audit.trace import CORRECTNESS, GROUNDEDNESS
from conclave.app.legal_audit import execute
from conclave.app.ui.common import history, live, model_choices, page, registry, save_upload, settings, store, unfinished

page("Legal audit")
st.title("Legal audit")
st.caption("Legal research systems answer legal queries; each answer is graded for correctness (against the gold answer) "
           "and groundedness (its citations, found with eyecite, checked against the corpus's citator and reporters-db, "
           "and for support by the cited case). Hallucinated: incorrect, or correct but misgrounded (Magesh et al. 2024).")

with st.form("legal_audit"):
    left, right = st.columns(2)
    with left:
        kinds = st.multiselect("Systems under test", ["rag", "closed_book", "endpoint"], default=["rag", "closed_book"],
                               format_func={"rag": "our RAG (Chroma over the corpus)", "closed_book": "closed book",
                                            "endpoint": "an OpenAI-compatible endpoint"}.get)
        model = st.selectbox("Model (RAG and closed book)", model_choices())
        base_url = st.text_input("Endpoint base URL", "", placeholder="http://127.0.0.1:8000/v1")
        endpoint_model = st.text_input("Endpoint model", "")
        judge = st.selectbox("Judge (for what the rules leave open)", ["none (rules and lexical checks)", *model_choices()])
    with right:
        queries = st.file_uploader("Query file (JSONL; default: the 80 dev queries)", type=["jsonl"])
        generate = st.number_input("Or generate this many queries per template from the case table", 0, 50, 0)
        categories = st.multiselect("Categories", list(CATEGORIES), default=list(CATEGORIES))
        limit = st.number_input("Queries per category (0: all)", 0, 10_000, 0)
        max_tokens = st.number_input("Longest answer (tokens)", 16, 2048, 256)
    submitted = st.form_submit_button("Audit", type="primary")

if submitted:
    try:
        systems = [SystemSpec(name="endpoint", kind="endpoint", base_url=base_url or None, model=endpoint_model or None)
                   if k == "endpoint" else SystemSpec(name=k.replace("_", "-"), kind=k, model=model) for k in kinds]
        config = AuditConfig(systems=systems, queries=save_upload(queries) if queries else None, generate=generate,
                             categories=categories or None, limit=limit or None, max_answer_tokens=max_tokens,
                             judge=None if judge.startswith("none") else judge)
    except (ValidationError, ValueError) as e:
        st.error(f"Not started: {e}")
    else:
        s = settings()
        names = ", ".join(spec.name for spec in config.systems)
        registry().start("legal_audit", f"Legal audit of {names}",
                         lambda on_event: execute(s, store(), config, on_event=on_event))


def progress(bg) -> None:
    run, last = bg.last("run"), bg.last("graded")
    if (loading := bg.last("loading")) and last is None:
        st.write(f"Loading {', '.join(loading['models'])} …")
    if (indexing := bg.last("indexing")) and last is None:
        st.write(f"Indexing {indexing['cases']} cases …")
    if run:
        done = last["done"] if last else 0
        st.progress(min(done / max(run["total"], 1), 1.0), text=f"{done} of {run['total']} answers graded")
    if last:
        st.write(f"last: **{last['system']}** on {last['query']}: {last['correctness']}, {last['groundedness']}"
                 + (" (hallucinated)" if last["hallucinated"] else ""))


live("legal_audit", progress)


def summary(run) -> dict:
    out = {"systems": ", ".join(s["name"] for s in run.config.get("legal_audit", {}).get("systems", [])),
           "queries": run.config.get("queries")}
    if run.result:
        r = AuditResult.from_dict(run.result)
        out.update({f"{s} hallucinated": f"{r.rate(s).p:.0%}" for s in r.systems})
    return out


st.subheader("Audits")
picked = history("legal_audit", summary, key="legal-audit-run")
if picked is not None:
    if picked.result is None:
        unfinished("legal_audit", picked, "Legal audit",
                   lambda on_event: execute(settings(), store(), None, resume=picked.id, on_event=on_event),
                   lambda saved: f"{saved[0]} answers were graded before it stopped.")
    else:
        result = AuditResult.from_dict(picked.result)
        cols = st.columns(max(len(result.systems), 1))
        for col, name in zip(cols, result.systems):
            rate = result.rate(name)
            lo, hi = rate.ci
            col.metric(f"{name}: hallucinated", f"{rate.p:.0%}", f"95% CI {lo:.0%}–{hi:.0%}", delta_color="off")
        fig = result.figure()
        st.pyplot(fig, width="content")
        plt.close(fig)
        st.dataframe([{"system": s, "category": c or "all", "n": result.rate(s, category=c).n,
                       **{what: str(result.rate(s, what, c)) for what in ("hallucinated", "incorrect", "refusal",
                                                                           "accurate")}}
                      for s in result.systems for c in [None, *CATEGORIES] if result.rate(s, category=c).n],
                     hide_index=True, width="stretch")
        for s in result.systems:
            cells = result.cells(s)
            st.write(f"**{s}**: correctness × groundedness")
            st.dataframe([{"": c, **{g: cells[(c, g)] for g in GROUNDEDNESS}} for c in CORRECTNESS], hide_index=True)
        st.markdown("### Worked examples" + result.report().split("### Worked examples", 1)[-1])
        st.dataframe([{"system": i.system, "query": i.query_id, "category": i.category, "correctness": i.correctness,
                       "groundedness": i.groundedness, "hallucinated": i.hallucinated,
                       "citations": ", ".join(f"{c['text']} ({c['status']})" for c in i.cited), "answer": i.answer}
                      for i in result.items], hide_index=True, width="stretch")
        st.download_button("Download the audit (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"legal-audit-{picked.id[:8]}.json", mime="application/json")
