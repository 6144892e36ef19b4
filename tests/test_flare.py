"""FLARE: orchestration on the scripted seam, the multi-hop set, and one run on the real SmolLM2."""

import json
import math

import pytest
from pydantic import ValidationError

from conclave.agents.backends.local import LocalLLM
from conclave.agents.flare import FlareConfig, FlareError, run
from conclave.agents.flare.flare import parse_search
from conclave.agents.flare.multihop import build
from conclave.retrieval.lexical import BM25
from tests.scripted import ScriptedLLM

QUESTION = "Where was the Zorblat lamp made?"
CHUNKS = [
    ("lamp", "The Zorblat lamp was made in Quellport by Mira Quell.", "notes", {}),
    ("mira", "Mira Quell was born in Dunhelm in 1870.", "notes", {}),
    ("river", "The Brenna River is 312 km long.", "notes", {}),
]


def lp(p: float) -> float:
    return math.log(p)


def sure(*words: str) -> list[tuple[str, float]]:
    return [(w, lp(0.95)) for w in words]


@pytest.fixture
def retriever():
    return BM25(CHUNKS)


def cfg(**kw) -> FlareConfig:
    return FlareConfig(**{"method": "direct", **kw})


# --- config ---------------------------------------------------------------------------------


def test_config_defaults_are_the_papers():
    c = FlareConfig()
    assert (c.theta, c.beta, c.lookahead_tokens, c.k, c.query_mode, c.temperature) == (0.4, 0.4, 64, 3, "masked", 0.0)


@pytest.mark.parametrize("bad", [dict(theta=0), dict(theta=1.5), dict(beta=-0.1), dict(k=0), dict(max_steps=0),
                                 dict(method="always"), dict(query_mode="keywords"), dict(lookahead=3)])
def test_config_rejects_out_of_range_knobs(bad):
    with pytest.raises(ValidationError):
        FlareConfig(**bad)


# --- FLARE-direct -----------------------------------------------------------------------------


def test_direct_confident_sentence_is_kept_without_active_retrieval(retriever):
    llm = ScriptedLLM([sure(" It", " was", " made", " in", " Quellport", ".")])
    res = run(cfg(), llm, retriever, QUESTION)
    assert res.answer == "It was made in Quellport."
    assert res.initial_query == QUESTION and res.initial_ids[0] == "lamp"
    assert res.n_retrievals == 1 and res.n_calls == 1 and res.stopped == "end"
    assert not res.steps[0].retrieved and res.steps[0].low_confidence == [] and res.trigger_rate == 0.0
    # the look-ahead was written after the passages of the initial retrieval
    assert "Passage: The Zorblat lamp was made in Quellport" in llm.requests[0].prompt
    assert llm.requests[0].params.logprobs and llm.requests[0].prompt_ref == "flare_answer@1"


def test_direct_token_just_above_theta_does_not_retrieve(retriever):
    draft = [(" It", lp(0.95)), (" was", lp(0.45)), (" made", lp(0.95)), (".", lp(0.95))]
    res = run(cfg(theta=0.4), ScriptedLLM([draft]), retriever, QUESTION)
    assert res.n_retrievals == 1 and not res.steps[0].retrieved


def test_direct_unsure_sentence_is_retrieved_for_and_regenerated(retriever):
    draft = [(" The", lp(0.9)), (" Zorblat", lp(0.9)), (" lamp", lp(0.9)), (" was", lp(0.9)), (" made", lp(0.2)),
             (" in", lp(0.9)), (" Dunhelm", lp(0.1)), (".", lp(0.9)), (" More", lp(0.9))]
    llm = ScriptedLLM([draft, " The Zorblat lamp was made in Quellport."])
    res = run(cfg(beta=0.15), llm, retriever, QUESTION)
    step = res.steps[0]
    assert [(t.token, round(t.prob, 2)) for t in step.low_confidence] == [(" made", 0.2), (" Dunhelm", 0.1)]
    assert step.queries == ["The Zorblat lamp was made in."]  # only the token <= beta (Dunhelm) is masked
    assert step.draft == " The Zorblat lamp was made in Dunhelm."  # cut at the first sentence: " More" is not in it
    assert step.regenerated == " The Zorblat lamp was made in Quellport."
    assert res.answer == "The Zorblat lamp was made in Quellport." and "Dunhelm" not in res.answer
    assert step.retrieved_ids and set(step.retrieved_ids) <= {c[0] for c in CHUNKS}
    assert res.n_calls == 2 and res.n_retrievals == 2 and res.trigger_rate == 1.0
    assert all(f"Passage: {dict((c[0], c[1]) for c in CHUNKS)[i]}" in llm.requests[1].prompt for i in step.retrieved_ids)


