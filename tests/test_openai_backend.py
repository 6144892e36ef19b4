"""OpenAILLM against a real local HTTP server that speaks the OpenAI wire format.

The stub is a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a daemon thread. Each test
scripts it with a queue of behaviours (and an optional default for when the queue is
empty) and reads back every request it received. 5xx/429 replies carry
``retry-after-ms: 10`` so the openai client's retries stay fast, except where a test
checks that plain exponential backoff still terminates.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conclave.agents.backends.openai_api import OpenAILLM
from conclave.agents.llm import (
    Chunk,
    Completion,
    ContinuationScore,
    EndpointError,
    EndpointTimeout,
    EndpointUnreachable,
    RequestRejected,
    TokenLogprob,
    UnsupportedFeature,
)
from conclave.app.store import RunStore

MODEL = "test-model"
KEY = "sk-test-key-abc"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


# --- the stub server ------------------------------------------------------------------


def ok(**kw) -> dict:
    """Answer normally; ``kw`` may carry ``choice`` overrides or ``events`` for a stream."""
    return {"kind": "ok", **kw}


def status(code: int, message: str = "boom", *, err_type: str = "server_error", retry_after_ms: bool = True, **kw) -> dict:
    return {"kind": "status", "code": code, "message": message, "err_type": err_type, "retry_after_ms": retry_after_ms, **kw}


def sleep(seconds: float) -> dict:
    return {"kind": "sleep", "seconds": seconds}


def chat_response(body: dict, *, content: str = "Hello there", finish_reason: str = "stop", logprobs=None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }
        ],
        "usage": USAGE,
    }


def completion_response(body: dict, *, text: str = " world", finish_reason: str = "length", logprobs=None) -> dict:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}],
        "usage": USAGE,
    }


def chat_chunk(delta: dict, finish_reason=None, logprobs=None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}],
    }


def usage_event() -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": MODEL, "choices": [], "usage": USAGE}


def default_chat_events() -> list[dict]:
    return [
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"content": "Hel"}),
        chat_chunk({"content": "lo "}),
        chat_chunk({"content": "there"}),
        chat_chunk({}, finish_reason="stop"),
        usage_event(),
    ]


def default_completion_events() -> list[dict]:
    def ev(text, finish=None):
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }

    return [ev(" wor"), ev("ld"), ev("", "length"), {**ev(""), "choices": [], "usage": USAGE}]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client dropping a kept-alive connection
            super().handle_error(request, client_address)


class Stub:
    def __init__(self):
        self.lock = threading.Lock()
        self.queue: deque = deque()
        self.default: dict = ok()
        self.requests: list[dict] = []
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def script(self, *behaviours: dict, default: dict | None = None) -> None:
        with self.lock:
            self.queue.extend(behaviours)
            if default is not None:
                self.default = default

    def reset(self) -> None:
        with self.lock:
            self.queue.clear()
            self.default = ok()
            self.requests.clear()

    def next_behaviour(self) -> dict:
        with self.lock:
            return self.queue.popleft() if self.queue else self.default

    def record(self, req: dict) -> None:
        with self.lock:
            self.requests.append(req)

    def llm(self, **kw) -> OpenAILLM:
        kw.setdefault("api_key", KEY)
        kw.setdefault("timeout", 5.0)
        kw.setdefault("max_retries", 0)
        return OpenAILLM(MODEL, base_url=kw.pop("base_url", self.url), **kw)

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers; streams close their connection

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                stub.record({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                behaviour = stub.next_behaviour()
                try:
                    self._act(behaviour, body or {})
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def _act(self, b: dict, body: dict):
                kind = b["kind"]
                if kind == "sleep":
                    time.sleep(b["seconds"])
                    b = ok()
                if kind == "status":
                    message = b["message"]
                    if b.get("echo_auth"):
                        message = f"{message}: you sent {self.headers.get('Authorization')}"
                    headers = {"retry-after-ms": "10"} if b["retry_after_ms"] and (b["code"] >= 500 or b["code"] == 429) else {}
                    err = {"error": {"message": message, "type": b["err_type"], "param": None, "code": None}}
                    return self._json(b["code"], err, headers)
                if b.get("respond"):
                    return self._json(200, b["respond"](self.path, body))
                is_chat = self.path.endswith("/chat/completions")
                if body.get("stream"):
                    events = b.get("events") or (default_chat_events() if is_chat else default_completion_events())
                    return self._sse(events)
                maker = chat_response if is_chat else completion_response
                return self._json(200, maker(body, **b.get("choice", {})))

            def _json(self, code: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: list[dict]):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # the body ends when the connection closes
                self.end_headers()
                for ev in events:
                    if "__sleep__" in ev:
                        time.sleep(ev["__sleep__"])
                        continue
                    self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler


@pytest.fixture(scope="module")
def _server():
    stub = Stub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def stub(_server):
    _server.reset()
    yield _server
    _server.reset()


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- 1. chat ---------------------------------------------------------------------------


def test_chat_request_and_response(stub):
    llm = stub.llm()
    out = llm.chat(MESSAGES, max_tokens=17, temperature=0.25, stop=["\n\n", "END"], seed=42)

    assert isinstance(out, Completion)
    assert out.text == "Hello there"
    assert out.finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (12, 3, 15)
    assert out.model == MODEL and out.backend == "openai"
    assert out.logprobs is None
    assert out.latency_s > 0

    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == MODEL
    assert body["messages"] == MESSAGES
    assert body["max_tokens"] == 17
    assert body["temperature"] == 0.25
    assert body["stop"] == ["\n\n", "END"]
    assert body["seed"] == 42
    assert not body.get("stream")
    assert "logprobs" not in body


def test_chat_without_seed_or_stop_omits_them(stub):
    stub.llm().chat(MESSAGES)
    body = stub.requests[0]["body"]
    assert "seed" not in body and "stop" not in body
    assert body["max_tokens"] == 256 and body["temperature"] == 0.7


# --- 2. plain completion ---------------------------------------------------------------


def test_complete_request_and_response(stub):
    llm = stub.llm()
    out = llm.complete("Hello", max_tokens=5, temperature=0.0, stop="\n", seed=7)

    assert out.text == " world"
    assert out.finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (12, 3)

    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert req["path"] == "/v1/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == MODEL
    assert body["prompt"] == "Hello"
    assert "messages" not in body
    assert body["max_tokens"] == 5
    assert body["temperature"] == 0.0
    assert body["stop"] == ["\n"]
    assert body["seed"] == 7


# --- 3. streaming ----------------------------------------------------------------------


def test_stream_chat(stub):
    llm = stub.llm()
    chunks = list(llm.stream_chat(MESSAGES, max_tokens=9))

    assert all(isinstance(c, Chunk) for c in chunks)
    assert [c.text for c in chunks] == ["Hel", "lo ", "there", ""]
    assert "".join(c.text for c in chunks) == "Hello there"
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.prompt_tokens, last.completion_tokens) == (12, 3)

    body = stub.requests[0]["body"]
    assert stub.requests[0]["path"] == "/v1/chat/completions"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 9


def test_stream_complete(stub):
    chunks = list(stub.llm().stream_complete("Hello"))
    assert "".join(c.text for c in chunks) == " world"
    assert chunks[-1].finish_reason == "length"
    assert (chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (12, 3)
    assert stub.requests[0]["path"] == "/v1/completions"
    assert stub.requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_stream_cut_without_finish_reason_is_an_error(stub):
    stub.script(ok(events=[chat_chunk({"content": "Hel"})]))
    with pytest.raises(EndpointError, match="without a finish reason"):
        list(stub.llm().stream_chat(MESSAGES))


# --- 4. log-probs ----------------------------------------------------------------------

CHAT_LOGPROBS = {
    "content": [
        {
            "token": "Hello",
            "logprob": -0.1,
            "bytes": list(b"Hello"),
            "top_logprobs": [
                {"token": "Hello", "logprob": -0.1, "bytes": None},
                {"token": "Hi", "logprob": -2.5, "bytes": None},
            ],
        },
        {
            "token": " there",
            "logprob": -0.7,
            "bytes": None,
            "top_logprobs": [
                {"token": " there", "logprob": -0.7, "bytes": None},
                {"token": "!", "logprob": -1.2, "bytes": None},
            ],
        },
    ]
}


def test_chat_logprobs(stub):
    stub.script(ok(choice={"logprobs": CHAT_LOGPROBS}))
    out = stub.llm().chat(MESSAGES, logprobs=True, top_logprobs=2)

    body = stub.requests[0]["body"]
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 2
    assert out.logprobs == [
        TokenLogprob("Hello", -0.1, (("Hello", -0.1), ("Hi", -2.5))),
        TokenLogprob(" there", -0.7, ((" there", -0.7), ("!", -1.2))),
    ]


def test_chat_logprobs_missing_is_unsupported(stub):
    stub.script(ok(choice={"logprobs": None}))
    with pytest.raises(UnsupportedFeature, match="no log-probs"):
        stub.llm().chat(MESSAGES, logprobs=True, top_logprobs=2)
    assert len(stub.requests) == 1


def test_stream_logprobs_missing_is_unsupported(stub):
    with pytest.raises(UnsupportedFeature, match="no log-probs"):
        list(stub.llm().stream_chat(MESSAGES, logprobs=True))
    assert stub.requests[0]["body"]["logprobs"] is True


def test_completion_logprobs(stub):
    lp = {
        "tokens": [" wor", "ld"],
        "token_logprobs": [-0.5, -0.25],
        "top_logprobs": [{" wor": -0.5, " the": -1.5}, {"ld": -0.25, "k": -3.0}],
        "text_offset": [5, 9],
    }
    stub.script(ok(choice={"logprobs": lp}))
    out = stub.llm().complete("Hello", logprobs=True, top_logprobs=2)
    assert stub.requests[0]["body"]["logprobs"] == 2
    assert out.logprobs == [
        TokenLogprob(" wor", -0.5, ((" wor", -0.5), (" the", -1.5))),
        TokenLogprob("ld", -0.25, (("ld", -0.25), ("k", -3.0))),
    ]


# --- 5. 5xx retries --------------------------------------------------------------------


def test_5xx_retried_then_success(stub):
    stub.script(status(500), status(503))
    out = stub.llm(max_retries=2).chat(MESSAGES)
    assert out.text == "Hello there"
    assert len(stub.requests) == 3
    assert [r["headers"].get("x-stainless-retry-count") for r in stub.requests] == ["0", "1", "2"]
    assert all(r["body"] == stub.requests[0]["body"] for r in stub.requests)


def test_5xx_forever_gives_endpoint_error(stub):
    stub.script(default=status(500, "the server is on fire"))
    with pytest.raises(EndpointError) as ei:
        stub.llm(max_retries=2).chat(MESSAGES)
    assert len(stub.requests) == 3
    msg = str(ei.value)
    assert stub.url in msg
    assert "500" in msg and "the server is on fire" in msg
    assert "after 3 attempts" in msg


def test_429_forever_gives_endpoint_error(stub):
    stub.script(default=status(429, "slow down", err_type="rate_limit_error"))
    with pytest.raises(EndpointError, match="429"):
        stub.llm(max_retries=1).chat(MESSAGES)
    assert len(stub.requests) == 2


def test_plain_backoff_terminates(stub):
    """No retry-after header: the client's own exponential backoff (about 0.4-0.5 s here)."""
    stub.script(default=status(502, "bad gateway", retry_after_ms=False))
    t0 = time.monotonic()
    with pytest.raises(EndpointError):
        stub.llm(max_retries=1).complete("Hello")
    elapsed = time.monotonic() - t0
    assert len(stub.requests) == 2
    assert elapsed < 10.0  # a hang guard, not a performance assertion


