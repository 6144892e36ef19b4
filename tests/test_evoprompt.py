"""EvoPrompt: operators, selection, fitness, GA/DE/paraphrase runs and resume on the scripted
seam; tasks from files; one run on the real SmolLM2."""

import random
import re

import pytest
from pydantic import ValidationError

from conclave.agents.evoprompt import EvoConfig, EvoError, EvoResult, Example, Fitness, Task, TaskError, from_file, run
from conclave.prompts import loader as prompts
from conclave.agents.evoprompt.operators import Scaffold, de_values, parse_prompt, select_parents
from conclave.agents.evoprompt.tasks import split
from conclave.agents.memo import Memo
from conclave.app.store import RunStore
from tests.scripted import ScriptedLLM

GOOD, BAD = "loved it, a delight", "hated it, a bore"


def sentiment_task(n_dev=6, n_test=4, prompts=("Say if the review is positive or negative.", "Review sentiment?")):
    def ex(i, label):
        return Example(f"e{i}", f"{GOOD if label == 'pos' else BAD} #{i}", label)

    dev = tuple(ex(i, "pos" if i % 2 else "neg") for i in range(n_dev))
    test = tuple(ex(100 + i, "pos" if i % 2 else "neg") for i in range(n_test))
    return Task("toy", "classification", dev, test, prompts, {"pos": "positive", "neg": "negative"})


def task_model(prompt: str, continuation: str) -> float:
    """Right on every example when the instruction says 'carefully'; else always 'positive'."""
    instruction = prompt.split("\n\nText:")[0]
    if "carefully" in instruction:
        right = " positive" if GOOD in prompt else " negative"
        return -0.1 if continuation == right else -3.0
    return -0.5 if continuation == " positive" else -2.0


def field(req, name: str) -> str:
    return re.findall(rf"^{name}: (.*)$", req.messages[-1]["content"], re.M)[-1]


def evolver(req) -> str:
    """GA/DE: the first prompt plus 'carefully' once; paraphrase: the prompt reworded."""
    text = req.messages[-1]["content"]
    if "variation of the following instruction" in text:
        return f"<prompt>In other words: {field(req, 'Instruction')}</prompt>"
    base = field(req, "Prompt 1")
    return f"1. Crossover prompt: ...\n2. <prompt>{base if 'carefully' in base else base + ' Read carefully.'}</prompt>"


def cfg(**kw) -> EvoConfig:
    return EvoConfig(**{"population": 4, "generations": 3, "seed": 1, "max_concurrency": 2, **kw})


# --- operators and selection --------------------------------------------------------------


@pytest.mark.parametrize("reply, expected", [
    ("2. <prompt>Rate the review.</prompt>", "Rate the review."),
    ("Give it between <prompt> and </prompt>.\n<prompt>Judge\n the   tone.</prompt>", "Judge the tone."),
    ("<prompt>first</prompt> then <PROMPT>second</PROMPT>", "second"),
    ("2. <prompt>An opening tag, never closed.\n\nHere is some rambling.", "An opening tag, never closed."),
    ("give it between <prompt> and </prompt>.", None),
    ("<prompt>  </prompt>", None),
    ("no tags at all", None),
])
def test_parse_prompt(reply, expected):
    assert parse_prompt(reply) == expected


DE_V1 = Scaffold.of(prompts.render("evoprompt_de_v1", **de_values("v1", "Rate it.", "Grade it.", "Judge it.", "Is it good?")).messages)


@pytest.mark.parametrize("reply, expected", [
    # the worked example's own answer (or one of its prompts) copied is no child
    ("4. <prompt>Work out whether the reviewer enjoyed the movie: is the review positive or negative?</prompt>", None),
    ("<prompt>Is this review positive or negative?</prompt>", None),
    # ...but what it borrows, reworked, is a child
    ("<prompt>Work out whether the critic liked it: good or bad?</prompt>", "Work out whether the critic liked it: good or bad?"),
    # a child that runs on into the template's next step, or a field of it, is cut there
    ("<prompt>Rate the review. 4. Cross over the prompt from step 3 with the fo</prompt>", "Rate the review."),
    ("2. <prompt>Grade the review; answer with one word. 5. Cross over the prompt from step 4", "Grade the review; answer with one word."),
    ("<prompt>Rate the review. Basic Prompt: Is it good?</prompt>", "Rate the review."),
    ("<prompt>New prompt: Say if it is good.</prompt>", "Say if it is good."),
    # a broken closing tag, or only the instructions' "<prompt> and </prompt>", is nothing
    ("between <prompt> and </prompt.", None),
    ("4. <prompt>Judge the review.</prompt.", "Judge the review."),
])
def test_the_templates_own_words_are_cut_from_a_child(reply, expected):
    assert parse_prompt(reply, scaffold=DE_V1) == expected