def test_masked_query_drops_every_token_at_or_below_beta(retriever):
    draft = [(" Mira", lp(0.9)), (" Quell", lp(0.3)), (" was", lp(0.9)), (" born", lp(0.9)), (" in", lp(0.5)),
             (" 1870", lp(0.05)), (".", lp(0.9))]
    res = run(cfg(beta=0.5), ScriptedLLM([draft, " Mira Quell was born in 1870."]), retriever, QUESTION)
    assert res.steps[0].queries == ["Mira was born."]


def test_masked_query_falls_back_to_the_question_when_nothing_is_left(retriever):
    draft = [(" Dunhelm", lp(0.1)), (".", lp(0.2))]
    res = run(cfg(), ScriptedLLM([draft, " Quellport."]), retriever, QUESTION)
    assert res.steps[0].queries == [QUESTION] and res.answer == "Quellport."


def test_questions_mode_asks_one_question_per_unsure_span(retriever):
    draft = [(" Mira", lp(0.2)), (" Quell", lp(0.3)), (" made", lp(0.9)), (" it", lp(0.9)), (" in", lp(0.9)),
             (" Dunhelm", lp(0.1)), (".", lp(0.9))]
    llm = ScriptedLLM([draft, " Who made the Zorblat lamp?", " Where was the Zorblat lamp made?",
                       " Mira Quell made it in Quellport."])
    res = run(cfg(query_mode="questions"), llm, retriever, QUESTION)
    asks = [r for r in llm.requests if r.prompt_ref == "flare_question@1"]
    assert len(asks) == 2
    assert 'answer is "Mira Quell"' in asks[0].prompt and 'answer is "Dunhelm"' in asks[1].prompt
    assert res.steps[0].queries == ["Who made the Zorblat lamp?", "Where was the Zorblat lamp made?"]
    assert res.n_retrievals == 3 and res.n_calls == 4
    assert len(res.steps[0].retrieved_ids) <= 3 and "lamp" in res.steps[0].retrieved_ids
    assert res.answer == "Mira Quell made it in Quellport."


def test_questions_mode_with_an_empty_generated_question_searches_with_the_user_question(retriever):
    draft = [(" Dunhelm", lp(0.1)), (".", lp(0.9))]
    res = run(cfg(query_mode="questions"), ScriptedLLM([draft, " ?", " Quellport."]), retriever, QUESTION)
    assert res.steps[0].queries == [QUESTION]


def test_a_line_break_before_any_text_is_not_the_end_of_the_answer(retriever):
    # SmolLM2 opens with a line break after long passages; the stop at "\n" must not make that an empty answer
    llm = ScriptedLLM([[("\n", lp(0.9))], sure(" It", " was", " made", " in", " Quellport.")])
    res = run(cfg(), llm, retriever, QUESTION)
    assert res.answer == "It was made in Quellport."
    assert llm.requests[1].prompt == llm.requests[0].prompt + "\n"  # the model goes on from its own line break
    assert res.n_calls == 2


def test_a_model_that_writes_only_line_breaks_gives_up(retriever):
    llm = ScriptedLLM(lambda req: "\n")
    res = run(cfg(method="single"), llm, retriever, QUESTION)
    assert res.answer == "" and res.n_calls == len(llm.requests) == 3
    assert llm.requests[2].prompt.endswith("Answer:\n\n")


def test_a_line_break_after_text_still_ends_the_answer(retriever):
    llm = ScriptedLLM([" Quellport. And", "\n", " never read"])
    res = run(cfg(), llm, retriever, QUESTION)
    assert res.answer == "Quellport." and res.n_calls == 2


