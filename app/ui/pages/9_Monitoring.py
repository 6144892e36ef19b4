"""Monitoring: model use over time from the call log, and retrieval similarity drift from the
search log (the "monitoring" layer of LLM-app architectures)."""

import time

import altair as alt
import pandas as pd
import streamlit as st
from scipy.stats import ks_2samp

from conclave.app.ui.common import page, store

page("Monitoring")
st.title("Monitoring")
WINDOWS = {"last hour": 3_600, "last 24 hours": 86_400, "last 7 days": 7 * 86_400, "last 30 days": 30 * 86_400,
           "everything": None}
window = st.segmented_control("Window", list(WINDOWS), default="last 7 days") or "last 7 days"
since = time.time() - WINDOWS[window] if WINDOWS[window] else None

calls = pd.DataFrame(store().calls(limit=200_000, since=since))
if calls.empty:
    st.info("No model calls in this window. Every workflow logs its calls here as it runs.")
else:
    calls["time"] = pd.to_datetime(calls["started_at"], unit="s")
    calls["latency ms"] = calls["latency_s"] * 1000
    calls["tokens"] = calls["prompt_tokens"] + calls["completion_tokens"]
    calls["failed"] = calls["error"].notna()
    calls["prompt"] = calls["prompt_ref"].fillna("(none)")
    span = (calls["started_at"].max() - calls["started_at"].min()) or 60
    bucket = f"{max(int(span / 40), 1)}s"  # about 40 bars whatever the window
    calls["bucket"] = calls["time"].dt.floor(bucket)
    when_axis = alt.X("bucket:T", title=None,
                      axis=alt.Axis(format="%H:%M:%S" if span < 3_600 else "%H:%M" if span < 2 * 86_400 else "%b %d"))

    cols = st.columns(4)
    cols[0].metric("calls", len(calls))
    cols[1].metric("tokens", f"{int(calls['tokens'].sum()):,}")
    cols[2].metric("latency p50 / p95", f"{calls['latency ms'].median():.0f} / {calls['latency ms'].quantile(0.95):.0f} ms")
    cols[3].metric("error rate", f"{calls['failed'].mean():.1%}")

    st.subheader("Calls over time")
    by = st.radio("Per", ["model", "prompt"], horizontal=True, format_func={"model": "model", "prompt": "prompt id@version"}.get)
    per = calls.groupby(["bucket", by]).size().reset_index(name="calls")
    st.altair_chart(alt.Chart(per).mark_bar().encode(x=when_axis, y="calls:Q", color=f"{by}:N",
                                                      tooltip=["bucket:T", f"{by}:N", "calls:Q"]), width="stretch")

    left, right = st.columns(2)
    with left:
        st.subheader("Latency")
        st.altair_chart(alt.Chart(calls).mark_bar(opacity=0.7).encode(
            x=alt.X("latency ms:Q", bin=alt.Bin(maxbins=40)), y=alt.Y("count():Q", stack=None), color="model:N"),
            width="stretch")
    with right:
        st.subheader("Tokens per call")
        st.altair_chart(alt.Chart(calls).mark_bar(opacity=0.7).encode(
            x=alt.X("tokens:Q", bin=alt.Bin(maxbins=40)), y=alt.Y("count():Q", stack=None), color="model:N"),
            width="stretch")

    st.subheader("Errors")
    rate = calls.groupby(["bucket", "model"])["failed"].mean().reset_index(name="error rate")
    st.altair_chart(alt.Chart(rate).mark_line(point=True).encode(
        x=when_axis, y=alt.Y("error rate:Q", axis=alt.Axis(format="%")), color="model:N"),
        width="stretch")
    failed = calls[calls["failed"]]
    if not failed.empty:
        st.dataframe(failed[["time", "model", "kind", "prompt", "error"]].head(50), hide_index=True, width="stretch")

    st.subheader("Per model")
    st.dataframe(calls.groupby("model").agg(
        calls=("id", "size"), tokens=("tokens", "sum"), latency_p50_ms=("latency ms", "median"),
        latency_p95_ms=("latency ms", lambda x: x.quantile(0.95)), error_rate=("failed", "mean")).reset_index(),
        hide_index=True, width="stretch")

    st.subheader("Two versions of a prompt")
    refs = calls["prompt_ref"].dropna()
    versions = refs.str.rsplit("@", n=1, expand=True) if not refs.empty else pd.DataFrame(columns=[0, 1])
    ids = sorted(i for i, n in versions.groupby(0)[1].nunique().items() if n >= 2) if not versions.empty else []
    if not ids:
        st.caption("No prompt has been called in two versions in this window.")
    else:
        pid = st.selectbox("Prompt", ids)
        vs = sorted(versions[versions[0] == pid][1].unique(), key=lambda v: int(v) if v.isdigit() else v)
        a, b = st.columns(2)
        va = a.selectbox("Version A", vs, index=0)
        vb = b.selectbox("Version B", vs, index=len(vs) - 1)
        pair = calls[calls["prompt_ref"].isin([f"{pid}@{va}", f"{pid}@{vb}"])]
        st.dataframe(pair.groupby("prompt_ref").agg(
            calls=("id", "size"), prompt_tokens=("prompt_tokens", "mean"), completion_tokens=("completion_tokens", "mean"),
            latency_p50_ms=("latency ms", "median"), error_rate=("failed", "mean")).reset_index(),
            hide_index=True, width="stretch")

st.subheader("Retrieval similarity")
searches = pd.DataFrame(store().retrievals(limit=200_000, since=since))
searches = searches[searches["top_similarity"].notna()] if not searches.empty else searches
if searches.empty:
    st.info("No searches with similarity scores in this window (dense and hybrid searches log them).")
else:
    searches["time"] = pd.to_datetime(searches["started_at"], unit="s")
    searches = searches.sort_values("time")
    searches["rolling median"] = searches["top_similarity"].rolling(20, min_periods=1).median()
    points = alt.Chart(searches).mark_circle(opacity=0.4).encode(x=alt.X("time:T", title=None),
                                                                 y=alt.Y("top_similarity:Q", title="top similarity"),
                                                                 color="index_name:N")
    st.altair_chart(points + alt.Chart(searches).mark_line().encode(x="time:T", y="rolling median:Q"), width="stretch")
    half = len(searches) // 2
    if half >= 5:  # drift: does the later half of the window look like the earlier?
        early, late = searches["top_similarity"][:half], searches["top_similarity"][half:]
        test = ks_2samp(early, late)
        st.write(f"Drift check, first half against second half of the window ({half} and {len(late)} searches): "
                 f"median top similarity {early.median():.3f} → {late.median():.3f}; two-sample KS statistic "
                 f"{test.statistic:.2f} (p = {test.pvalue:.3g}). A small p says the queries, or the index, have moved.")