def test_a_paraphrase_may_come_without_tags():
    assert parse_prompt("\n Say whether the critic liked it.\nMore.", untagged=True) == "Say whether the critic liked it."
    assert parse_prompt("<prompt>Tagged.</prompt>", untagged=True) == "Tagged."


@pytest.mark.parametrize("how", ["roulette", "tournament", "random"])
@pytest.mark.parametrize("fitness", [[0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.9, 0.1, 0.0]])
def test_selection_never_breaks_and_never_pairs_a_prompt_with_itself(how, fitness):
    rng = random.Random(0)
    texts = ["a", "b", "a", "c"]  # a duplicate text, as a fallback child makes
    for _ in range(200):
        i, j = select_parents(rng, texts, fitness, how)
        assert i != j and texts[i] != texts[j]


def test_roulette_follows_fitness():
    rng = random.Random(0)
    firsts = [select_parents(rng, ["a", "b", "c"], [0.0, 0.9, 0.1], "roulette")[0] for _ in range(500)]
    assert firsts.count(0) == 0 and firsts.count(1) > 350


def test_config_defaults_are_the_papers_and_bad_knobs_are_refused():
    c = EvoConfig()
    assert (c.population, c.generations, c.algorithm, c.top_k_test) == (10, 10, "ga", 3)
    for bad in ({"population": 1}, {"algorithm": "pso"}, {"de_variant": "v4"}, {"nope": 1}):
        with pytest.raises(ValidationError):
            EvoConfig(**bad)


# --- fitness ----------------------------------------------------------------------------


def test_fitness_scores_label_words_and_each_prompt_example_once():
    import asyncio

    task = sentiment_task()
    llm = ScriptedLLM(scores=task_model)
    fit = Fitness(task, llm, cfg())

    async def go():
        a, b = await asyncio.gather(fit.mean("Read carefully.", task.dev), fit.mean("Read carefully.", task.dev))
        c = await fit.mean("Guess.", task.dev)
        return a, b, c

    a, b, c = asyncio.run(go())
    assert a == b == 1.0 and c == 0.5
    assert len(llm.requests) == 2 * len(task.dev)  # the second identical request waited for the first
    assert all(r.prompt.endswith("Answer:") for r in llm.requests)


def test_generation_task_uses_rouge_l():
    import asyncio

    task = Task("sum", "generation", (Example("d", "long text here", "the cat sat on the mat"),), (), ("Summarize.",))
    llm = ScriptedLLM(lambda req: " the cat sat on the mat" if "briefly" in req.prompt else " a dog ran")
    fit = Fitness(task, llm, cfg())
    assert asyncio.run(fit.mean("Summarize briefly.", task.dev)) == pytest.approx(1.0)
    assert asyncio.run(fit.mean("Summarize.", task.dev)) == 0.0


# --- runs ---------------------------------------------------------------------------------


def test_ga_evolves_a_better_prompt_and_keeps_its_lineage():
    res = run(cfg(), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), sentiment_task())
    assert res.best.dev == 1.0 and res.best.test == 1.0
    assert "carefully" in res.best.prompt and res.best.op == "ga"
    init = res.node(res.initial_best)
    assert init.dev == 0.5 and init.test == 0.5
    bests = [g.best for g in res.generations]
    assert bests == sorted(bests) and len(res.generations) == 4  # generation 0 and three more
    lineage = res.lineage()
    assert lineage[0].id == res.best.id and lineage[-1].op in ("manual", "paraphrase")
    assert res.parse_failures == 0 and res.parse_rate == 1.0
    assert res.children == sum(g.children for g in res.generations) and [g.children for g in res.generations[1:]] == [4] * 3
    assert len(res.top) == 3 and all(res.node(i).test is not None for i in res.top)
    assert EvoResult.from_dict(res.to_dict()).to_dict() == res.to_dict()
    assert "| top 1 |" in res.report() and "Lineage" in res.report()


