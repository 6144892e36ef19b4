"""Home: what Conclave is, the model in use, and the latest runs of every workflow."""

import time

import streamlit as st

from conclave.app.ui.common import page, registry, settings, store, took, when
from conclave.local_models import catalog

s = settings()
page("Conclave")
st.title("Conclave")
st.markdown("A workbench for multi-agent LLM workflows on any model: a GGUF model on this CPU, our own engines, or "
            "any OpenAI-compatible endpoint. Pick a workflow on the left; every run and every model call it makes "
            "is kept in the run store, to reopen, compare and monitor.")

installed = [m.name for m in catalog.CATALOG.values() if catalog.is_installed(m, s.data_dir)]
runs = store().list_runs(limit=20)
day = store().calls(limit=100_000, since=time.time() - 86_400)
st.markdown(f"Model in use: **{s.model}** (change it with `CONCLAVE_MODEL`, or per run on each page)")
cols = st.columns(3)
cols[0].metric("models installed", len(installed))
cols[1].metric("runs", store().count_runs(), f"{store().count_runs('running')} running", delta_color="off",
               delta_arrow="off")
cols[2].metric("model calls, last 24 h", len(day), f"{sum(bool(c['error']) for c in day)} failed", delta_color="off",
               delta_arrow="off")
if not installed:
    st.warning(f"No model is installed yet: run `conclave models pull {catalog.DEFAULT_MODEL}`, or use the Models page.")

st.subheader("Workflows")
st.page_link("pages/1_EvoPrompt.py", label="EvoPrompt: evolve a task's prompts with GA or DE", icon=":material/genetics:")
st.page_link("pages/2_Map-reduce.py", label="Map-reduce: summarize, ask or extract over documents longer than the model's "
             "context", icon=":material/account_tree:")
st.page_link("pages/3_FLARE.py", label="FLARE: answer a question with active retrieval over an index",
             icon=":material/travel_explore:")
st.page_link("pages/4_Loss_lab.py", label="Loss lab: a model proposes preference-optimisation losses; the sandbox "
             "trains and scores them", icon=":material/science:")
st.page_link("pages/5_Figure_team.py", label="Figure team: a coder, a critic and a commander make a figure from a "
             "request and a data file", icon=":material/insert_chart:")

if active := registry().active():
    st.subheader("Running now")
    for bg in active:
        st.write(f"{bg.label}, for {time.time() - bg.started:.0f} s")

st.subheader("Latest runs")
if runs:
    st.dataframe([{"run": r.id[:8], "workflow": r.workflow, "status": r.status, "started": when(r.created_at),
                   "took": took(r), "error": r.error or ""} for r in runs], hide_index=True, width="stretch")
else:
    st.info("No runs yet.")
st.caption(f"Data: {s.data_dir}")
