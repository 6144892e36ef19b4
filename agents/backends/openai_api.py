"""Any OpenAI-compatible endpoint: OpenAI itself, vLLM, llama.cpp's server, our own server.

The ``openai`` client does the retrying (exponential backoff with jitter, honouring
Retry-After) on connection errors, timeouts, 408/409/429 and 5xx; here its errors
become ours, with messages that say what to check. The API key is never put in a
message, a log line or the call log.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import weakref
from typing import AsyncIterator, Iterator

import openai

from conclave.agents.llm import (
    LLM,
    Chunk,
    Completion,
    ContinuationScore,
    EndpointError,
    EndpointTimeout,
    EndpointUnreachable,
    Request,
    RequestRejected,
    TokenLogprob,
    UnsupportedFeature,
    Usage,
    Vocab,
)


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The timeout and transport errors of the SDK's HTTP library. Requests raise the SDK's
    own types, but a stream that breaks mid-way lets the library's error out unwrapped in
    openai 1.x (httpx), and 3.x is built on httpx2; whichever is installed is caught."""
    libs = [importlib.import_module(n) for n in ("httpx", "httpx2") if importlib.util.find_spec(n)]
    return tuple(lib.TimeoutException for lib in libs), tuple(lib.TransportError for lib in libs)


_TIMEOUTS, _TRANSPORT = _transport_errors()


