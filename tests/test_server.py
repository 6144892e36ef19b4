"""The OpenAI-compatible server, started for real and driven by real clients."""

import asyncio
import json
import time

import httpx
import openai
import pytest

from conclave.agents.backends.local import LocalLLM
from conclave.agents.backends.openai_api import OpenAILLM
from tests.server_proc import running_server

MODEL = "smollm2-135m-instruct"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, "--model", MODEL, "--slots", "4", "--max-queue", "8", env={"CONCLAVE_N_CTX": "2048"}) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local(engine):
    return LocalLLM(engine, backend="llamacpp", model=MODEL)


def test_health_and_models(server, client):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["slots"] == 4
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_equals_the_in_process_backend(client, local):
    # Both sides read the prompt from scratch: the session's engine may hold a prefix from an
    # earlier test, and KV computed inside a longer batch moves SmolLM2's logits by up to ~3%,
    # enough to flip its near-tie first token here (L'… 24.74 against The 24.65).
    local.engine.truncate(0, 0)
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=32, temperature=0)
    ours = local.chat(CHAT, max_tokens=32, temperature=0)
    assert r.choices[0].message.content == ours.text and r.choices[0].finish_reason == ours.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ours.usage.prompt_tokens, ours.usage.completion_tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_with_logprobs_in_openai_shape(client, local):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=2)
    ours = local.complete("The capital of France is", max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == ours.text
    assert lp.tokens == [t.token for t in ours.logprobs]
    assert lp.token_logprobs == pytest.approx([t.logprob for t in ours.logprobs])
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_chat_logprobs_in_openai_shape(client):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert bytes(t.bytes).decode() == t.token


def test_scoring_through_the_server_matches_in_process(server, local):
    remote = OpenAILLM(MODEL, base_url=f"{server}/v1")
    conts = [" Paris", " London", " a city of light"]
    theirs = remote.score("The capital of France is", conts)
    ours = local.score("The capital of France is", conts)
    assert [s.logprob for s in theirs] == pytest.approx([s.logprob for s in ours], abs=1e-4)
    assert [s.n_tokens for s in theirs] == [s.n_tokens for s in ours]
    assert [s.greedy for s in theirs] == [s.greedy for s in ours]


def test_streaming_chat_matches_the_whole_answer(client):
    whole = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0)
    parts, finish, usage = [], None, None
    for ev in client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0, stream=True,
                                             stream_options={"include_usage": True}):
        if ev.choices:
            parts.append(ev.choices[0].delta.content or "")
            finish = ev.choices[0].finish_reason or finish
        if ev.usage:
            usage = ev.usage
    assert "".join(parts) == whole.choices[0].message.content and finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert sum(1 for p in parts if p) > 5


def test_streaming_completion_ends_with_done(server):
    with httpx.stream("POST", f"{server}/v1/completions", json={"model": MODEL, "prompt": "One, two,", "max_tokens": 8, "stream": True, "temperature": 0}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_stop_sequences_and_seeded_choices(client, local):
    free = local.complete("The three primary colors are", max_tokens=30, temperature=0).text
    stop = free[10:16]
    r = client.completions.create(model=MODEL, prompt="The three primary colors are", max_tokens=30, temperature=0, stop=[stop])
    assert r.choices[0].text == free[: free.index(stop)] and r.choices[0].finish_reason == "stop"
    a = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=1.0, seed=3, n=2)
    b = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=1.0, seed=3, n=2)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.prompt_tokens == b.usage.prompt_tokens  # the shared prompt counts once
    # OpenAI seeds are any int64 (the fuzzer found negative ones crashed numpy's generator)
    neg = [client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, seed=-(2**63)) for _ in range(2)]
    assert neg[0].choices[0].message.content == neg[1].choices[0].message.content


def test_async_client_concurrent_requests_are_batched_correctly(server, local):
    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    expected = [local.chat([{"role": "user", "content": p}], max_tokens=24, temperature=0).text for p in prompts]

    async def main():
        c = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
        rs = await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=24, temperature=0) for p in prompts))
        await c.close()
        return [r.choices[0].message.content for r in rs]

    assert asyncio.run(main()) == expected


def test_autogen_two_agent_chat_through_the_server(server):
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_core.models import ModelFamily
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    async def main():
        client = OpenAIChatCompletionClient(
            model=MODEL, base_url=f"{server}/v1", api_key="unused", temperature=0, max_tokens=40,
            model_info={"vision": False, "function_calling": False, "json_output": False,
                        "family": ModelFamily.UNKNOWN, "structured_output": False},
        )
        writer = AssistantAgent("writer", model_client=client, system_message="You write one short sentence about the topic.")
        critic = AssistantAgent("critic", model_client=client, system_message="You suggest one improvement to the sentence.")
        team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))
        result = await team.run(task="Topic: the sea.")
        await client.close()
        return result

    result = asyncio.run(main())
    sources = [m.source for m in result.messages]
    assert sources == ["user", "writer", "critic"]
    assert all(isinstance(m.content, str) and m.content.strip() for m in result.messages[1:])


def test_the_figure_team_runs_against_the_server_as_a_remote_endpoint(server, tmp_path):
    """The team on the openai backend (the official client) against a real endpoint: our
    server. Model calls cross HTTP; the figure code still runs only in the local sandbox."""
    from conclave.agents.figure import FigureConfig, run

    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(10)))
    remote = OpenAILLM(MODEL, base_url=f"{server}/v1", timeout=300, max_retries=0)
    try:
        res = run(FigureConfig(request="Plot y against x", data=tmp_path / "d.csv", max_iterations=1,
                               coder_max_tokens=200, critic_max_tokens=60), remote)
    finally:
        remote.close()
    assert len(res.iterations) == 1 and res.tokens > 0 and res.coder == MODEL
    assert [m["source"] for m in res.transcript][:3] == ["commander", "coder", "executor"]
    assert res.transcript[-1]["source"] == "commander"


