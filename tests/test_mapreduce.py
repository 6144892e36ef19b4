"""Map-reduce over long documents: budgets, concurrency, termination, caching, provenance, extraction,
the Ray executor, the CLI, and end-to-end runs on the real SmolLM2 (in process and through the server)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from conclave.prompts import loader as prompts
from conclave.agents.backends import open_llm
from conclave.agents.backends.local import LocalLLM
from conclave.agents.backends.openai_api import OpenAILLM
from conclave.agents.llm import LLMError
from conclave.agents.mapreduce import (
    SENTINEL,
    Cache,
    LocalExecutor,
    MapReduceConfig,
    MapReduceError,
    RayExecutor,
    is_irrelevant,
    read_documents,
    run,
)
from conclave.agents.mapreduce.trace import _spans
from conclave.local_models.errors import ConclaveError
from conclave.local_models.llamacpp import LlamaCppVocab
from conclave.retrieval.ingest import IngestError, Record
from tests.scripted import ScriptedLLM
from tests.server_proc import running_server
from tests.test_cli import conclave

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"


class WordVocab:
    """A tokenizer where every word is a token, and a chat template that marks roles."""

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return [0] * len(text.split())

    def chat_prompt(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}> {m['content']}\n" for m in messages) + "<assistant>"


class Scripted(ScriptedLLM):
    """The scripted model with a tokenizer (words, unless given one), counting its calls in flight."""

    def __init__(self, replies, vocab=None, **kw):
        super().__init__(replies, **kw)
        self.vocab = vocab or WordVocab()
        self.active = self.peak = 0

    async def _acomplete(self, req):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await super()._acomplete(req)
        finally:
            self.active -= 1


def document(n: int) -> str:
    """Numbered sentences, so that any answer can say exactly which ones it saw."""
    return " ".join(f"Fact {i} is that the river Alder has {i} bridges." for i in range(n))


def fact_numbers(text: str) -> set[int]:
    """The numbers in a text, where "3-5" stands for 3, 4 and 5."""
    out = set()
    for a, b in re.findall(r"\b(\d+)(?:-(\d+))?\b", text):
        out.update(range(int(a), int(b or a) + 1))
    return out


def ranges(numbers: set[int]) -> str:
    """{0, 1, 2, 5} -> "0-2 5": how the scripted model writes a merge short."""
    return _spans(list(numbers)).replace(",", "")


def stated(text: str) -> set[int]:
    """The facts a text states whole ("Fact 12 is ...")."""
    return {int(x) for x in re.findall(r"Fact (\d+)", text)}


def is_map(req) -> bool:
    return req.prompt_ref.startswith("mapreduce_map_")


def body(req) -> str:
    return req.messages[-1]["content"]


def merged_inputs(req) -> list[str]:
    """The texts inside a merge prompt (Part k: / Answer k: / Object k:)."""
    listed = body(req).split("\n\n", 1)[1]
    listed = re.split(r"\n\n(?=Combine|Question:|These objects)", listed)[0]  # the instructions after the list
    return [m.strip() for m in re.split(r"\n(?:Part|Answer|Object) \d+:\n", "\n" + listed)[1:]]


def facts_model(req) -> str:
    """Map: lists the facts it read; merge: the union of the facts it was given, as ranges (it summarizes)."""
    if is_map(req):
        return "facts " + " ".join(str(n) for n in sorted(stated(body(req))))
    return "facts " + ranges(set().union(*(fact_numbers(t) for t in merged_inputs(req))))


def config(**kw) -> MapReduceConfig:
    """Small sizes in words (the scripted model's tokens): about ten facts a part, four answers a merge."""
    base = dict(context_tokens=400, chunk_tokens=100, map_max_tokens=40, reduce_max_tokens=60, reduce_tokens=80)
    return MapReduceConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def smol_vocab(smollm2_path):
    return LlamaCppVocab(smollm2_path, name=MODEL)


def ray_model():
    """What each Ray worker builds its model with: module-level, so it pickles by reference."""
    return Scripted(facts_model)


# --- the seam: counting tokens ----------------------------------------------------------------


def test_the_vocab_only_tokenizer_counts_as_the_loaded_model_does(smol_vocab, engine, smollm2_path, tmp_path):
    llm = LocalLLM(engine, backend="llamacpp", model=MODEL)
    away = OpenAILLM(MODEL, base_url="http://127.0.0.1:9/v1", tokenizer=smol_vocab, context_length=2048)
    opened = open_llm(f"openai:{MODEL}", data_dir=tmp_path, base_url="http://127.0.0.1:9/v1", tokenizer=str(smollm2_path))
    assert opened.count_tokens("Hello world, this is a test.") == llm.count_tokens("Hello world, this is a test.")
    chat = prompts.render("mapreduce_map_summarize", text=document(5))
    for what in ("Hello world, this is a test.", chat.messages, chat):
        assert away.count_tokens(what) == llm.count_tokens(what) > 0
    assert llm.count_tokens(chat) == len(llm.tokens(llm._request("chat", chat, None, {})))  # what the model reads
    assert away.context_length == 2048 and llm.context_length == 2048
    with pytest.raises(LLMError, match="no tokenizer"):
        OpenAILLM(MODEL, base_url="http://127.0.0.1:9/v1").count_tokens("hi")


# --- budgets ---------------------------------------------------------------------------------------


def test_every_prompt_fits_its_budget_in_the_models_own_tokens(smol_vocab):
    def verbose(req):  # long answers, so the answers need collapsing before the reduce
        return " ".join(f"Fact {n} was noted in this part." for n in sorted(fact_numbers(body(req)))[:12])

    llm = Scripted(verbose, vocab=smol_vocab)
    c = config(context_tokens=512, chunk_tokens=None, map_max_tokens=64, reduce_max_tokens=96, reduce_tokens=300)
    result = run(c, llm, [Record(document(120), "alder.txt")])
    assert len(result.parts) >= 6 and result.rounds, "the test needs several parts and a collapse"

    def tokens(req) -> int:  # counted as the model would read it: its chat template, its tokenizer
        return len(smol_vocab.tokenize(smol_vocab.chat_prompt(req.messages), add_bos=False))

    maps = [r for r in llm.requests if r.prompt_ref.startswith("mapreduce_map")]
    merges = [r for r in llm.requests if r.prompt_ref.startswith("mapreduce_reduce")]
    assert len(maps) == len(result.parts) and merges
    for req in llm.requests:
        assert tokens(req) + req.params.max_tokens <= c.context_tokens
    assert max(tokens(r) for r in maps) > 0.8 * (c.context_tokens - c.map_max_tokens)  # parts use the room they have
    assert all(tokens(r) <= c.reduce_tokens for r in merges)
    assert all(p.tokens <= result.budget["chunk_tokens"] + 8 for p in result.parts)


def test_part_size_defaults_come_from_the_context_and_overlap(smol_vocab):
    llm = Scripted(facts_model, vocab=smol_vocab)
    small = run(MapReduceConfig(context_tokens=512, map_max_tokens=64), llm, [Record(document(80), "a")])
    large = run(MapReduceConfig(context_tokens=2048, map_max_tokens=64), llm, [Record(document(80), "a")])
    assert large.budget["chunk_tokens"] > 3 * small.budget["chunk_tokens"] and len(small.parts) > len(large.parts)
    assert small.budget["overlap_tokens"] == small.budget["chunk_tokens"] // 10
    text = document(80)
    for a, b in zip(small.parts, small.parts[1:]):  # neighbours overlap, and nothing between them is lost
        assert b.start < a.end
    assert small.parts[0].start == 0 and small.parts[-1].end == len(text)


# --- concurrency --------------------------------------------------------------------------------


def test_calls_in_flight_never_exceed_max_concurrency():
    llm = Scripted(facts_model)
    result = run(config(max_concurrency=3), llm, [Record(document(150), "a")])
    assert len(result.parts) > 6 and result.rounds
    assert llm.peak == 3  # reached, never passed, across map and collapse alike
    single = Scripted(facts_model)
    run(config(max_concurrency=1), single, [Record(document(150), "a")])
    assert single.peak == 1


# --- termination -----------------------------------------------------------------------------------


def echo_and_more(req) -> str:
    """A model that never shortens: it repeats everything it was given and adds to it."""
    if is_map(req):
        return "facts " + " ".join(str(n) for n in sorted(stated(body(req))))
    return " ".join(merged_inputs(req)) + " and that is all there is to say about it"


@pytest.mark.parametrize("max_rounds, cut_to_fit", [(0, True), (1, True), (8, False)])
def test_a_model_that_never_shortens_still_ends_within_the_rounds(max_rounds, cut_to_fit):
    llm = Scripted(echo_and_more)
    c = config(max_rounds=max_rounds, map_max_tokens=60, reduce_max_tokens=400, reduce_tokens=150, context_tokens=600)
    result = run(c, llm, [Record(document(200), "a")])
    assert len(result.rounds) <= min(max_rounds, 3)  # cutting each grown merge in half ends it in a few rounds anyway
    merges = [m for r in result.rounds for m in r]
    assert all(m.truncated and m.tokens_out <= m.tokens_in // 2 for m in merges)  # every merge grew, so each was cut
    assert len([w for w in result.warnings if "did not shrink" in w]) == len(merges)
    # what was left after the last round was cut to fit one merge
    assert any("truncated to fit" in w for w in result.warnings) is cut_to_fit
    reduce_calls = [r for r in llm.requests if r.prompt_ref.startswith("mapreduce_reduce")]
    assert len(reduce_calls) == len(merges) + 1 and result.answer
    assert all(llm.count_tokens(r.messages) <= c.reduce_tokens for r in reduce_calls)


# --- "no relevant information" ---------------------------------------------------------------------


@pytest.mark.parametrize("answer, irrelevant", [
    ("NO_RELEVANT_INFORMATION", True),
    ("**No relevant information.**", True),
    ("no_relevant_info", True),
    ("Answer: No relevant information", True),
    ('"NO RELEVANT INFORMATION"', True),
    ("The text does not mention the lamp. NO_RELEVANT_INFORMATION", True),
    ("", True),
    ("The lamp was invented by Mira Quell.", False),
    ("Mira Quell invented it; nothing else here is relevant information.", False),
    ("There is no relevant information about the date, but the inventor was Mira Quell.", False),
])
def test_the_sentinel_is_recognised_however_it_is_dressed(answer, irrelevant):
    assert is_irrelevant(answer) is irrelevant


def test_parts_with_nothing_relevant_are_dropped_before_the_reduce():
    assert SENTINEL in body(prompts.render("mapreduce_map_ask", text="t", question="q"))
    text = document(60).replace("Fact 41 is", "Fact 41 is that the Zorblat lamp was invented by Mira Quell, and")
    shapes = iter(["NO_RELEVANT_INFORMATION", "**No relevant information.**", "no_relevant_info",
                   "The text does not say. NO_RELEVANT_INFORMATION"] * 20)

    def model(req):
        if is_map(req):
            return "Mira Quell invented it." if "Zorblat" in body(req).split("Question:")[0] else next(shapes)
        assert set(merged_inputs(req)) == {"Mira Quell invented it."}  # parts overlap: the fact can be in two
        return "Mira Quell invented it."

    llm = Scripted(model)
    result = run(config(task="ask", question="Who invented the Zorblat lamp?", reduce_tokens=None), llm,
                 [Record(text, "a")])
    kept = [m for m in result.maps if m.kept]
    assert len(result.parts) > 3 and 1 <= len(kept) < len(result.maps)
    assert result.answer == "Mira Quell invented it."
    assert all(m.note == "no relevant information" for m in result.maps if not m.kept)
    sources = result.sources()
    assert sources and all("Zorblat" in text[p.start:p.end] for p in sources)

    nothing = run(config(task="ask", question="Who invented the Zorblat lamp?", reduce_tokens=None), Scripted(lambda r: SENTINEL),
                  [Record(document(60), "a")])
    assert nothing.answer == "" and nothing.final_inputs == [] and any("no part" in w for w in nothing.warnings)


def test_relevant_answers_from_several_parts_are_merged():
    def model(req):
        if is_map(req):
            found = [n for n in fact_numbers(body(req).split("Text:", 1)[1]) if n % 25 == 0]
            return f"Facts {' and '.join(map(str, found))} matter." if found else SENTINEL
        assert "Question: Which facts matter?" in body(req)
        return "Merged: " + " / ".join(merged_inputs(req))

    llm = Scripted(model)
    result = run(config(task="ask", question="Which facts matter?", reduce_tokens=None), llm, [Record(document(100), "a")])
    reduce = [r for r in llm.requests if r.prompt_ref == "mapreduce_reduce_ask@1"]
    assert len(reduce) == 1 and all(SENTINEL not in t for t in merged_inputs(reduce[0]))
    assert {0, 25, 50, 75} <= fact_numbers(result.answer)


# --- cache and resume ------------------------------------------------------------------------------


def test_a_rerun_reuses_every_answer_from_the_cache(tmp_path):
    docs = [Record(document(100), "a")]
    first = run(config(), Scripted(facts_model), docs, cache=Cache(tmp_path / "c.db"))
    again = Scripted(facts_model)
    second = run(config(), again, docs, cache=Cache(tmp_path / "c.db"))  # a new process would open it anew
    assert first.n_calls > 5 and first.n_cached == 0
    assert second.n_calls == 0 and not again.requests and second.n_cached == first.n_calls
    assert second.answer == first.answer and all(m.cached for m in second.maps)
    changed = run(config(seed=1), Scripted(facts_model), docs, cache=Cache(tmp_path / "c.db"))
    assert changed.n_cached == 0  # different sampling parameters are different answers


def test_a_crashed_run_resumes_with_only_the_missing_calls(tmp_path):
    docs = [Record(document(100), "a")]
    calls = 0

    def crashes_on_the_fourth_call(req):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("power cut")
        return facts_model(req)

    with pytest.raises(RuntimeError, match="power cut"):
        run(config(max_concurrency=1), Scripted(crashes_on_the_fourth_call), docs, cache=Cache(tmp_path / "c.db"))
    resumed = Scripted(facts_model)
    result = run(config(max_concurrency=1), resumed, docs, cache=Cache(tmp_path / "c.db"))
    maps = [r for r in resumed.requests if is_map(r)]
    assert result.n_cached == 3 and len(maps) == len(result.parts) - 3
    assert [m.cached for m in result.maps[:4]] == [True, True, True, False]
    fresh = run(config(max_concurrency=1), Scripted(facts_model), docs)
    assert result.answer == fresh.answer and fact_numbers(result.answer) == set(range(100))


# --- provenance ------------------------------------------------------------------------------------


def test_every_item_traces_back_to_its_parts_through_every_round():
    text = document(400)
    result = run(config(), Scripted(facts_model), [Record(text, "alder.txt")])
    assert len(result.rounds) >= 2
    index = {p.id: p for p in result.parts}
    for m in result.maps:
        assert result.provenance[m.id] == [m.part]
        assert fact_numbers(m.text) == stated(text[index[m.part].start:index[m.part].end])
    for merges in result.rounds:
        for g in merges:
            under = [p for i in g.inputs for p in result.provenance[i]]
            assert g.parts == result.provenance[g.id] == list(dict.fromkeys(under))
            # what a merge says comes from exactly the parts it names: provenance is exact, not plausible
            assert fact_numbers(g.text) == set().union(*(stated(text[index[p].start:index[p].end]) for p in g.parts))
    assert result.provenance["answer"] == [p.id for p in result.parts]  # every part reached the answer
    assert fact_numbers(result.answer) == set(range(400))
    json.dumps(result.to_dict())  # the whole trace is JSON
    assert "| r1.0 |" in result.report()


# --- extraction ------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"names": {"type": "array", "items": {"type": "string"}}},
    "required": ["names"],
}


def test_extraction_parses_repairs_and_merges_json():
    text = "\n\n".join([
        "Ann rowed across the Alder. " * 20,
        "Bob mended the nets. " * 20,
        "Cy counted the bridges. " * 20,
    ])

    def model(req):
        last = body(req)
        if req.prompt_ref == "mapreduce_json_repair@1":
            broken = req.messages[-2]["content"]
            return '{"names": ["Bob"]}' if broken.startswith("Sure") else '{"names": "Cy"}'
        if is_map(req):
            if "Ann" in last:
                return 'Here it is:\n```json\n{"names": ["Ann"]}\n```'
            if "Bob" in last:
                return "Sure! The names are Bob."
            return '{"names": "Cy"}'  # the wrong type, every time
        objs = [json.loads(t) for t in merged_inputs(req)]
        return json.dumps({"names": sorted({n for o in objs for n in o["names"]})})

    llm = Scripted(model)
    c = config(task="extract", json_schema=SCHEMA, context_tokens=600, reduce_tokens=None, json_retries=1)
    result = run(c, llm, [Record(text, "crew.txt")])
    assert result.data == {"names": ["Ann", "Bob"]} and json.loads(result.answer) == result.data
    dropped = [m for m in result.maps if not m.kept]
    assert len(dropped) == 1 and "names" in dropped[0].note and "2 tries" in dropped[0].note
    assert any("no usable JSON" in w for w in result.warnings)
    repairs = [r for r in llm.requests if r.prompt_ref == "mapreduce_json_repair@1"]
    assert len(repairs) == 2 and all("not usable" in body(r) for r in repairs)
    assert all(llm.count_tokens(r.messages) + r.params.max_tokens <= c.context_tokens for r in llm.requests)


def test_a_merge_that_never_gives_json_is_a_clear_error():
    def model(req):
        return '{"names": ["Ann"]}' if is_map(req) else "I merged them: Ann and Ann."

    c = config(task="extract", json_schema=SCHEMA, context_tokens=600, reduce_tokens=None)
    with pytest.raises(MapReduceError, match="no usable JSON after 3 tries"):
        run(c, Scripted(model), [Record(document(100), "a")])
    with pytest.raises(MapReduceError, match="no part gave a usable JSON object"):
        run(c, Scripted(lambda r: "nope"), [Record(document(20), "a")])


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("knobs, message", [
    (dict(task="ask"), "needs a non-empty question"),
    (dict(task="summarize", question="why?"), "only applies to task 'ask'"),
    (dict(task="extract"), "needs a JSON schema"),
    (dict(task="extract", json_schema={"type": "nope"}), "invalid JSON schema"),
    (dict(task="translate"), "task"),
    (dict(chunk_tokens=100, overlap_tokens=100), "smaller than chunk_tokens"),
    (dict(max_concurrency=0), "max_concurrency"),
    (dict(temperatur=0.5), "temperatur"),
])
def test_bad_config_is_refused_with_a_clear_message(knobs, message):
    with pytest.raises(ValidationError, match=message):
        MapReduceConfig(**knobs)


@pytest.mark.parametrize("knobs, message", [
    (dict(chunk_tokens=5000), "chunk_tokens 5000 does not fit"),
    (dict(map_max_tokens=390), "leave no room for text"),
    (dict(reduce_tokens=350), "exceed the context"),
    (dict(reduce_tokens=64, reduce_max_tokens=100), "too few for two answers"),
])
def test_sizes_that_cannot_work_are_refused_before_any_call(knobs, message):
    llm = Scripted(facts_model)
    with pytest.raises(MapReduceError, match=message):
        run(config(**knobs), llm, [Record(document(50), "a")])
    assert not llm.requests


def test_bad_documents_and_files_are_clear_errors(tmp_path):
    llm = Scripted(facts_model)
    with pytest.raises(MapReduceError, match="list of records"):
        run(config(), llm, "just a string")
    with pytest.raises(MapReduceError, match="no text"):
        run(config(), llm, [Record("  \n ", "blank")])
    with pytest.raises(IngestError, match="no such file"):
        read_documents([tmp_path / "missing.txt"])
    (tmp_path / "model.bin").write_bytes(b"\0\1")
    with pytest.raises(IngestError, match="can read"):
        read_documents([tmp_path / "model.bin"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(IngestError, match="not UTF-8"):
        read_documents([tmp_path / "latin1.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapReduceError, match="no .txt"):
        read_documents([tmp_path / "empty"])
    with pytest.raises(MapReduceError, match="tokenizer"):
        run(config(), OpenAILLM(MODEL, base_url="http://127.0.0.1:9/v1"), [Record("text", "a")])
    no_context = Scripted(facts_model)
    with pytest.raises(MapReduceError, match="context_tokens"):
        run(MapReduceConfig(), no_context, [Record("text", "a")])
    assert issubclass(MapReduceError, ConclaveError) and not llm.requests


# --- the Ray executor ------------------------------------------------------------------------------


def test_the_ray_executor_gives_the_local_results(tmp_path):
    ray = pytest.importorskip("ray")
    docs = [Record(document(150), "a")]
    c = config(max_concurrency=4)

    class Log(list):
        def __call__(self, rec):
            self.append(rec)

    local_log, ray_log = Log(), Log()
    local = run(c, Scripted(facts_model, sink=local_log), docs, executor=LocalExecutor())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # workers import the tests' scripted model
    try:
        driver = Scripted(facts_model, sink=ray_log)
        remote = run(c, driver, docs, executor=RayExecutor(ray_model))
        assert not driver.requests  # every call ran in a worker
        assert remote.to_dict() == local.to_dict()
        assert [(r.kind, r.prompt_ref) for r in ray_log] and len(ray_log) == len(local_log) == remote.n_calls

        def fails(req):
            raise LLMError("the worker's endpoint is down")

        with pytest.raises(LLMError, match="endpoint is down"):  # the model's own error, not Ray's wrapper
            run(c, Scripted(facts_model), docs, executor=RayExecutor(lambda: Scripted(fails)))
    finally:
        ray.shutdown()


# --- real SmolLM2 ----------------------------------------------------------------------------------

STORY = (
    "The village of Dunhelm sits where the river Alder meets the sea. Its lighthouse keeper, Mira Quell, "
    "invented the Zorblat lamp in the winter of 1871, after a storm wrecked three fishing boats. "
) + " ".join(
    f"In the year {1800 + i} the harbour of Dunhelm traded wool, salt and timber with the towns along the coast."
    for i in range(40)
)


def test_end_to_end_on_smollm2_in_process(engine):
    calls = []
    llm = LocalLLM(engine, backend="llamacpp", model=MODEL, sink=calls.append)
    c = MapReduceConfig(task="ask", question="Who invented the Zorblat lamp?", context_tokens=512, chunk_tokens=200,
                        map_max_tokens=48, reduce_max_tokens=24, max_concurrency=2)
    result = run(c, llm, [Record(STORY, "dunhelm.txt")])
    assert 3 <= len(result.parts) <= 8 and len(calls) == result.n_calls >= len(result.parts)
    assert all(r.error is None and r.prompt_tokens + r.completion_tokens <= 512 for r in calls)  # the model's own count
    assert {r.prompt_ref for r in calls} <= {"mapreduce_map_ask@1", "mapreduce_reduce_ask@1"}
    assert result.provenance["answer"] and set(result.provenance["answer"]) <= {p.id for p in result.parts}
    assert result.parts[0].id in [m.part for m in result.maps]
    # the outcome: the part that holds the planted fact yields its name in the map step
    holder = next(p.id for p in result.parts if "Mira Quell" in STORY[p.start:p.end])
    assert "Mira Quell" in next(m.text for m in result.maps if m.part == holder)


def test_end_to_end_through_the_server_with_a_local_tokenizer(model_dir, smol_vocab):
    with running_server(model_dir, "--model", MODEL, "--slots", "2", env={"CONCLAVE_N_CTX": "512"}) as base:
        llm = OpenAILLM(MODEL, base_url=f"{base}/v1", tokenizer=smol_vocab, timeout=120)
        assert llm.context_length == 512  # from the server's model card
        c = MapReduceConfig(chunk_tokens=300, map_max_tokens=12, reduce_max_tokens=16, max_concurrency=2)
        result = run(c, llm, [Record(STORY, "dunhelm.txt")])
        llm.close()
    assert len(result.parts) >= 3 and result.answer and result.prompt_tokens > 0
    assert result.n_calls == len(result.parts) + 1  # the map, then one reduce (the summaries fit it)


def test_cli_summarizes_records_the_run_and_writes_the_trace(with_model, tmp_path):
    doc = tmp_path / "dunhelm.txt"
    doc.write_text(STORY[:400], encoding="utf-8")
    out_file = tmp_path / "result.json"
    r = conclave("mapreduce", "summarize", str(doc), "--out", str(out_file), "-j", "2",
                 env={"CONCLAVE_N_CTX": "512"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "map (" in r.stderr and "parts: 1," in r.stderr and r.stdout.strip()
    trace = json.loads(out_file.read_text())
    assert trace["provenance"]["answer"] == [trace["parts"][0]["id"]] and trace["n_calls"] == 1
    conn = sqlite3.connect(with_model / "conclave.db")
    run_id, status, result = conn.execute(
        "SELECT id, status, result FROM runs WHERE workflow = 'mapreduce' ORDER BY created_at DESC").fetchone()
    assert status == "done" and json.loads(result)["answer"] == trace["answer"]
    refs = [p for (p,) in conn.execute("SELECT prompt_ref FROM calls WHERE run_id = ?", (run_id,))]
    assert refs == ["mapreduce_map_summarize@1"]
    again = conclave("mapreduce", "summarize", str(doc), env={"CONCLAVE_N_CTX": "512"}, timeout=300)
    assert again.returncode == 0 and "model calls: 0 (and 1 from the cache)" in again.stderr


def test_cli_errors_are_clear(tmp_path):
    r = conclave("mapreduce", "summarize", str(tmp_path / "missing.txt"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr
    doc = tmp_path / "d.txt"
    doc.write_text("text", encoding="utf-8")
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": "nope"}', encoding="utf-8")
    r = conclave("mapreduce", "extract", str(doc), "--schema", str(bad))
    assert r.returncode == 1 and "invalid JSON schema" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("{not json", encoding="utf-8")
    r = conclave("mapreduce", "extract", str(doc), "--schema", str(bad))
    assert r.returncode == 1 and "cannot read the JSON schema" in r.stderr
    r = conclave("mapreduce", "ask", str(doc))
    assert r.returncode == 2 and "--question" in r.stderr
    assert all(conclave("mapreduce", *cmd, "--help").returncode == 0 for cmd in ([], ["summarize"], ["ask"], ["extract"]))
