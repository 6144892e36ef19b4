"""An OpenAI-compatible HTTP server for the in-process engines (FastAPI + uvicorn).

Requests become scheduler jobs (``batching.py``): every request shares the engine
through continuous batching. Errors use OpenAI's JSON error shape with a proper 4xx;
the server answers 503 when its queue is full, and a client that goes away cancels
its generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from conclave.local_models.batching import Job, Overloaded, PromptLogprobs, Scheduler
from conclave.local_models.errors import ContextOverflow
from conclave.local_models.generate import MAX_TOP_LOGPROBS, Chunk, GenParams, TokenLogprob

log = logging.getLogger("conclave.server")
MAX_BODY = 8 * 1024 * 1024
MAX_HEADERS = 32 * 1024  # all header lines together; nginx's default limit, and twice Node's
MAX_CHOICES = 8


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- request bodies ---------------------------------------------------------------------

Stop = str | list[str] | None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, metadata, …)

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop sequences")
        return stops


class CompletionRequest(_Common):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not 1 <= len(v) <= MAX_CHOICES:
            raise ValueError(f"give 1 to {MAX_CHOICES} prompts")
        return v


class ContentPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict] | None = None


# --- the app ------------------------------------------------------------------------------


class Served:
    """What the server serves: one engine under one name, behind one scheduler."""

    def __init__(self, name: str, engine, *, max_queue: int = 64, api_key: str | None = None):
        self.name = name
        self.engine = engine
        self.scheduler = Scheduler(engine, max_queue=max_queue)
        self.api_key = api_key
        self.created = int(time.time())


def create_app(served: Served) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_):
        yield
        served.scheduler.close()  # whatever still runs ends with a 503, not a hang

    app = FastAPI(title="Conclave OpenAI-compatible server", version="1", lifespan=lifespan)
    app.state.served = served

    @app.exception_handler(ApiError)
    async def _api_error(_, e: ApiError):
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("the request body is not valid JSON", "invalid_request_error"), status_code=400)
        msg = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(error_body(msg, "invalid_request_error", ".".join(loc) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_, e: Exception):  # a bug of ours: answer, log, keep serving
        log.exception("request failed")
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", "server_error"), status_code=500)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        size = sum(len(k) + len(v) for k, v in request.headers.raw)
        if size > MAX_HEADERS:  # httptools, uvicorn's parser, has no limit of its own
            return JSONResponse(error_body(f"request headers over {MAX_HEADERS} bytes", "invalid_request_error"), status_code=431)
        if request.url.path.startswith("/v1/"):
            key = served.api_key
            if key is not None:
                given = request.headers.get("authorization", "")
                if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
                    return JSONResponse(error_body("invalid API key", "invalid_request_error", code="invalid_api_key"), status_code=401)
            size = request.headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
                return JSONResponse(error_body(f"request body over {MAX_BODY} bytes", "invalid_request_error"), status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, **served.scheduler.stats(), **served.scheduler.totals()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(served)]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        if name != served.name:
            raise ApiError(404, f"model {name!r} not found", code="model_not_found")
        return _model_card(served)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(served, body)
        if body.stream and body.echo:
            raise ApiError(400, "echo is not supported with stream", param="echo")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        engine = served.engine
        token_lists = [engine.tokenize(p, add_bos=engine.add_bos) for p in prompts]
        n_top = body.logprobs or 0
        wants_lp = body.logprobs is not None
        generate = (body.max_tokens or 0) > 0
        _check_max_tokens(engine, body.max_tokens or 0)
        params = _params(body, body.max_tokens or 1, wants_lp, n_top)
        jobs = [(i * body.n + k, toks, text) for i, (toks, text) in enumerate(zip(token_lists, prompts)) for k in range(body.n)]
        run = _Run(served, [(toks, _seeded(params, k)) for k, (_, toks, _) in enumerate(jobs)], echo=body.echo and wants_lp,
                   generate=generate, stream=body.stream)
        cid = f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            return _sse(run, request, lambda idx, chunk: _completion_chunk(cid, served, idx, chunk, body), body)
        results = await run.wait(request)
        choices = []
        for (idx, toks, text), res in zip(jobs, results):
            out = (text if body.echo else "") + res.text
            lp = None
            if wants_lp:
                prefix = (res.prompt_lp or []) if body.echo else []
                lp = _completion_logprobs(engine, toks if body.echo else [], prefix, res.logprobs, text if body.echo else "")
            choices.append({"index": idx, "text": out, "logprobs": lp, "finish_reason": res.finish_reason})
        return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": served.name,
                "choices": choices, "usage": run.usage()}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        _check_model(served, body)
        if body.tools:
            raise ApiError(400, "tools are not supported by this server", param="tools")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m, i)} for i, m in enumerate(body.messages)]
        engine = served.engine
        try:
            prompt = engine.chat_prompt(messages)
        except Exception as e:  # a template that raises on these messages (e.g. bad role order)
            raise ApiError(400, f"the model's chat template rejected the messages: {e}", param="messages") from None
        toks = engine.tokenize(prompt, add_bos=False)
        max_tokens = body.max_completion_tokens or body.max_tokens or max(engine.n_ctx - len(toks), 1)
        _check_max_tokens(engine, max_tokens)
        params = _params(body, max_tokens, body.logprobs, body.top_logprobs or 0)
        run = _Run(served, [(toks, _seeded(params, k)) for k in range(body.n)], stream=body.stream)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return _sse(run, request, lambda idx, chunk: _chat_chunk(cid, served, idx, chunk, body), body)
        results = await run.wait(request)
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": res.text},
                "logprobs": {"content": [_chat_token(t) for t in res.logprobs]} if body.logprobs else None,
                "finish_reason": res.finish_reason,
            }
            for k, res in enumerate(results)
        ]
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": served.name,
                "choices": choices, "usage": run.usage()}

    return app


def _model_card(served: Served) -> dict:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "conclave",
            "context_length": served.engine.n_ctx}


def _check_model(served: Served, body) -> None:
    if body.model != served.name:
        raise ApiError(404, f"model {body.model!r} not found; this server serves {served.name!r}", param="model", code="model_not_found")
    if body.presence_penalty or body.frequency_penalty:
        raise ApiError(400, "presence_penalty and frequency_penalty are not supported (only 0)", param="presence_penalty")


def _check_max_tokens(engine, max_tokens: int) -> None:
    # a prompt that leaves less room than asked just ends with finish_reason "length"
    if max_tokens > engine.n_ctx:
        raise ApiError(400, f"max_tokens is {max_tokens} but the context holds {engine.n_ctx} tokens", param="max_tokens")


def _text(m: Message, i: int) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    if any(p.type != "text" or p.text is None for p in m.content):
        raise ApiError(400, f"messages[{i}]: only text content parts are supported", param=f"messages.{i}.content")
    return "".join(p.text for p in m.content)


def _params(body, max_tokens: int, logprobs: bool, n_top: int) -> GenParams:
    try:
        return GenParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, stop=tuple(body.stop or ()),
                         seed=body.seed, logprobs=logprobs, top_logprobs=n_top)
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def _seeded(params: GenParams, k: int) -> GenParams:
    if k == 0 or params.seed is None:
        return params
    return GenParams(**{**params.__dict__, "seed": params.seed + k})  # n choices differ, reproducibly


class _Result:
    def __init__(self):
        self.parts: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.prompt_lp: list[TokenLogprob | None] | None = None
        self.finish_reason: str | None = None
        self.prompt_tokens = self.completion_tokens = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Run:
    """The scheduler jobs of one HTTP request, and their events as an asyncio queue."""

    def __init__(self, served: Served, jobs: list[tuple[list[int], GenParams]], *, echo: bool = False,
                 generate: bool = True, stream: bool = False):
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.results = [_Result() for _ in jobs]
        self.jobs = []

        def deliver(idx, events):
            for event in events:
                self.events.put_nowait((idx, event))

        def sink(idx):
            # Without streaming, hand a job's events over once, when it ends: waking the event
            # loop for every token costs the decode threads a core on a small machine.
            held = []

            def put(event):
                held.append(event)
                if not stream and not (isinstance(event, Exception) or getattr(event, "finish_reason", None)):
                    return
                events = held[:]
                held.clear()
                try:
                    loop.call_soon_threadsafe(deliver, idx, events)
                except RuntimeError:  # the event loop is gone: nobody is listening
                    self.cancel()
            return put

        try:
            for idx, (toks, params) in enumerate(jobs):
                job = Job(toks, params, sink(idx), echo=echo, generate=generate)
                served.scheduler.submit(job)
                self.jobs.append(job)
        except ContextOverflow as e:
            self.cancel()
            raise ApiError(400, str(e), param="messages", code="context_length_exceeded") from None
        except ValueError as e:
            self.cancel()
            raise ApiError(400, str(e), param="prompt") from None
        except Overloaded as e:
            self.cancel()
            raise ApiError(503, f"server overloaded: {e}", type="server_error", code="overloaded") from None
        self.open = len(jobs)

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    async def next(self) -> tuple[int, object]:
        idx, event = await self.events.get()
        if isinstance(event, Exception):
            self.cancel()
            if isinstance(event, Overloaded):
                raise ApiError(503, str(event), type="server_error", code="overloaded")
            raise event
        res = self.results[idx]
        if isinstance(event, PromptLogprobs):
            res.prompt_lp = event.tokens
        elif isinstance(event, Chunk):
            res.parts.append(event.text)
            res.logprobs.extend(event.logprobs)
            if event.finish_reason:
                res.finish_reason = event.finish_reason
                res.prompt_tokens, res.completion_tokens = event.prompt_tokens, event.completion_tokens
                self.open -= 1
        return idx, event

    async def wait(self, request: Request) -> list[_Result]:
        """Every job's result; cancels them all if the client disconnects first."""
        try:
            while self.open:
                try:
                    await asyncio.wait_for(self.next(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        self.cancel()
                        raise ApiError(499, "client disconnected")
        except BaseException:
            self.cancel()
            raise
        return self.results

    def usage(self) -> dict:
        # choices of one prompt share it; count each prompt once, as OpenAI does
        seen, prompt = set(), 0
        for job, res in zip(self.jobs, self.results):
            key = id(job.tokens)
            if key not in seen:
                seen.add(key)
                prompt += res.prompt_tokens
        completion = sum(r.completion_tokens for r in self.results)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(run: _Run, request: Request, render, body) -> StreamingResponse:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events():
        try:
            while run.open:
                try:
                    idx, event = await asyncio.wait_for(run.next(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                except ApiError as e:
                    yield f"data: {json.dumps(error_body(e.message, e.type, e.param, e.code))}\n\n"
                    return
                if isinstance(event, Chunk):
                    yield f"data: {json.dumps(render(idx, event))}\n\n"
            if include_usage:
                last = render(0, Chunk("", []))
                last["choices"] = []
                last["usage"] = run.usage()
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            run.cancel()  # a client that went away stops its generation

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _token_bytes(t: TokenLogprob) -> list[int]:
    return list(t.token.encode("utf-8"))


def _chat_token(t: TokenLogprob) -> dict:
    return {
        "token": t.token,
        "logprob": t.logprob,
        "bytes": _token_bytes(t),
        "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))} for tok, lp in t.top],
    }


def _chat_chunk(cid: str, served: Served, idx: int, chunk: Chunk, body: ChatRequest) -> dict:
    delta = {"content": chunk.text} if chunk.text or chunk.finish_reason is None else {}
    return {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": served.name,
        "choices": [{
            "index": idx,
            "delta": {"role": "assistant", **delta},
            "logprobs": {"content": [_chat_token(t) for t in chunk.logprobs]} if body.logprobs else None,
            "finish_reason": chunk.finish_reason,
        }],
    }


def _completion_chunk(cid: str, served: Served, idx: int, chunk: Chunk, body: CompletionRequest) -> dict:
    lp = _completion_logprobs(served.engine, [], [], chunk.logprobs, "") if body.logprobs is not None else None
    return {
        "id": cid, "object": "text_completion", "created": int(time.time()), "model": served.name,
        "choices": [{"index": idx, "text": chunk.text, "logprobs": lp, "finish_reason": chunk.finish_reason}],
    }


def _completion_logprobs(engine, prompt_tokens: list[int], prompt_lp: list, generated: list[TokenLogprob], prompt_text: str) -> dict:
    """OpenAI's legacy completions shape; with echo, the prompt's tokens come first
    (the very first one without a log-prob)."""
    tokens, lps, tops, offsets = [], [], [], []
    offset = 0
    for tok_id, info in zip(prompt_tokens, prompt_lp):
        text = engine.token_bytes(tok_id).decode("utf-8", errors="replace")
        tokens.append(text)
        lps.append(None if info is None else info.logprob)
        tops.append(None if info is None else dict(info.top))
        offsets.append(offset)
        offset += len(text)
    offset = max(offset, len(prompt_text))
    for t in generated:
        tokens.append(t.token)
        lps.append(t.logprob)
        tops.append(dict(t.top))
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}
