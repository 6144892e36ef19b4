"""Figure team: a coder writes matplotlib code, the sandbox runs it, a critic reviews the
figure, and the commander stops on NO_ISSUES or at the limit; past runs, iteration by iteration."""

import json

import streamlit as st
from pydantic import ValidationError

from conclave.agents.figure import FigureConfig, FigureResult
from conclave.agents.figure.checklist import ITEMS
from conclave.app.figure import execute
from conclave.app.ui.common import history, live, model_choices, page, registry, save_upload, settings, store

page("Figure team")
st.title("Figure team")
st.caption("A Coder writes plotting code from your request and the data's schema; the code runs in the sandbox; a "
           "Critic reviews the figure (as an image, or as a report of what it holds) and the Coder revises, until the "
           "Critic finds no issues or the iteration limit is reached. Every iteration is scored on an objective "
           "checklist.")

with st.form("figure"):
    request = st.text_area("Request", "Plot the monthly values of every series, with a legend")
    upload = st.file_uploader("Data file (optional)", type=["csv", "tsv", "txt", "json", "jsonl", "parquet", "xlsx"])
    left, right = st.columns(2)
    with left:
        coder = st.selectbox("Coder", model_choices())
        critic = st.selectbox("Critic", ["(the coder's model)"] + model_choices())
        sees = st.radio("The critic sees", ["report", "image"], horizontal=True,
                        format_func={"report": "a report of the figure (text models)",
                                     "image": "the PNG (a vision model behind an endpoint)"}.get)
    with right:
        iterations = st.number_input("Iterations", 1, 10, 3, help="code runs, the first draft included")
        series = st.text_input("Series the figure must show", "",
                               help="comma-separated; empty: the data's columns that the request names")
        timeout = st.number_input("Seconds per code run", 1, 3600, 60)
    submitted = st.form_submit_button("Make the figure", type="primary")

if submitted:
    try:
        config = FigureConfig(request=request, data=save_upload(upload) if upload else None,
                              max_iterations=iterations, critic_sees=sees, timeout_s=timeout,
                              series=[x.strip() for x in series.split(",") if x.strip()])
    except (ValidationError, ValueError) as e:
        st.error(f"Not started: {e}")
    else:
        s = settings()
        other = None if critic.startswith("(") else critic
        registry().start("figure", f"Figure: {request[:60]}",
                         lambda on_event: execute(s, store(), config, coder=coder, critic=other, on_event=on_event))


def progress(bg) -> None:
    run, it, msg = bg.last("run"), bg.last("iteration"), bg.last("message")
    if (loading := bg.last("loading")) and msg is None:
        st.write(f"Loading {', '.join(loading['models'])} …")
    if run:
        done = it["index"] + 1 if it else 0
        st.progress(min(done / run["max_iterations"], 1.0), text=f"{done} of at most {run['max_iterations']} iterations")
    if it:
        st.write(f"iteration {it['index']}: **{it['status']}**, checklist {it['score']:.2f}")
    if msg:
        st.write(f"last turn: **{msg['source']}**")


live("figure", progress)


def summary(run) -> dict:
    out = {"request": run.config.get("figure", {}).get("request"), "coder": run.config.get("spec", {}).get("coder")}
    if run.result:
        r = FigureResult.from_dict(run.result)
        out.update({"iterations": len(r.iterations), "stopped": r.stopped,
                    "final score": r.iterations[r.final].score if r.final is not None else None})
    return out


st.subheader("Runs")
picked = history("figure", summary, key="figure-run")
if picked is not None:
    if picked.result is None:
        st.info(f"Run {picked.id[:8]} is {picked.status}" + (f": {picked.error}" if picked.error else "."))
    else:
        result = FigureResult.from_dict(picked.result)
        cols = st.columns(4)
        cols[0].metric("final iteration", "-" if result.final is None else result.final)
        cols[1].metric("checklist", "-" if result.final is None else f"{result.iterations[result.final].score:.2f}")
        cols[2].metric("stopped", result.stopped)
        cols[3].metric("wall time", f"{result.wall_s:.0f} s")
        st.write(result.answer)
        if result.figure is not None:
            st.image(result.figure, caption=f"iteration {result.final}")
            st.download_button("Download the figure (PNG)", result.figure, file_name=f"figure-{picked.id[:8]}.png",
                               mime="image/png")
        st.dataframe([{"iteration": it.index, "status": it.status, "score": it.score,
                       **{k: it.checks[k] for k in ITEMS},
                       "critic": it.critique["verdict"] if it.critique else ""} for it in result.iterations],
                     hide_index=True, width="stretch")
        for it in result.iterations:
            with st.expander(f"Iteration {it.index}: {it.status}, checklist {it.score:.2f}"):
                if it.png is not None:
                    st.image(it.png, width=480)
                if it.code:
                    st.code(it.code, language="python")
                if it.error:
                    st.code(it.error, language="text")
                if it.critique:
                    st.write(f"Critic: **{it.critique['verdict']}**" + ("" if it.critique["parsed"] else " (free text)"))
                    for issue in it.critique["issues"]:
                        st.write(f"- {issue}")
        with st.expander("Transcript"):
            for m in result.transcript:
                st.markdown(f"**{m['source']}**")
                st.text(m["text"])
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"figure-{picked.id[:8]}.json", mime="application/json")