def test_duplicate_prompts_are_scored_once():
    task, model = sentiment_task(), ScriptedLLM(scores=task_model)
    res = run(cfg(), ScriptedLLM(evolver), model, task)
    distinct = {n.prompt for n in res.nodes}
    tested = {res.node(i).prompt for i in set(res.top) | {res.initial_best}}
    assert len(model.requests) == len(distinct) * len(task.dev) + len(tested) * len(task.test)


@pytest.mark.parametrize("variant, has_best", [("v1", True), ("v2", False), ("v3", True)])
def test_de_replaces_a_member_only_when_strictly_better(variant, has_best):
    evo = ScriptedLLM(evolver)
    res = run(cfg(algorithm="de", de_variant=variant, generations=2), evo, ScriptedLLM(scores=task_model), sentiment_task())
    de_requests = [r for r in evo.requests if "Basic Prompt:" in r.messages[-1]["content"]]
    assert len(de_requests) == 2 * 4
    assert all(("Prompt 3:" in r.messages[-1]["content"]) == has_best for r in de_requests)
    assert res.best.dev == 1.0
    for m in res.population:
        assert res.node(m).dev >= 0.5
    # a child that is no better never enters: after generation 1 every member is at 1.0, and stays
    assert all(res.node(i).dev == 1.0 for i in res.population)


def test_unparsable_children_fall_back_to_a_parent_and_are_counted():
    def mute(req):
        if "variation" in req.messages[-1]["content"]:
            return evolver(req)
        return "I would rather not."

    res = run(cfg(generations=2), ScriptedLLM(mute), ScriptedLLM(scores=task_model), sentiment_task())
    ga_children = [n for n in res.nodes if n.op == "ga"]
    assert len(ga_children) == 8 and all(n.parse_failed for n in ga_children)
    assert all(n.prompt == res.node(n.parents[0]).prompt for n in ga_children)
    assert res.parse_failures == 8 and res.parse_rate == pytest.approx(1 - 8 / res.children)
    assert res.best.dev == 0.5 and len({res.node(i).prompt for i in res.population}) == len(res.population)


def test_a_child_that_copies_the_worked_example_counts_as_unparsed():
    def parrot(req):
        if "variation" in req.messages[-1]["content"]:
            return evolver(req)
        return req.messages[1]["content"]  # the worked example's answer, word for word

    res = run(cfg(algorithm="de", generations=1), ScriptedLLM(parrot), ScriptedLLM(scores=task_model), sentiment_task())
    de_children = [n for n in res.nodes if n.op == "de"]
    assert len(de_children) == 4 and all(n.parse_failed for n in de_children) and res.parse_failures == 4
    assert not any("reviewer enjoyed the movie" in n.prompt for n in res.nodes)


def test_population_starts_with_what_parses_and_a_single_prompt_is_refused():
    silent = ScriptedLLM(lambda req: "  ")
    res = run(cfg(generations=0), silent, ScriptedLLM(scores=task_model), sentiment_task())
    assert len(res.nodes) == 2 and "started with 2 prompts" in res.notes[0]
    with pytest.raises(EvoError, match="population of two"):
        run(cfg(), ScriptedLLM(lambda req: "..."), ScriptedLLM(scores=task_model), sentiment_task(prompts=("One.",)))


def test_paraphrase_baseline_spends_the_same_number_of_children():
    res = run(cfg(algorithm="paraphrase"), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), sentiment_task())
    assert [g.children for g in res.generations[1:]] == [4] * 3 and res.best.dev == 0.5  # rewording never finds 'carefully'


def test_patience_and_token_budget_stop_early():
    never_better = ScriptedLLM(lambda req: "<prompt>Same old prompt.</prompt>")
    res = run(cfg(generations=10, patience=2), never_better, ScriptedLLM(scores=task_model), sentiment_task())
    assert res.stopped == "patience" and len(res.generations) == 3
    res = run(cfg(generations=10, token_budget=1), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), sentiment_task())
    assert res.stopped == "token_budget" and len(res.generations) == 1 and res.tokens_task > 0