def test_direct_respects_max_steps(retriever):
    llm = ScriptedLLM(lambda req: " One fact. Another fact.")
    res = run(cfg(max_steps=3), llm, retriever, QUESTION)
    assert len(res.steps) == 3 and res.n_calls == 3 and res.stopped == "max_steps"
    assert res.answer == "One fact. One fact. One fact."
    assert llm.requests[2].prompt.endswith("Answer: One fact. One fact.")  # each step continues the answer


def test_direct_respects_max_answer_tokens(retriever):
    llm = ScriptedLLM(lambda req: sure(" One", " fact", " here.", " More."))
    res = run(cfg(max_answer_tokens=5, lookahead_tokens=4), llm, retriever, QUESTION)
    assert [r.params.max_tokens for r in llm.requests] == [4, 2]
    assert res.stopped == "max_answer_tokens" and res.answer == "One fact here. One fact"


def test_direct_stops_when_the_model_ends_the_answer(retriever):
    res = run(cfg(), ScriptedLLM([" Quellport. More", [("\n", lp(0.9))]]), retriever, QUESTION)
    assert res.answer == "Quellport." and res.stopped == "end" and len(res.steps) == 2
    assert res.steps[1].note == "the model ended the answer"


def test_trace_is_json_and_events_arrive(retriever):
    draft = [(" It", lp(0.9)), (" was", lp(0.1)), (" Dunhelm", lp(0.9)), (".", lp(0.9))]
    events = []
    res = run(cfg(), ScriptedLLM([draft, " It was Quellport."]), retriever, QUESTION, on_event=events.append)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["answer"] == "It was Quellport." and d["config"]["theta"] == 0.4 and d["trigger_rate"] == 1.0
    assert d["steps"][0]["low_confidence"] == [{"token": " was", "prob": pytest.approx(0.1)}]
    assert d["retrieved_ids"] == res.retrieved_ids and len(set(res.retrieved_ids)) == len(res.retrieved_ids)
    assert [e["kind"] for e in events] == ["retrieve", "generate", "retrieve", "generate", "done"]
    report = res.report()
    assert "| step |" in report and "`was` 0.10" in report and "It was Quellport." in report


def test_n_calls_matches_the_seam_call_log(retriever):
    log = []
    draft = [(" It", lp(0.1)), (".", lp(0.9)), (" And", lp(0.9))]
    llm = ScriptedLLM([draft, " Who?", " It is Quellport. And", " Done."], sink=log.append)
    res = run(cfg(query_mode="questions", max_steps=2), llm, retriever, QUESTION)
    assert res.n_calls == len(log) == 4


@pytest.mark.parametrize("mode", ["raise", "none"])
def test_direct_without_logprobs_is_a_clear_error_but_instruct_works(retriever, mode):
    with pytest.raises(FlareError, match="does not return them.*'instruct'"):
        run(cfg(), ScriptedLLM([" x."], logprobs=mode), retriever, QUESTION)
    res = run(cfg(method="instruct"), ScriptedLLM([" Quellport."], logprobs=mode), retriever, QUESTION)
    assert res.answer == "Quellport."


def test_bad_input_is_refused(retriever):
    with pytest.raises(FlareError, match="non-empty question"):
        run(cfg(), ScriptedLLM([]), retriever, "  ")
    with pytest.raises(FlareError, match="needs a retriever"):
        run(cfg(), ScriptedLLM([]), None, QUESTION)


# --- FLARE-instruct ---------------------------------------------------------------------------


def test_instruct_searches_when_the_model_asks(retriever):
    llm = ScriptedLLM([" [Search(Zorblat lamp made)] it was Dunhelm", " It was made in Quellport."], logprobs="raise")
    res = run(cfg(method="instruct"), llm, retriever, QUESTION)
    assert res.steps[0].queries == ["Zorblat lamp made"] and res.steps[0].retrieved_ids[0] == "lamp"
    assert llm.requests[0].params.stop == (")]", "\n") and llm.requests[0].prompt_ref == "flare_instruct@1"
    second = llm.requests[1].prompt
    assert "Passage: The Zorblat lamp was made in Quellport" in second
    assert second.endswith("Answer: [Search(Zorblat lamp made)]")  # the model continues after its search
    assert res.answer == "It was made in Quellport." and res.n_calls == 2 and res.n_retrievals == 1
    assert res.steps[1].queries == [] and res.stopped == "end"