def test_stream_5xx_retried_then_success(stub):
    stub.script(status(500))
    chunks = list(stub.llm(max_retries=1).stream_chat(MESSAGES))
    assert "".join(c.text for c in chunks) == "Hello there"
    assert len(stub.requests) == 2


# --- 6. 4xx ----------------------------------------------------------------------------


def test_400_rejected_without_retry(stub):
    stub.script(default=status(400, "max_tokens is too large for this model", err_type="invalid_request_error"))
    with pytest.raises(RequestRejected) as ei:
        stub.llm(max_retries=3).chat(MESSAGES)
    assert ei.value.status == 400
    assert "max_tokens is too large for this model" in str(ei.value)
    assert stub.url in str(ei.value)
    assert len(stub.requests) == 1


def test_400_on_stream_rejected_without_retry(stub):
    stub.script(default=status(400, "bad stop", err_type="invalid_request_error"))
    with pytest.raises(RequestRejected, match="bad stop") as ei:
        list(stub.llm(max_retries=3).stream_chat(MESSAGES))
    assert ei.value.status == 400
    assert len(stub.requests) == 1


def test_401_mentions_key_setting(stub):
    stub.script(default=status(401, "Incorrect API key provided", err_type="invalid_request_error"))
    with pytest.raises(RequestRejected) as ei:
        stub.llm(max_retries=3).chat(MESSAGES)
    assert ei.value.status == 401
    assert "CONCLAVE_OPENAI_API_KEY" in str(ei.value)
    assert "Incorrect API key provided" in str(ei.value)
    assert len(stub.requests) == 1