def test_a_crashed_run_resumes_from_its_last_generation_with_cached_scores(tmp_path):
    task, states = sentiment_task(), []
    whole = run(cfg(), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), task)

    calls = {"n": 0}

    def crashes_in_generation_2(req):
        if "Prompt 1" in req.messages[-1]["content"]:
            calls["n"] += 1
            if calls["n"] > 6:
                raise RuntimeError("power cut")
        return evolver(req)

    cache = Memo(tmp_path / "scores.db")
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg(), ScriptedLLM(crashes_in_generation_2), ScriptedLLM(scores=task_model), task, cache=cache,
            checkpoint=lambda g, s: states.append((g, s)))
    assert [g for g, _ in states] == [0, 1]
    model = ScriptedLLM(scores=task_model)
    resumed = run(cfg(), ScriptedLLM(evolver), model, task, cache=Memo(tmp_path / "scores.db"), resume=states[-1][1])
    assert [n.prompt for n in resumed.nodes] == [n.prompt for n in whole.nodes]
    assert [g.best for g in resumed.generations] == [g.best for g in whole.generations]
    scored_before = {n.prompt for n in resumed.nodes if n.generation <= 1}
    assert not any(r.prompt.split("\n\nText:")[0] in scored_before for r in model.requests[: len(task.dev)])
    with pytest.raises(EvoError, match="another configuration"):
        run(cfg(population=5), ScriptedLLM(evolver), model, task, resume=states[-1][1])


def test_a_checkpoint_resumes_only_the_task_and_configuration_it_was_made_for():
    import dataclasses

    task, states = sentiment_task(), []
    whole = run(cfg(), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), task, checkpoint=lambda g, s: states.append(s))
    saved = states[1]  # after generation 1 of 3
    refused = {  # what differs, and what the error must name
        "another task": (cfg(), dataclasses.replace(task, name="reviews"), r"another task: name 'toy' \(this run's: 'reviews'\)"),
        "other dev examples": (cfg(), sentiment_task(n_dev=8), r"another task: its dev examples \(6; this run has 8\)"),
        "other test examples": (cfg(), dataclasses.replace(task, test=task.test[::-1]),
                                r"another task: its test examples \(the same number, other ones\)"),
        "other label words": (cfg(), dataclasses.replace(task, verbalizer={"pos": "good", "neg": "bad"}),
                              r"another task: verbalizer \{'pos': 'positive', 'neg': 'negative'\}"),
        "other starting prompts": (cfg(), sentiment_task(prompts=("Judge it.", "Sentiment?")), "its starting prompts"),
        "another population": (cfg(population=5), task, r"another configuration: population 4 \(this run's: 5\)"),
        "another seed": (cfg(seed=2), task, r"another configuration: seed 1 \(this run's: 2\)"),
        "another algorithm": (cfg(algorithm="de"), task, r"another configuration: algorithm 'ga' \(this run's: 'de'\)"),
    }
    for case, (config, other, message) in refused.items():
        model = ScriptedLLM(scores=task_model)
        with pytest.raises(EvoError, match=message):
            run(config, ScriptedLLM(evolver), model, other, resume=saved)
        assert model.requests == [], case  # refused before anything was asked
    legacy = {k: v for k, v in saved.items() if k != "task"}  # made before checkpoints recorded their task
    with pytest.raises(EvoError, match="does not record the task"):
        run(cfg(), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), task, resume=legacy)
    # the same task (rebuilt, not the same object) and configuration resume, and end as the whole run did
    resumed = run(cfg(), ScriptedLLM(evolver), ScriptedLLM(scores=task_model), sentiment_task(), resume=saved)
    assert [(n.prompt, n.dev) for n in resumed.nodes] == [(n.prompt, n.dev) for n in whole.nodes]
    assert [g.best for g in resumed.generations] == [g.best for g in whole.generations] and len(resumed.generations) == 4


def test_the_run_store_keeps_checkpoints_and_reopens_a_stopped_run(tmp_path):
    store = RunStore(tmp_path / "c.db")
    with pytest.raises(RuntimeError):
        with store.run("evoprompt", {"x": 1}) as run_id:
            store.save_checkpoint(run_id, 0, {"generation": 0})
            store.save_checkpoint(run_id, 1, {"generation": 1})
            raise RuntimeError("crash")
    assert store.get_run(run_id).status == "failed"
    assert store.checkpoint(run_id) == (1, {"generation": 1})
    assert store.find_run(run_id[:8]).id == run_id
    with store.run("evoprompt", {}, resume=run_id) as again:
        assert again == run_id and store.get_run(run_id).status == "running"
    assert store.get_run(run_id).status == "done"
    with pytest.raises(ValueError, match="finished"):
        store.reopen_run(run_id, "evoprompt")
    with pytest.raises(KeyError):
        store.find_run("zz")


