"""Model lab: the papers' training recipes on our local models (goldfish loss, ReST, MiniLLM,
AdEMAMix, quantized-model DPO) and the over-squashing probe; a recipe's settings, its live
training progress, and past runs with their tables and plots."""

import json

import matplotlib.pyplot as plt
import streamlit as st
from pydantic import ValidationError

from conclave.agents.modellab import RECIPES, LabResult
from conclave.app.modellab import execute
from conclave.app.ui.common import history, live, page, registry, settings, store, unfinished

page("Model lab")
st.title("Model lab")
st.caption("Training recipes from the papers behind Conclave, run on the small local models (read from our GGUF files "
           "into torch) with one shared trainer: checkpointed, resumable, and sized to finish in minutes on a laptop.")

linked = st.query_params.get("recipe")  # ?recipe=squash opens that recipe's form
names = list(RECIPES)
name = st.selectbox("Recipe", names, index=names.index(linked) if linked in RECIPES else 0,
                    format_func=lambda n: f"{n}: {RECIPES[n].summary}")
with st.form("modellab"):
    defaults = RECIPES[name].config().model_dump(mode="json")
    text = st.text_area("Settings (JSON; every key is optional)", json.dumps(defaults, indent=1), height=300,
                        key=f"settings-{name}")
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    try:
        config = RECIPES[name].config(**json.loads(text))
    except json.JSONDecodeError as e:
        st.error(f"Not started: the settings are not JSON: {e}")
    except (ValidationError, TypeError) as e:
        st.error(f"Not started: {e}")
    else:
        s = settings()
        registry().start(name, f"{name}: {RECIPES[name].summary}",
                         lambda on_event: execute(s, store(), name, config, on_event=on_event))


def progress(bg) -> None:
    if (loading := bg.last("loading")) and not bg.last("phase"):
        st.write(f"Loading {loading['model']} …")
    if ph := bg.last("phase"):
        st.write(f"Phase: **{ph['phase']}**")
    if (step := bg.last("step")) is not None:
        st.progress(min(step["step"] / max(step["steps"], 1), 1.0),
                    text=f"{step['phase']}: step {step['step']} of {step['steps']}, loss {step['loss']:.3f}")


live(name, progress)


def summary(run) -> dict:
    return {"title": LabResult.from_dict(run.result).title} if run.result else {}


st.subheader("Runs")
picked = history(name, summary, key=f"modellab-{name}")
if picked is not None:
    if picked.result is None:
        unfinished(name, picked, name, lambda on_event: execute(settings(), store(), name, None, resume=picked.id,
                                                                on_event=on_event),
                   lambda saved: f"It had finished {saved[0]} phases.")
    else:
        result = LabResult.from_dict(picked.result)
        st.markdown(result.report())
        if result.curves:
            fig = result.figure()
            st.pyplot(fig, width="content")
            plt.close(fig)
        st.download_button("Download the result (JSON)", json.dumps(picked.result, indent=1, ensure_ascii=False),
                           file_name=f"{name}-{picked.id[:8]}.json", mime="application/json")
