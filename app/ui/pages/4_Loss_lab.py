"""Loss lab: a model proposes preference-optimisation losses, the sandbox trains and scores
each, and the archive grows; past runs and their best losses."""

import json

import matplotlib.pyplot as plt
import streamlit as st
from pydantic import ValidationError

from conclave.agents.losslab import BUILTIN, LossLabConfig, LossLabResult
from conclave.app.losslab import execute
from conclave.app.ui.common import history, live, model_choices, page, registry, settings, store, unfinished

page("Loss lab")
st.title("Loss lab")
st.caption("A model proposes preference-optimisation losses as code; each is checked and trained in the sandbox on a "
           "synthetic preference task, and its fitness or its error goes back to the model (DiscoPOP, Lu et al. 2024). "
           "The archive starts with DPO, IPO, SLiC, KTO, LRML and cDPO.")

with st.form("losslab"):
    left, right = st.columns(2)
    with left:
        model = st.selectbox("Proposer", model_choices())
        candidates = st.number_input("Proposals", 0, 1000, 10, help="0 scores the built-in losses alone")
        baselines = st.multiselect("Built-in losses in the archive", list(BUILTIN), default=list(BUILTIN))
        timeout = st.number_input("Seconds per candidate (0: 120 s synthetic, 3600 s language model)", 0, 86_400, 0)
    with right:
        fitness = st.radio("Fitness", ["synthetic", "lm"], horizontal=True,
                           format_func={"synthetic": "synthetic task (seconds a loss)",
                                        "lm": "SmolLM2 on review continuations (minutes a loss)"}.get)
        steps = st.number_input("Training steps", 1, 100_000, 300, help="the language-model task: try 40")
        beta = st.number_input("β", 0.001, 100.0, 0.1, format="%.3f")
        kl_budget = st.number_input("KL budget", 0.01, 100.0, 1.0,
                                    help="fitness: the reward gained with KL at most this (the language model: nats)")
        seeds = st.text_input("Seeds", "0,1,2", help="synthetic task: fitness is the mean over these problems")
        seed = st.number_input("Proposer seed", 0, 2**31 - 1, 0)
    submitted = st.form_submit_button("Discover", type="primary")

if submitted:
    try:
        task = {"steps": steps, "beta": beta, "kl_budget": kl_budget}
        if fitness == "synthetic":
            task["seeds"] = tuple(int(x) for x in seeds.split(",") if x.strip())
        config = LossLabConfig(candidates=candidates, baselines=tuple(baselines), timeout_s=timeout or None, seed=seed,
                               fitness=fitness, **{fitness: task})
    except (ValidationError, ValueError) as e:
        st.error(f"Not started: {e}")
    else:
        s = settings()
        registry().start("losslab", f"Loss discovery, {candidates} proposals by {model}",
                         lambda on_event: execute(s, store(), config, model=model, on_event=on_event))


def progress(bg) -> None:
    run = bg.last("run")
    last = bg.last("candidate")
    if loading := bg.last("loading"):
        if last is None:
            st.write(f"Loading {', '.join(loading['models'])} …")
    if run:
        total = run["baselines"] + run["candidates"]
        done = last["index"] + 1 if last else 0
        st.progress(min(done / max(total, 1), 1.0), text=f"{done} of {total} losses judged")
    if last:
        verdict = f"fitness {last['fitness']:.4f}" if last["valid"] else f"failed at {last['stage']}"
        st.write(f"last: **{last['name']}** ({last['origin']}), {verdict}")
    if (p := bg.last("proposing")) and (not last or last["proposed"] < p["proposal"]):
        st.write(f"asking for proposal {p['proposal']} of {p['candidates']} …")


live("losslab", progress)


def summary(run) -> dict:
    out = {"proposals": run.config.get("losslab", {}).get("candidates"), "proposer": run.config.get("spec", {}).get("model")}
    if run.result:
        r = LossLabResult.from_dict(run.result)
        out.update({"valid": r.validity, "best": r.best.name if r.best else None,
                    "best fitness": r.best.fitness if r.best else None})
    return out


st.subheader("Runs")
picked = history("losslab", summary, key="losslab-run")
if picked is not None:
    if picked.result is None:
        unfinished("losslab", picked, "Loss discovery",
                   lambda on_event: execute(settings(), store(), None, resume=picked.id, on_event=on_event),
                   lambda saved: f"It had judged {saved[0]} losses.")
    else:
        result = LossLabResult.from_dict(picked.result)
        dpo, best = result.builtin("dpo"), result.best
        cols = st.columns(4)
        cols[0].metric("DPO fitness", "-" if not dpo or dpo.fitness is None else f"{dpo.fitness:.4f}")
        cols[1].metric("best proposal", "-" if best is None else f"{best.fitness:.4f}",
                       None if best is None or not dpo or dpo.fitness is None else f"{best.fitness - dpo.fitness:+.4f} vs DPO")
        cols[2].metric("valid proposals", "-" if result.validity is None else f"{result.validity:.0%}")
        cols[3].metric("wall time", f"{result.wall_s:.0f} s")
        fig = result.figure()
        st.pyplot(fig, width="content")
        plt.close(fig)
        st.dataframe([{"#": c.index, "origin": c.origin, "name": c.name, "fitness": c.fitness, "valid": c.valid,
                       "stopped at": c.stage, "error": (c.error or "").strip().splitlines()[-1] if c.error else ""}
                      for c in result.candidates], hide_index=True, width="stretch")
        for c in result.proposed:
            with st.expander(f"#{c.index} {c.name}: " + (f"{c.fitness:.4f}" if c.valid else f"failed at {c.stage}")):
                if c.thought:
                    st.write(c.thought)
                if c.code:
                    st.code(c.code, language="python")
                if c.error:
                    st.code(c.error, language="text")
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"losslab-{picked.id[:8]}.json", mime="application/json")