class OpenAILLM(LLM):
    backend = "openai"

    def __init__(self, model: str, *, base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 sink=None, tokenizer: Vocab | None = None, context_length: int | None = None):
        super().__init__(model, sink=sink)
        self.vocab = tokenizer  # the endpoint cannot count tokens for us; a local copy of its tokenizer can
        self._context_length = context_length
        self.base_url = base_url.rstrip("/")
        self._key = api_key or "none"  # local servers accept any key; the client insists on one
        self.timeout = timeout
        self.max_retries = max_retries
        self._options = dict(
            base_url=self.base_url,
            api_key=self._key,
            # the SDK's own Timeout: openai 1.x re-exports httpx's, 3.x httpx2's, and each refuses the other's
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=max_retries,
        )
        self._client = openai.OpenAI(**self._options)
        # an async client's pooled connections belong to the event loop that opened them
        self._aclients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def _aclient(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = openai.AsyncOpenAI(**self._options)
        return client

    @property
    def context_length(self) -> int:
        """As given, else from the endpoint's model card (our server: ``context_length``, vLLM: ``max_model_len``)."""
        if self._context_length is None:
            try:
                cards = self._client.models.list().data
            except openai.APIStatusError as e:
                if e.status_code in (401, 403) or e.status_code >= 500:
                    raise self._error(e) from None
                cards = []  # an endpoint without /models: the context has to be given
            except Exception as e:
                raise self._error(e) from None
            card = next((c.model_dump() for c in cards if c.id == self.model), {})
            n = card.get("context_length") or card.get("max_model_len")
            if not isinstance(n, int) or n <= 0:
                raise UnsupportedFeature(
                    f"{self.base_url} does not say how long {self.model}'s context is; give it (context_length=...)"
                )
            self._context_length = n
        return self._context_length

    def close(self) -> None:
        self._client.close()
        self._aclients.clear()  # their connections close with their loops

    # --- errors ---------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != "none" else text

    def _error(self, e: Exception) -> Exception:
        tries = f"after {self.max_retries + 1} attempts"
        if isinstance(e, (openai.APITimeoutError, *_TIMEOUTS)):
            return EndpointTimeout(f"{self.base_url} did not answer within {self.timeout:g}s {tries}")
        if isinstance(e, (openai.APIConnectionError, *_TRANSPORT)):
            cause = e.__cause__ or e
            return EndpointUnreachable(
                f"cannot reach {self.base_url} ({self._clean(str(cause)) or type(cause).__name__}) {tries}. "
                "Check that the server is running and CONCLAVE_OPENAI_BASE_URL points at it."
            )
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            detail = self._clean(_detail(e))
            if status in (401, 403):
                return RequestRejected(f"{self.base_url} refused the API key ({status}: {detail}). Set CONCLAVE_OPENAI_API_KEY.", status)
            if status >= 500 or status == 429:
                return EndpointError(f"{self.base_url} kept failing ({status}: {detail}) {tries}")
            return RequestRejected(f"{self.base_url} rejected the request ({status}: {detail})", status)
        if isinstance(e, openai.OpenAIError):
            return EndpointError(self._clean(str(e)))
        return e

    # --- request building -------------------------------------------------------------

    def _args(self, req: Request, stream: bool) -> dict:
        p = req.params
        args = dict(model=self.model, max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p)
        if p.stop:
            args["stop"] = list(p.stop)
        if p.seed is not None:
            args["seed"] = p.seed
        if req.kind == "chat":
            args["messages"] = req.messages
            if p.logprobs:
                args["logprobs"] = True
                args["top_logprobs"] = p.top_logprobs
        else:
            args["prompt"] = req.prompt
            if p.logprobs:
                args["logprobs"] = max(p.top_logprobs, 1) if p.top_logprobs else 0
        if stream:
            args["stream"] = True
            args["stream_options"] = {"include_usage": True}
        return args

    def _endpoint(self, client, req: Request):
        return client.chat.completions if req.kind == "chat" else client.completions

    def _logprobs(self, req: Request, choice) -> list[TokenLogprob] | None:
        lp = getattr(choice, "logprobs", None)
        if lp is None:
            return None
        if req.kind == "chat":
            return [
                TokenLogprob(t.token, t.logprob, tuple((x.token, x.logprob) for x in (t.top_logprobs or ())))
                for t in (lp.content or [])
            ]
        tops = lp.top_logprobs or [None] * len(lp.tokens or [])
        return [
            TokenLogprob(tok, lpv, tuple(sorted((top or {}).items(), key=lambda kv: -kv[1])) if req.params.top_logprobs else ())
            for tok, lpv, top in zip(lp.tokens or [], lp.token_logprobs or [], tops)
        ]

    def _need_logprobs(self, req: Request, got) -> None:
        if req.params.logprobs and got is None:
            raise UnsupportedFeature(f"{self.base_url} ({self.model}) returned no log-probs; this workflow needs an endpoint that does")

    def _completion(self, req: Request, resp) -> Completion:
        if not resp.choices:
            raise EndpointError(f"{self.base_url} answered with no choices")
        choice = resp.choices[0]
        text = choice.message.content if req.kind == "chat" else choice.text
        lps = self._logprobs(req, choice) if req.params.logprobs else None
        self._need_logprobs(req, lps)
        usage = Usage(resp.usage.prompt_tokens, resp.usage.completion_tokens) if resp.usage else Usage()
        return Completion(text or "", choice.finish_reason or "stop", usage, self.model, self.backend, lps)

    def _chunk(self, req: Request, event) -> Chunk | None:
        if not event.choices:
            return None
        choice = event.choices[0]
        text = (choice.delta.content if req.kind == "chat" else choice.text) or ""
        lps = self._logprobs(req, choice) if req.params.logprobs else None
        return Chunk(text, lps or [], choice.finish_reason)

    # --- hooks ------------------------------------------------------------------------

    def _complete(self, req: Request) -> Completion:
        try:
            resp = self._endpoint(self._client, req).create(**self._args(req, stream=False))
        except Exception as e:
            raise self._error(e) from None
        return self._completion(req, resp)

    async def _acomplete(self, req: Request) -> Completion:
        try:
            resp = await self._endpoint(self._aclient, req).create(**self._args(req, stream=False))
        except Exception as e:
            raise self._error(e) from None
        return self._completion(req, resp)

    def _stream(self, req: Request) -> Iterator[Chunk]:
        try:
            events = self._endpoint(self._client, req).create(**self._args(req, stream=True))
        except Exception as e:
            raise self._error(e) from None
        with events:
            yield from self._chunks(req, events)

    async def _astream(self, req: Request) -> AsyncIterator[Chunk]:
        try:
            events = await self._endpoint(self._aclient, req).create(**self._args(req, stream=True))
        except Exception as e:
            raise self._error(e) from None
        final = _StreamEnd(self, req)
        async with events:
            try:
                async for event in events:
                    for out in final.feed(event):
                        yield out
            except Exception as e:
                raise self._error(e) from None
        yield final.finish()

    def _chunks(self, req: Request, events) -> Iterator[Chunk]:
        final = _StreamEnd(self, req)
        try:
            for event in events:
                yield from final.feed(event)
        except Exception as e:
            raise self._error(e) from None
        yield final.finish()

    def _score(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
        return self._score_many([(prompt, continuations)])[0]

    def _score_many(self, items: list[tuple[str, list[str]]]) -> list[list[ContinuationScore]]:
        """Legacy completions with ``echo`` and ``max_tokens=0`` return the prompt's own
        token log-probs (OpenAI's older models, vLLM, our server): one request for every
        prompt + continuation of every item, which a batching server reads together."""
        texts = [prompt + c for prompt, conts in items for c in conts]
        try:
            resp = self._client.completions.create(
                model=self.model, prompt=texts, echo=True, max_tokens=0, logprobs=1, temperature=0
            )
        except openai.APIStatusError as e:
            if 400 <= e.status_code < 500 and e.status_code not in (401, 403, 429):
                raise UnsupportedFeature(
                    f"{self.base_url} cannot score continuations (completions with echo+logprobs: {self._clean(_detail(e))})"
                ) from None
            raise self._error(e) from None
        except Exception as e:
            raise self._error(e) from None
        by_index = sorted(resp.choices, key=lambda c: c.index)
        if len(by_index) != len(texts):
            raise UnsupportedFeature(
                f"{self.base_url} answered {len(by_index)} choices for {len(texts)} prompts; it cannot score a batch"
            )
        choices = iter(by_index)
        return [[self._scored(prompt, cont, next(choices)) for cont in conts] for prompt, conts in items]

    def _scored(self, prompt: str, cont: str, choice) -> ContinuationScore:
        lp = choice.logprobs
        if lp is None or not lp.text_offset:
            raise UnsupportedFeature(f"{self.base_url} returned no prompt log-probs for echo; it cannot score")
        lps, greedy, n_context = [], True, 0
        for tok, off, val, top in zip(lp.tokens, lp.text_offset, lp.token_logprobs, lp.top_logprobs or [None] * len(lp.tokens)):
            if off + len(tok) <= len(prompt) or val is None:
                n_context += 1  # prompt tokens (the first has no log-prob at all)
                continue
            lps.append(val)
            greedy = greedy and bool(top) and max(top, key=top.get) == tok
        return ContinuationScore(cont, float(sum(lps)), len(lps), tuple(lps), greedy, n_context)


class _StreamEnd:
    """Tracks a stream's finish reason and usage, which arrive in separate events."""

    def __init__(self, llm: OpenAILLM, req: Request):
        self.llm, self.req = llm, req
        self.finish_reason = None
        self.usage = None
        self.saw_logprobs = False

    def feed(self, event) -> Iterator[Chunk]:
        if getattr(event, "usage", None):
            self.usage = event.usage
        chunk = self.llm._chunk(self.req, event)
        if chunk is None:
            return
        self.saw_logprobs = self.saw_logprobs or bool(chunk.logprobs)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
            chunk.finish_reason = None  # announced once, with the usage, by finish()
        if chunk.text or chunk.logprobs:
            yield chunk

    def finish(self) -> Chunk:
        if self.finish_reason is None:
            raise EndpointError(f"{self.llm.base_url} ended the stream without a finish reason (connection cut?)")
        if self.req.params.logprobs and not self.saw_logprobs:
            self.llm._need_logprobs(self.req, None)
        u = self.usage
        return Chunk("", [], self.finish_reason, u.prompt_tokens if u else 0, u.completion_tokens if u else 0)


def _detail(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    return (e.message or "")[:500]