# --- 7. timeout ------------------------------------------------------------------------


def test_timeout(stub):
    stub.script(default=sleep(1.5))
    t0 = time.monotonic()
    with pytest.raises(EndpointTimeout) as ei:
        stub.llm(timeout=0.3, max_retries=1).chat(MESSAGES)
    elapsed = time.monotonic() - t0
    assert elapsed < 10.0  # a hang guard, not a performance assertion
    assert stub.url in str(ei.value)
    assert "0.3s" in str(ei.value)
    assert len(stub.requests) == 2  # the first try and one retry


def test_timeout_mid_stream(stub):
    """The first event arrives, then the server stalls longer than the read timeout."""
    stub.script(ok(events=[chat_chunk({"content": "Hel"}), {"__sleep__": 1.5}, chat_chunk({}, finish_reason="stop")]))
    got = []
    t0 = time.monotonic()
    with pytest.raises(EndpointTimeout):
        for chunk in stub.llm(timeout=0.3, max_retries=0).stream_chat(MESSAGES):
            got.append(chunk.text)
    assert time.monotonic() - t0 < 10.0
    assert got == ["Hel"]


# --- 8. unreachable --------------------------------------------------------------------


def test_unreachable():
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAILLM(MODEL, base_url=url, api_key=KEY, timeout=2.0, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(EndpointUnreachable) as ei:
        llm.chat(MESSAGES)
    assert time.monotonic() - t0 < 10.0
    assert url in str(ei.value)
    assert "CONCLAVE_OPENAI_BASE_URL" in str(ei.value)
    assert KEY not in str(ei.value)


def test_unreachable_stream():
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAILLM(MODEL, base_url=url, api_key=KEY, timeout=2.0, max_retries=0)
    with pytest.raises(EndpointUnreachable, match=url.replace(".", r"\.")):
        list(llm.stream_chat(MESSAGES))


# --- 9. scoring ------------------------------------------------------------------------

PROMPT = "The cat"


def score_response(path: str, body: dict) -> dict:
    """Echoed prompt log-probs for ["The cat sat", "The cat ran"], answered in reverse index order."""
    sat = {
        "tokens": ["The", " cat", " sat"],
        "text_offset": [0, 3, 7],
        "token_logprobs": [None, -1.0, -0.5],
        "top_logprobs": [None, {" cat": -1.0, " dog": -1.5}, {" sat": -0.5, " ran": -1.1}],
    }
    ran = {
        "tokens": ["The", " cat", " r", "an"],
        "text_offset": [0, 3, 7, 9],
        "token_logprobs": [None, -1.0, -2.0, -0.25],
        "top_logprobs": [None, {" cat": -1.0}, {" s": -0.3, " r": -2.0}, {"an": -0.25}],
    }
    return {
        "id": "cmpl-2",
        "object": "text_completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 1, "text": PROMPT + " ran", "finish_reason": "length", "logprobs": ran},
            {"index": 0, "text": PROMPT + " sat", "finish_reason": "length", "logprobs": sat},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7},
    }