def test_instruct_handles_an_unterminated_search_at_the_token_limit(retriever):
    llm = ScriptedLLM([" It is [Search(the maker of the lamp who lived"])
    res = run(cfg(method="instruct", max_answer_tokens=5), llm, retriever, QUESTION)
    assert res.answer == "It is" and res.n_retrievals == 0 and res.stopped == "max_answer_tokens"
    assert "unterminated [Search(" in res.steps[0].note


def test_instruct_with_an_empty_search_uses_the_question(retriever):
    res = run(cfg(method="instruct"), ScriptedLLM([" [Search( )]", " Quellport."]), retriever, QUESTION)
    assert res.steps[0].queries == [QUESTION] and "empty" in res.steps[0].note and res.answer == "Quellport."


def test_instruct_stops_searching_at_max_steps(retriever):
    res = run(cfg(method="instruct", max_steps=2), ScriptedLLM(lambda req: " [Search(lamp)]"), retriever, QUESTION)
    assert len(res.steps) == 2 and res.n_retrievals == 2 and res.stopped == "max_steps" and res.answer == ""


@pytest.mark.parametrize("text,finish,expected", [
    ("plain answer", "stop", ("plain answer", None, None)),
    (" a [Search(q one", "stop", (" a ", "q one", None)),  # the backend cut at the stop sequence
    (" a [Search(q one)] tail", "stop", (" a ", "q one", None)),  # it did not
    (" a [Search(q one)", "stop", (" a ", "q one", None)),
])
def test_parse_search(text, finish, expected):
    assert parse_search(text, finish) == expected


# --- baselines --------------------------------------------------------------------------------


def test_no_retrieval_baseline(retriever):
    llm = ScriptedLLM([" Quellport."])
    res = run(cfg(method="none"), llm, None, QUESTION)
    assert res.n_retrievals == 0 and res.retrieved_ids == [] and "Passage:" not in llm.requests[0].prompt
    assert res.answer == "Quellport." and res.trigger_rate == 0.0


def test_single_retrieval_baseline(retriever):
    llm = ScriptedLLM([" Quellport."])
    res = run(cfg(method="single", k=2), llm, retriever, QUESTION)
    assert res.n_retrievals == 1 and res.steps[0].queries == [QUESTION] and len(res.steps[0].retrieved_ids) <= 2
    assert "Passage: The Zorblat lamp" in llm.requests[0].prompt and not llm.requests[0].params.logprobs


def test_interval_baseline_retrieves_every_window_with_the_last_window(retriever):
    llm = ScriptedLLM([" Mira Quell born in", " Dunhelm in 1870 and", " maybe."])  # the first two are cut to 3 tokens
    res = run(cfg(method="interval", interval_tokens=3), llm, retriever, QUESTION)
    assert [s.queries for s in res.steps] == [[QUESTION], ["Mira Quell born"], ["Dunhelm in 1870"]]
    assert [r.params.max_tokens for r in llm.requests] == [3, 3, 3]
    assert res.n_retrievals == 3 and res.answer == "Mira Quell born Dunhelm in 1870 maybe." and res.stopped == "end"
    assert res.steps[1].retrieved_ids[0] == "mira"


# --- the multi-hop set ------------------------------------------------------------------------


def test_multihop_has_forty_entities_with_two_to_four_facts():
    mh = build(0)
    assert len(mh.passages) == 40 and len({p[0] for p in mh.passages}) == 40
    kinds = [p[3]["kind"] for p in mh.passages]
    assert {k: kinds.count(k) for k in set(kinds)} == {"person": 14, "town": 12, "company": 8, "river": 6}
    for pid, text, source, meta in mh.passages:
        assert 2 <= meta["n_facts"] <= 4 and text.count(". ") + 1 == meta["n_facts"] and source == "multihop"
        assert text.startswith(meta["name"]) or text.startswith(f"The {meta['name']}")
    names = [p[3]["name"].lower() for p in mh.passages]
    assert not any(a != b and a in b for a in names for b in names)  # containment EM cannot mix two names up


def test_multihop_is_deterministic_for_a_seed():
    a, b, c = build(0), build(0), build(1)
    assert a.passages == b.passages and a.questions == b.questions
    assert a.passages != c.passages


