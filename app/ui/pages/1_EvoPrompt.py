"""EvoPrompt: evolve a task's prompts with GA or DE, watch the fitness grow, open past runs."""

import json

import matplotlib.pyplot as plt
import streamlit as st
from pydantic import ValidationError

from conclave.agents.evoprompt import RECIPES, EvoConfig, EvoResult
from conclave.app.evoprompt import execute, make_spec, parse_verbalizer
from conclave.app.ui.common import history, live, model_choices, page, registry, save_upload, settings, store, unfinished

page("EvoPrompt")
st.title("EvoPrompt")
st.caption("Prompts evolve by model-written crossover and mutation, are scored on a dev set, and the best survive "
           "(Guo et al. 2023). Classification is scored by the label words' log-probabilities, with no generation.")

UPLOAD = "a file of my own (CSV, TSV or JSONL)"

with st.form("evoprompt"):
    left, right = st.columns(2)
    with left:
        task = st.selectbox("Task", [*RECIPES, UPLOAD],
                            format_func=lambda t: t if t == UPLOAD else f"{t}: {RECIPES[t].description}")
        with st.expander("A task file of your own"):
            upload = st.file_uploader("Task file: columns text and label", type=["csv", "tsv", "jsonl"])
            kind = st.radio("Kind", ["classification", "generation"], horizontal=True,
                            help="generation tasks are scored by ROUGE-L against the label column")
            verbalizer = st.text_input("Verbalizer", placeholder="pos=positive,neg=negative",
                                       help="label=word pairs: the word the model should say for each label "
                                            "(default: the labels themselves)")
        prompts = st.text_area("Starting prompts, one per line (empty: the task's own)", height=100)
        models = model_choices()
        model = st.selectbox("Task model", models)
        evolver = st.selectbox("Evolver (writes the prompts)", models)
    with right:
        algorithm = st.radio("Algorithm", ["ga", "de", "paraphrase"], horizontal=True,
                             format_func={"ga": "GA", "de": "DE", "paraphrase": "paraphrase only (baseline)"}.get)
        de_variant = st.radio("DE template", ["v1", "v2", "v3"], horizontal=True,
                              help="v1: with the best prompt; v2: without it; v3: without the difference step")
        population = st.number_input("Population", 2, 200, 10)
        generations = st.number_input("Generations", 0, 1000, 10)
        dev_size = st.number_input("Dev examples", 1, 100_000, 100)
        test_size = st.number_input("Test examples", 0, 100_000, 300)
        seed = st.number_input("Seed", 0, 2**31 - 1, 0)
        patience = st.number_input("Stop after this many generations without a better best (0: never)", 0, 1000, 0)
        budget = st.number_input("Token budget (0: none)", 0, 10**10, 0, step=10_000)
    submitted = st.form_submit_button("Evolve", type="primary")

if submitted:
    s = settings()
    try:
        config = EvoConfig(algorithm=algorithm, population=population, generations=generations, de_variant=de_variant,
                           seed=seed, patience=patience or None, token_budget=budget or None)
        if task == UPLOAD:
            if upload is None:
                raise ValueError("choose a task file to upload")
            task_name = str(save_upload(upload))
        else:
            task_name = task
        spec = make_spec(s, task_name, model=model, evolver=evolver, kind=kind, verbalizer=parse_verbalizer(verbalizer),
                         prompts=[p.strip() for p in prompts.splitlines() if p.strip()], dev_size=dev_size,
                         test_size=test_size)
    except (ValidationError, ValueError) as e:
        st.error(f"Not started: {e}")
    else:
        registry().start("evoprompt", f"EvoPrompt {algorithm} on {task_name}",
                         lambda on_event: execute(s, store(), config, spec, on_event=on_event))


def progress(bg) -> None:
    run = bg.last("run")
    gen = bg.last("generation")
    if gen is None:
        loading = bg.last("loading")
        st.write(f"Loading {', '.join(loading['models'])} and scoring the first population …" if loading else "Starting …")
        return
    total = run["generations"] if run else gen["of"]
    st.progress(min(gen["generation"] / max(total, 1), 1.0), text=f"generation {gen['generation']} of {total}")
    st.write(f"best dev {gen['best']:.3f}, mean {gen['mean']:.3f}, {gen['tokens']:,} tokens so far")
    if test := bg.last("test"):
        st.write(f"scoring the top {test['prompts']} prompts on {test['examples']} test examples …")


live("evoprompt", progress)


def summary(run) -> dict:
    c = run.config.get("evoprompt", {})
    out = {"algorithm": c.get("algorithm"), "task": run.config.get("spec", {}).get("task")}
    if run.result:
        r = EvoResult.from_dict(run.result)
        out.update({"best dev": r.best.dev, "best test": r.best.test})
    return out


st.subheader("Runs")
picked = history("evoprompt", summary, key="evoprompt-run")
if picked is not None:
    if picked.result is None:
        unfinished("evoprompt", picked, "EvoPrompt",
                   lambda on_event: execute(settings(), store(), None, None, resume=picked.id, on_event=on_event),
                   lambda saved: f"Its last checkpoint is generation {saved[0]}.")
    else:
        result = EvoResult.from_dict(picked.result)
        best, init = result.best, result.node(result.initial_best)
        cols = st.columns(5)
        def gain(a, b):
            return None if a is None or b is None or abs(a - b) < 1e-9 else f"{a - b:+.3f} vs best initial"

        cols[0].metric("best dev", f"{best.dev:.3f}", gain(best.dev, init.dev))
        cols[1].metric("best test", "-" if best.test is None else f"{best.test:.3f}", gain(best.test, init.test))
        cols[2].metric("child parse rate", f"{result.parse_rate:.2f}")
        cols[3].metric("tokens", f"{result.tokens_evolver + result.tokens_task:,}")
        cols[4].metric("wall time", f"{result.wall_s:.0f} s")
        fig = result.figure()
        st.pyplot(fig, width="content")
        plt.close(fig)
        rows = [{"rank": f"top {i}", "prompt": result.node(n).prompt, "dev": result.node(n).dev,
                 "test": result.node(n).test} for i, n in enumerate(result.top, 1)]
        rows.append({"rank": "best initial", "prompt": init.prompt, "dev": init.dev, "test": init.test})
        st.dataframe(rows, hide_index=True, width="stretch")
        with st.expander("Lineage of the best prompt, and every generation"):
            st.markdown(result.report())
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"evoprompt-{picked.id[:8]}.json", mime="application/json")