def test_score(stub):
    stub.script(ok(respond=score_response))
    scores = stub.llm().score(PROMPT, [" sat", " ran"])

    req = stub.requests[0]
    assert req["path"] == "/v1/completions"
    body = req["body"]
    assert body["prompt"] == ["The cat sat", "The cat ran"]
    assert body["echo"] is True
    assert body["max_tokens"] == 0
    assert body["logprobs"] == 1
    assert body["temperature"] == 0

    assert all(isinstance(s, ContinuationScore) for s in scores)
    sat, ran = scores
    assert sat.continuation == " sat"
    assert sat.logprob == pytest.approx(-0.5)
    assert sat.n_tokens == 1
    assert sat.token_logprobs == (-0.5,)
    assert sat.greedy is True
    assert sat.n_context == 2

    assert ran.continuation == " ran"
    assert ran.logprob == pytest.approx(-2.25)
    assert ran.n_tokens == 2
    assert ran.token_logprobs == (-2.0, -0.25)
    assert ran.greedy is False
    assert ran.n_context == 2


def test_score_many_is_one_request_for_every_prompt(stub):
    def two_items(path, body):
        reply = score_response(path, body)
        sat = reply["choices"][1]["logprobs"]
        reply["choices"] = [{"index": i, "text": t, "finish_reason": "length", "logprobs": sat} for i, t in enumerate(body["prompt"])]
        return reply

    stub.script(ok(respond=two_items))
    out = stub.llm().score_many([(PROMPT, [" sat"]), (PROMPT, [" sat", " sat"])])
    assert len(stub.requests) == 1 and stub.requests[0]["body"]["prompt"] == ["The cat sat"] * 3
    assert [[s.logprob for s in r] for r in out] == [[-0.5], [-0.5, -0.5]]


