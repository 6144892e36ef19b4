"""Map-reduce: summarize, ask or extract over documents longer than the model's context."""

import json
from pathlib import Path

import streamlit as st
from pydantic import ValidationError

from conclave.agents.mapreduce import MapReduceConfig, MapReduceResult
from conclave.app.mapreduce import execute
from conclave.app.ui.common import history, live, model_choices, page, registry, save_upload, settings, store
from conclave.retrieval import corpora
from conclave.retrieval.hits import RetrievalError
page("Map-reduce")
st.title("Map-reduce")
st.caption("The documents are cut into parts that fit the model, each part is read on its own (map), and the answers "
           "are merged, in rounds if need be, into one (reduce). Every part of the answer can be traced to its parts.")

SAMPLE = "Hamlet (packaged sample, about 50k tokens)"

with st.form("mapreduce"):
    left, right = st.columns(2)
    with left:
        task = st.radio("Task", ["summarize", "ask", "extract"], horizontal=True,
                        format_func={"summarize": "summarize", "ask": "answer a question",
                                     "extract": "extract to a JSON schema"}.get)
        question = st.text_input("Question (answer a question)")
        schema = st.text_area("JSON schema (extract)", placeholder='{"type": "object", "properties": {...}}')
        uploads = st.file_uploader("Documents (.txt .md .jsonl .pdf)", type=["txt", "md", "jsonl", "pdf"],
                                   accept_multiple_files=True)
        sample = st.checkbox(f"With nothing uploaded, use {SAMPLE}", value=True)
    with right:
        model = st.selectbox("Model", model_choices())
        chunk = st.number_input("Tokens per part (0: what fits the context)", 0, 1_000_000, 0)
        concurrency = st.number_input("Model calls in flight at once", 1, 256, 4)
        rounds = st.number_input("Collapse rounds before truncating", 0, 32, 4)
        use_cache = st.checkbox("Reuse answers from earlier runs (cache)", value=True)
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    s = settings()
    try:
        json_schema = None
        if task == "extract":
            try:
                json_schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"the JSON schema is not JSON: {e}") from None
        config = MapReduceConfig(task=task, question=question if task == "ask" else None, json_schema=json_schema,
                                 chunk_tokens=chunk or None, max_concurrency=concurrency, max_rounds=rounds)
        if uploads:
            files = [save_upload(up) for up in uploads]
        elif sample:
            files = [corpora.data_file("hamlet")]
        else:
            raise ValueError("upload documents, or tick the packaged sample")
    except (ValidationError, ValueError, RetrievalError) as e:
        st.error(f"Not started: {e}")
    else:
        registry().start("mapreduce", f"map-reduce {task} over {', '.join(f.name for f in files)}",
                         lambda on_event: execute(s, store(), config, files, model=model, cache=use_cache,
                                                  on_event=on_event))


def progress(bg) -> None:
    split = bg.last("split")
    if split is None:
        loading = bg.last("loading")
        st.write(f"Loading {', '.join(loading['models'])} and cutting the documents …" if loading else "Starting …")
        return
    done = bg.last("map")
    mapped = done["done"] if done else 0
    st.progress(mapped / max(split["parts"], 1), text=f"map: {mapped} of {split['parts']} parts "
                                                     f"({split['chunk_tokens']} tokens each)")
    if merge := bg.last("round", "merge"):
        st.write(f"collapse round {merge['round']}")
    if bg.last("reduce"):
        st.write("reduce: writing the final answer …")
    if tokens := bg.last("map", "merge", "reduce", "done"):
        st.write(f"{tokens['tokens']:,} tokens so far")
    for w in [e for e in bg.events if e["kind"] == "warning"][-3:]:
        st.warning(w["message"])


live("mapreduce", progress)


def summary(run) -> dict:
    out = {"task": run.config.get("task"), "files": ", ".join(Path(f).name for f in run.config.get("files", []))}
    if run.result:
        out.update({"parts": len(run.result["parts"]), "calls": run.result["n_calls"]})
    return out


st.subheader("Runs")
picked = history("mapreduce", summary, key="mapreduce-run")
if picked is not None:
    if picked.result is None:
        st.info(f"Run {picked.id[:8]} is {picked.status}" + (f": {picked.error}" if picked.error else "") +
                ". Map answers are cached as they come: a run that stopped, started again, calls the model only for "
                "what is missing.")
    else:
        result = MapReduceResult.from_dict(picked.result)
        st.markdown("**Answer**")
        if result.data is not None:
            st.json(result.data)
        else:
            st.markdown(result.answer or "_(no answer)_")
        cols = st.columns(5)
        cols[0].metric("parts", len(result.parts))
        cols[1].metric("map answers kept", sum(m.kept for m in result.maps))
        cols[2].metric("collapse rounds", len(result.rounds))
        cols[3].metric("model calls", result.n_calls)
        cols[4].metric("answered from the cache", result.n_cached)
        for w in result.warnings:
            st.warning(w)
        index = {p.id: p.index for p in result.parts}
        used = set(result.provenance.get("answer", []))
        rows = [{"part": index[m.part], "answer tokens": m.tokens, "kept": m.kept, "in the final answer": m.part in used,
                 "map answer": m.note or m.text} for m in result.maps]
        st.markdown("**Map answers**, and which parts the final answer comes from")
        st.bar_chart(rows, x="part", y="answer tokens", color="kept", height=220)
        st.dataframe(rows, hide_index=True, width="stretch")
        with st.expander("Every merge, with its provenance"):
            st.markdown(result.report())
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"mapreduce-{picked.id[:8]}.json", mime="application/json")