def test_the_legal_audit_audits_the_server_as_an_endpoint_system(server, tmp_path):
    """The audit's third system type: any OpenAI-compatible endpoint, asked the bare question
    over HTTP through the official client, with its answers graded like any other's."""
    from conclave.agents.legal_audit import AuditConfig, SystemSpec
    from conclave.app.legal_audit import execute
    from conclave.app.settings import load_settings
    from conclave.app.store import RunStore

    settings = load_settings(data_dir=tmp_path)
    store = RunStore(settings.db_path)
    config = AuditConfig(systems=[SystemSpec(name="served", kind="endpoint", model=MODEL, base_url=f"{server}/v1")],
                         categories=["factual_recall", "false_premise"], limit=2, max_answer_tokens=48)
    run_id, result = execute(settings, store, config)
    assert [(i.system, i.query_id) for i in result.items] == [
        ("served", q) for q in ("dq-fp-01", "dq-fp-02", "dq-fr-01", "dq-fr-02")]
    assert all(i.correctness in ("correct", "incorrect", "refusal") for i in result.items)
    calls = store.calls(run_id=run_id)
    assert len(calls) == 4 and {c["backend"] for c in calls} == {"openai"} and all(c["error"] is None for c in calls)
    assert store.get_run(run_id).status == "done"


def test_langchain_chat_openai_through_the_server(server, local):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=MODEL, base_url=f"{server}/v1", api_key="unused", temperature=0, max_tokens=24)
    reply = chat.invoke("What is the capital of France?")
    assert reply.content == local.chat(CHAT, max_tokens=24, temperature=0).text
    assert "".join(c.content for c in chat.stream("What is the capital of France?")) == reply.content


# --- bad input ---------------------------------------------------------------------------


def post(server, path, body=None, content=None, headers=None):
    return httpx.post(f"{server}{path}", json=body, content=content, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"model": "gpt-4", "messages": CHAT}, 404, "not found"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL, "messages": CHAT, "temperature": -1}, 400, "temperature"),
        ({"model": MODEL, "messages": CHAT, "temperature": "hot"}, 400, "temperature"),
        ({"model": MODEL, "messages": CHAT, "max_tokens": 10**9}, 400, "max_tokens"),
        ({"model": MODEL, "messages": CHAT, "max_tokens": -5}, 400, "max_tokens"),
        ({"model": MODEL, "messages": CHAT, "top_logprobs": 50}, 400, "top_logprobs"),
        ({"model": MODEL, "messages": CHAT, "n": 100}, 400, "n"),
        ({"model": MODEL, "messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text content"),
        ({"model": MODEL, "messages": CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
        ({"model": MODEL, "messages": CHAT, "presence_penalty": 1.0}, 400, "penalty"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "word " * 5000}]}, 400, "context"),
        ({"messages": CHAT}, 400, "model"),
    ],
)
def test_bad_chat_requests_get_openai_errors(server, body, status, fragment):
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and err["type"]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00garbage", b'{"model": "' + b"\xc3\x28" + b'", "prompt": "x"}', b"[]", b"null", b""],
)
def test_malformed_bodies_are_400(server, content):
    r = post(server, "/v1/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


@pytest.mark.parametrize("prompt", ["", [""], ["x", ""]])
def test_an_empty_prompt_is_refused_not_left_hanging(server, prompt):
    r = post(server, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 4})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    assert httpx.get(f"{server}/health").json()["active"] == 0


def test_oversized_body_is_refused(server):
    r = post(server, "/v1/completions", content=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/health"])
def test_oversized_headers_are_431(server, path):
    r = httpx.post(f"{server}{path}", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                   headers={"X-Padding": "x" * 1024 * 1024}, timeout=60)
    assert r.status_code == 431 and r.json()["error"]["type"] == "invalid_request_error"


def test_the_server_survives_all_of_that(client):
    assert client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3, temperature=0).usage.completion_tokens == 3


def test_a_client_that_disconnects_cancels_its_generation(server):
    def health():
        return httpx.get(f"{server}/health", timeout=60).json()

    before = health()
    assert before["active"] == 0 and before["queued"] == 0  # nothing else is generating meanwhile
    asked = 1500  # counting on from "5," greedily, the model would go on for all of them
    body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": asked, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 3:
                break
    # a condition, not a clock: the slot is freed, however fast or slow the machine
    deadline = time.monotonic() + 300
    while (now := health())["active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert now["active"] == 0 and now["queued"] == 0, now
    # freed because it was cancelled, not because it ended: the scheduler dropped one cancelled
    # job, and it had generated only a small share of what was asked for
    assert now["cancelled"] - before["cancelled"] == 1, (before, now)
    generated = now["generated_tokens"] - before["generated_tokens"]
    assert 1 <= generated < asked // 4, (before, now)


def test_api_key_is_required_when_set(model_dir):
    with running_server(model_dir, "--model", MODEL, "--slots", "1", "--api-key", "sk-serve-123") as base:
        bad = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-serve-123", max_retries=0)
        assert good.models.list().data[0].id == MODEL
        assert httpx.get(f"{base}/health").status_code == 200  # health stays open for probes


def test_binding_beyond_loopback_needs_a_key(model_dir):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "conclave.app.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, env={"CONCLAVE_DATA_DIR": str(model_dir), "PATH": ""}, timeout=60)
    assert r.returncode == 1 and "--api-key" in r.stderr