def test_score_echo_rejected_is_unsupported(stub):
    stub.script(default=status(400, "echo is not supported with this model", err_type="invalid_request_error"))
    with pytest.raises(UnsupportedFeature, match="echo is not supported"):
        stub.llm(max_retries=2).score(PROMPT, [" sat"])
    assert len(stub.requests) == 1


def test_score_without_prompt_logprobs_is_unsupported(stub):
    stub.script(ok(choice={"logprobs": None}))
    with pytest.raises(UnsupportedFeature, match="cannot score"):
        stub.llm().score(PROMPT, [" sat"])


def test_score_with_missing_choices_is_an_error_not_a_short_list(stub):
    def one_choice(path, body):
        reply = score_response(path, body)
        reply["choices"] = reply["choices"][1:]
        return reply

    stub.script(ok(respond=one_choice))
    with pytest.raises(UnsupportedFeature, match="1 choices for 2 prompts"):
        stub.llm().score(PROMPT, [" sat", " ran"])


def test_score_server_error_is_endpoint_error(stub):
    stub.script(default=status(500))
    with pytest.raises(EndpointError):
        stub.llm(max_retries=1).score(PROMPT, [" sat"])
    assert len(stub.requests) == 2


# --- 10. async -------------------------------------------------------------------------


def test_async_chat_and_stream(stub):
    llm = stub.llm()

    async def main():
        out = await llm.achat(MESSAGES, max_tokens=4, seed=3)
        chunks = [c async for c in llm.astream_chat(MESSAGES)]
        return out, chunks

    out, chunks = asyncio.run(main())
    assert out.text == "Hello there" and out.finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (12, 3)
    assert [c.text for c in chunks] == ["Hel", "lo ", "there", ""]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (12, 3)

    assert [r["path"] for r in stub.requests] == ["/v1/chat/completions"] * 2
    assert stub.requests[0]["body"]["seed"] == 3 and stub.requests[0]["body"]["max_tokens"] == 4
    assert stub.requests[1]["body"]["stream"] is True
    assert stub.requests[1]["body"]["stream_options"] == {"include_usage": True}
    assert stub.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_async_errors_are_mapped(stub):
    stub.script(status(400, "nope", err_type="invalid_request_error"), status(400, "nope again", err_type="invalid_request_error"))
    llm = stub.llm(max_retries=2)

    async def main():
        with pytest.raises(RequestRejected, match="nope"):
            await llm.achat(MESSAGES)
        with pytest.raises(RequestRejected, match="nope again"):
            async for _ in llm.astream_chat(MESSAGES):
                pass

    asyncio.run(main())
    assert len(stub.requests) == 2