def test_multihop_gold_passages_hold_the_bridge_and_the_answer():
    mh = build(3)
    text = {p[0]: p[1] for p in mh.passages}
    hops = {q.hops for q in mh.questions}
    assert hops == {1, 2} and len({q.id for q in mh.questions}) == len(mh.questions)
    for q in mh.questions:
        assert len(q.gold_ids) == q.hops and all(g in text for g in q.gold_ids)
        assert q.answer in text[q.gold_ids[-1]]
        if q.hops == 2:
            assert q.bridge in text[q.gold_ids[0]] and q.bridge in text[q.gold_ids[1]]
            assert q.answer not in q.text and q.bridge not in q.text


# --- end to end on the real model -------------------------------------------------------------


def test_direct_end_to_end_on_smollm2(engine):
    log = []
    llm = LocalLLM(engine, backend="llamacpp", model="smollm2-135m-instruct", sink=log.append)
    mh = build(0)
    ids = {p[0] for p in mh.passages}
    q = next(q for q in mh.questions if q.hops == 2)
    config = FlareConfig(method="direct", lookahead_tokens=24, max_steps=2, max_answer_tokens=48, k=2)
    res = run(config, llm, BM25(mh.passages), q.text)
    assert res.steps and 1 <= len(res.steps) <= 2
    assert res.n_calls == len(log) and all(r.error is None for r in log)
    assert all(r.prompt_ref == "flare_answer@1" for r in log)
    assert res.retrieved_ids and set(res.retrieved_ids) <= ids and set(res.initial_ids) <= ids
    assert isinstance(res.answer, str) and res.answer.strip()
    assert res.n_retrievals == 1 + sum(s.retrieved for s in res.steps)
    for s in res.steps:
        assert all(t.prob <= config.theta for t in s.low_confidence)
        assert s.retrieved == bool(s.low_confidence)


def test_cli_answers_from_an_index_and_logs_the_run_its_calls_and_searches(with_model, tmp_path):
    import subprocess
    import sys

    from conclave.app.store import RunStore
    from conclave.retrieval.index import open_index
    from conclave.retrieval.ingest import Record

    mh = build(0)
    open_index("multihop", with_model).add_records([Record(text, f"{src}/{pid}", meta) for pid, text, src, meta in mh.passages])
    q = next(q for q in mh.questions if q.hops == 2)
    out = tmp_path / "flare.json"
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "flare", q.text, "--index", "multihop", "-k", "2",
                           "--max-tokens", "32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "FLARE (direct)" in done.stdout and "Answer:" in done.stdout
    result = json.loads(out.read_text())
    assert result["method"] == "direct" and result["question"] == q.text and result["retrieved_ids"]

    store = RunStore(with_model / "conclave.db")
    run_ = next(r for r in store.list_runs("flare") if r.config["question"] == q.text)
    assert run_.status == "done" and run_.result == result and run_.config["index"] == "multihop"
    calls, searches = store.calls(run_id=run_.id), store.retrievals(run_id=run_.id)
    assert len(calls) == result["n_calls"] and all(c["prompt_ref"] == "flare_answer@1" for c in calls)
    assert len(searches) == result["n_retrievals"] and all(s["index_name"] == "multihop" for s in searches)
    assert all(s["mode"] == "hybrid" and s["similarities"] and s["error"] is None for s in searches)

    missing = subprocess.run([sys.executable, "-m", "conclave.app.cli", "flare", "x?", "--index", "nope"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "no index named 'nope'" in missing.stderr and "Traceback" not in missing.stderr

    # the same question from a config file, as `conclave run` and batch jobs run it
    (tmp_path / "flare.toml").write_text(f"question = {json.dumps(q.text)}\nindex = \"multihop\"\nmethod = \"single\"\n"
                                         "k = 2\nmax_answer_tokens = 32\n")
    by_config = subprocess.run([sys.executable, "-m", "conclave.app.cli", "run", "flare", "--config", str(tmp_path / "flare.toml")],
                               capture_output=True, text=True, timeout=600)
    assert by_config.returncode == 0, by_config.stderr
    assert "FLARE (single)" in by_config.stdout
    latest = store.list_runs("flare")[0]
    assert latest.status == "done" and latest.config["method"] == "single" and latest.result["n_retrievals"] == 1
