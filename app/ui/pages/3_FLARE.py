"""FLARE: answer a question with active retrieval over an index, and see when and why it searched."""

import json

import streamlit as st
from pydantic import ValidationError

from conclave.agents.flare import FlareConfig, FlareResult
from conclave.app.flare import execute
from conclave.app.ui.common import history, live, model_choices, page, registry, settings, store
from conclave.retrieval.hits import RetrievalError
from conclave.retrieval.index import chroma_client, list_indexes

page("FLARE")
st.title("FLARE")
st.caption("Active retrieval (Jiang et al. 2023): the model drafts each sentence ahead, and when it is unsure of a "
           "token it searches the index with the draft and rewrites the sentence from what it found.")

s = settings()
try:
    indexes = list_indexes(chroma_client(s.data_dir, s.chroma_url))
except RetrievalError as e:
    st.error(str(e))
    indexes = []
if not indexes:
    st.info("No index yet: build one with `conclave index add NAME FILES...` (or `--corpus wikipedia-10k`).")

METHODS = {"direct": "FLARE-direct: search when a drafted token is unsure", "instruct": "FLARE-instruct: the model "
           "asks for searches itself", "single": "baseline: one search with the question", "interval": "baseline: a "
           "search every few tokens", "none": "baseline: no retrieval"}

with st.form("flare"):
    question = st.text_input("Question")
    left, right = st.columns(2)
    with left:
        index = st.selectbox("Index", indexes)
        method = st.selectbox("Method", list(METHODS), format_func=METHODS.get)
        search = st.radio("Search", ["hybrid", "dense", "lexical"], horizontal=True)
    with right:
        model = st.selectbox("Model", model_choices())
        k = st.number_input("Passages per search", 1, 50, 3)
        theta = st.slider("Search when a token's probability is at most", 0.01, 1.0, 0.4)
        max_tokens = st.number_input("Answer budget (tokens)", 1, 4096, 200)
    submitted = st.form_submit_button("Answer", type="primary", disabled=not indexes)

if submitted:
    try:
        if not question.strip():
            raise ValueError("write a question")
        config = FlareConfig(method=method, k=k, theta=theta, max_answer_tokens=max_tokens)
    except (ValidationError, ValueError) as e:
        st.error(f"Not started: {e}")
    else:
        registry().start("flare", f"FLARE {method} on {index}",
                         lambda on_event: execute(s, store(), config, question, index, search=search, model=model,
                                                  on_event=on_event))


def progress(bg) -> None:
    step = bg.last("generate", "retrieve", "done")
    if step is None:
        st.write("Loading the model and the index …")
    elif step["kind"] == "retrieve":
        st.write(f"step {step['step']}: searched for “{step['query']}”, {len(step['ids'])} passages")
    else:
        st.write(f"step {step['step']}: writing …")
    st.write(f"{sum(e['kind'] == 'retrieve' for e in bg.events)} searches so far")


live("flare", progress)


def summary(run) -> dict:
    out = {"question": run.config.get("question"), "method": run.config.get("method"), "index": run.config.get("index")}
    if run.result:
        out.update({"steps": len(run.result["steps"]), "retrievals": run.result["n_retrievals"]})
    return out


st.subheader("Runs")
picked = history("flare", summary, key="flare-run")
if picked is not None:
    if picked.result is None:
        st.info(f"Run {picked.id[:8]} is {picked.status}" + (f": {picked.error}" if picked.error else "."))
    else:
        result = FlareResult.from_dict(picked.result)
        st.markdown(f"**{result.question}**")
        st.markdown(result.answer or "_(empty answer)_")
        cols = st.columns(4)
        cols[0].metric("steps", len(result.steps))
        cols[1].metric("searches", result.n_retrievals)
        cols[2].metric("trigger rate", f"{result.trigger_rate:.2f}")
        cols[3].metric("model calls", result.n_calls)
        rows = [{"step": st_.index, "kind": st_.kind, "unsure tokens": ", ".join(f"{t.token!r} {t.prob:.2f}"
                                                                             for t in st_.low_confidence),
                 "queries": "; ".join(st_.queries), "passages": len(st_.retrieved_ids), "accepted": st_.text}
                for st_ in result.steps]
        st.dataframe(rows, hide_index=True, width="stretch")
        probs = [{"step": st_.index, "token": t.token, "probability": t.prob} for st_ in result.steps
                 for t in st_.low_confidence]
        if probs:
            st.markdown("**The unsure tokens that triggered searches**")
            st.scatter_chart(probs, x="step", y="probability", height=220)
        with st.expander("The full trace"):
            st.markdown(result.report())
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"flare-{picked.id[:8]}.json", mime="application/json")