def test_async_across_event_loops(stub):
    """Two separate asyncio.run calls on one LLM object (a CLI command, a scheduler job, a test)."""
    llm = stub.llm()
    texts = [asyncio.run(llm.achat(MESSAGES)).text for _ in range(3)]
    assert texts == ["Hello there"] * 3


# --- 11. the API key never reaches the call log ----------------------------------------

SECRET = "sk-test-SECRET-123456"


def test_key_never_in_call_log(stub, tmp_path):
    store = RunStore(tmp_path / "c.db")
    llm = stub.llm(api_key=SECRET, max_retries=1, sink=store.record_call)

    stub.script(
        ok(),
        status(400, "bad request", err_type="invalid_request_error", echo_auth=True),
        status(500, "internal", echo_auth=True),
        status(500, "internal", echo_auth=True),
    )
    out = llm.chat(MESSAGES, prompt_ref="greet@1")
    assert out.text == "Hello there"
    with pytest.raises(RequestRejected) as rejected:
        llm.chat(MESSAGES)
    with pytest.raises(EndpointError) as failed:
        llm.complete("Hello")
    assert len(stub.requests) == 4
    # the stub really did echo the key: the exceptions are where it would leak first
    assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in stub.requests)
    assert "Bearer ***" in str(rejected.value) and SECRET not in str(rejected.value)
    assert "Bearer ***" in str(failed.value) and SECRET not in str(failed.value)

    rows = store.calls()
    store.close()
    assert len(rows) == 3
    for row in rows:
        assert SECRET not in json.dumps(row, default=str)
        assert row["backend"] == "openai"
        assert row["model"] == MODEL
    by_kind = {(r["kind"], r["error"] is None): r for r in rows}
    ok_row = by_kind[("chat", True)]
    assert ok_row["prompt_tokens"] == 12 and ok_row["completion_tokens"] == 3
    assert ok_row["prompt_ref"] == "greet@1"
    rejected_row = by_kind[("chat", False)]
    assert rejected_row["error"].startswith("RequestRejected")
    assert "bad request" in rejected_row["error"]
    failed_row = by_kind[("complete", False)]
    assert failed_row["error"].startswith("EndpointError")
    assert "internal" in failed_row["error"]
    assert rejected_row["prompt_tokens"] == failed_row["prompt_tokens"] == 0

    # every row of every table, and the raw bytes of the db and its WAL/SHM files
    conn = sqlite3.connect(tmp_path / "c.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in conn.execute(f"SELECT * FROM {table}"):
            assert SECRET not in repr(row)
    conn.close()
    files = list(tmp_path.glob("c.db*"))
    assert files
    for f in files:
        assert SECRET.encode() not in f.read_bytes()