# --- tasks --------------------------------------------------------------------------------


def test_tasks_load_from_csv_and_jsonl_with_clear_errors(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("text,label\n" + "".join(f"review {i},{'good' if i % 3 else 'bad'}\n" for i in range(30)))
    task = from_file(csv_file, verbalizer={"good": "positive", "bad": "negative"}, dev_size=9, test_size=6, seed=0)
    assert len(task.dev) == 9 and len(task.test) == 6 and not {e.id for e in task.dev} & {e.id for e in task.test}
    assert sum(e.label == "bad" for e in task.dev) == 3  # stratified: a third of the examples are 'bad'
    # no prompts given: one starting prompt, naming the verbalizer's words in label order (bad, good)
    assert task.manual_prompts == ("Classify the text. Answer with one of: negative, positive.",)

    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\nnot json\n')
    with pytest.raises(TaskError, match=r"t.jsonl:3: not JSON"):
        from_file(jl, dev_size=1, test_size=0, seed=0)
    jl.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    with pytest.raises(TaskError, match=r"labels \['y'\] have no verbalizer"):
        from_file(jl, verbalizer={"x": "yes"}, dev_size=1, test_size=0, seed=0)
    with pytest.raises(TaskError, match="no column"):
        from_file(jl, text_field="body", dev_size=1, test_size=0, seed=0)
    with pytest.raises(TaskError, match="has 2"):
        from_file(jl, dev_size=2, test_size=1, seed=0)
    with pytest.raises(TaskError, match="no such data file"):
        from_file(tmp_path / "missing.csv", dev_size=1, test_size=0, seed=0)
    with pytest.raises(TaskError, match="needs at least one starting prompt"):
        from_file(jl, kind="generation", dev_size=1, test_size=0, seed=0)


def test_split_is_deterministic_for_a_seed():
    exs = [Example(str(i), str(i), "a" if i < 50 else "b") for i in range(100)]
    assert split(exs, 10, 10, 3, stratify=True) == split(exs, 10, 10, 3, stratify=True)
    assert split(exs, 10, 10, 3, stratify=True) != split(exs, 10, 10, 4, stratify=True)


# --- the real model ------------------------------------------------------------------------


@pytest.mark.model
def test_ga_end_to_end_on_smollm2(engine):
    from conclave.agents.backends.local import LocalLLM
    from conclave.agents.evoprompt import recipe

    llm = LocalLLM(engine, backend="llamacpp", model="smollm2-135m-instruct")
    task = recipe("rotten-tomatoes", dev_size=6, test_size=6, seed=0)
    assert {e.label for e in task.dev} == {"fresh", "rotten"}
    config = EvoConfig(population=3, generations=1, evolver_max_tokens=96, max_concurrency=1, seed=0)
    res = run(config, llm, llm, task)
    assert len(res.generations) == 2 and res.generations[1].children == 3
    for n in res.nodes:
        assert n.dev is not None and round(n.dev * 6) == pytest.approx(n.dev * 6)  # a share of 6 examples
    assert res.best.test is not None and res.node(res.initial_best).test is not None
    assert 0 <= res.parse_rate <= 1 and res.tokens_task > 0 and res.tokens_evolver > 0
    # the fitness is the label word the model itself finds likelier
    fit = Fitness(task, llm, config)
    ex = task.dev[0]
    scores = llm.score(__import__("conclave.prompts.loader", fromlist=["render"]).render("evoprompt_classify", instruction=res.best.prompt, text=ex.text),
                       [" positive", " negative"])
    assert fit.predict(res.best.prompt, [ex.text]) == ["fresh" if scores[0].logprob > scores[1].logprob else "rotten"]


@pytest.mark.model
def test_cli_runs_and_resumes_a_stopped_run(with_model, tmp_path):
    import json

    from tests.test_cli import conclave

    env = {"CONCLAVE_DATA_DIR": str(with_model)}
    r = conclave("evoprompt", "--task", "rotten-tomatoes", "-n", "2", "-g", "1", "--dev-size", "4", "--test-size", "4",
                 "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "fit.png"), env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "top 1" in r.stdout and "best initial" in r.stdout and (tmp_path / "fit.png").stat().st_size > 1000
    done = json.loads((tmp_path / "r.json").read_text())
    assert len(done["generations"]) == 2

    # the run, read back by `conclave runs`
    listed = conclave("runs", "list", "--workflow", "evoprompt", env=env)
    run_id = RunStore(with_model / "conclave.db").list_runs("evoprompt", status="done")[0].id
    assert listed.returncode == 0 and run_id[:8] in listed.stdout
    shown = conclave("runs", "show", run_id[:8], env=env)
    assert shown.returncode == 0 and "top 1" in shown.stdout and "best initial" in shown.stdout
    assert conclave("runs", "export", run_id[:8], "--out", str(tmp_path / "x.json"), env=env).returncode == 0
    exported = json.loads((tmp_path / "x.json").read_text())
    assert exported["result"]["top"] == done["top"] and exported["calls"] and exported["checkpoint_step"] == 1
    assert "no run" in conclave("runs", "show", "ffffffff", env=env).stderr

    # a run that stopped after generation 0 (as a crash leaves it), resumed by the CLI on the real model;
    # its generation 0 ran on the task its spec names, on the same model (4 starting prompts fill a
    # population of 2: the evolver is not asked yet)
    from conclave.app.evoprompt import load_task
    from conclave.app.settings import load_settings

    config = EvoConfig(population=2, generations=2, seed=0, max_concurrency=4)
    spec = {"task": "rotten-tomatoes", "kind": "classification", "verbalizer": None, "prompts": None, "text_field": "text",
            "label_field": "label", "dev_size": 4, "test_size": 4, "split_seed": 0, "model": "smollm2-135m-instruct",
            "backend": None, "evolver": "smollm2-135m-instruct", "evolver_backend": None}
    store = RunStore(with_model / "conclave.db")

    def stopped_run(config_made_with: EvoConfig, task: Task) -> str:
        with pytest.raises(RuntimeError):
            with store.run("evoprompt", {"evoprompt": config.model_dump(), "spec": spec}) as run_id:
                def stop_after_generation_0(g, state):
                    store.save_checkpoint(run_id, g, state)
                    raise RuntimeError("killed")
                llm = load_settings().open_llm()
                try:
                    run(config_made_with, llm, llm, task, checkpoint=stop_after_generation_0)
                finally:
                    llm.close()
        return run_id

    own_task = load_task(spec)
    # a checkpoint made for another task, or with another configuration, is refused by name
    foreign = stopped_run(config, sentiment_task())
    r = conclave("evoprompt", "--resume", foreign[:8], env=env, timeout=300)
    assert r.returncode == 1 and "the checkpoint was made for another task: name 'toy'" in r.stderr, r.stderr
    other_config = stopped_run(EvoConfig(population=2, generations=2, seed=5, max_concurrency=4), own_task)
    r = conclave("evoprompt", "--resume", other_config[:8], env=env, timeout=300)
    assert r.returncode == 1 and "another configuration: seed 5 (this run's: 0)" in r.stderr, r.stderr
    assert store.get_run(foreign).status == store.get_run(other_config).status == "failed"  # nothing was resumed
    # ...and one made for the run's own task and configuration resumes, keeping what it had
    run_id = stopped_run(config, own_task)
    first = store.checkpoint(run_id)[1]["nodes"]
    assert [n["op"] for n in first] == ["manual"] * 4 and all(n["dev"] is not None for n in first)
    r = conclave("evoprompt", "--resume", run_id[:8], "--out", str(tmp_path / "resumed.json"), env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert len(resumed["generations"]) == 3
    assert [(n["prompt"], n["dev"]) for n in resumed["nodes"][: len(first)]] == [(n["prompt"], n["dev"]) for n in first]
    assert store.get_run(run_id).status == "done"
    again = conclave("evoprompt", "--resume", run_id[:8], env=env)
    assert again.returncode == 1 and "nothing to resume" in again.stderr
    assert "no run" in conclave("evoprompt", "--resume", "ffffffff", env=env).stderr
    bad = conclave("evoprompt", "--task", str(tmp_path / "nope.csv"), env=env)
    assert bad.returncode == 1 and "no such data file" in bad.stderr
