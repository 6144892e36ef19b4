"""Runs: every run of every workflow, its configuration, result or error, and its model calls."""

import json

import streamlit as st

from conclave.app.ui.common import page, store, took, when

page("Runs")
st.title("Runs")
runs = store().list_runs(limit=1000)
if not runs:
    st.info("No runs yet.")
    st.stop()

left, right = st.columns(2)
workflows = left.multiselect("Workflow", sorted({r.workflow for r in runs}))
statuses = right.multiselect("Status", ["running", "done", "failed"])
shown = [r for r in runs if (not workflows or r.workflow in workflows) and (not statuses or r.status in statuses)]
st.dataframe([{"run": r.id[:8], "workflow": r.workflow, "status": r.status, "started": when(r.created_at),
               "took": took(r), "error": r.error or ""} for r in shown], hide_index=True, width="stretch")
if not shown:
    st.stop()

labels = {f"{r.id[:8]} · {r.workflow} · {r.status} · {when(r.created_at)}": r for r in shown}
run = labels[st.selectbox("Open a run", list(labels))]
if run.error:
    st.error(run.error)
config, result, calls = st.tabs(["Configuration", "Result", "Model calls"])
with config:
    st.json(run.config)
with result:
    if run.result is None:
        st.write("No result.")
    else:
        st.json(run.result, expanded=1)
        st.download_button("Download (JSON)", json.dumps({"run": run.id, "workflow": run.workflow, "config": run.config,
                                                          "result": run.result}, indent=1, ensure_ascii=False),
                           file_name=f"{run.workflow}-{run.id[:8]}.json", mime="application/json")
with calls:
    rows = store().calls(limit=10_000, run_id=run.id)
    st.write(f"{len(rows)} calls, {sum(r['prompt_tokens'] + r['completion_tokens'] for r in rows):,} tokens, "
             f"{sum(bool(r['error']) for r in rows)} failed")
    st.dataframe([{"time": when(r["started_at"]), "model": r["model"], "kind": r["kind"], "prompt": r["prompt_ref"],
                   "in": r["prompt_tokens"], "out": r["completion_tokens"], "latency ms": round(r["latency_s"] * 1000),
                   "error": r["error"] or ""} for r in rows], hide_index=True, width="stretch")
