"""The one model seam. Every workflow talks to every model through ``LLM``.

A backend implements three hooks (``_stream``, ``_score`` and, if it has a cheaper
non-streaming call, ``_complete``). The base class adds what every backend must
have in the same way: parameter and message validation, prompt references, the
call log, and async variants. Backends: ``agents.backends``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator, Protocol

from conclave.local_models.errors import ConclaveError
from conclave.local_models.generate import Chunk, ContinuationScore, GenParams, TokenLogprob
from conclave.prompts.loader import Rendered

__all__ = [
    "LLM", "Completion", "Chunk", "ContinuationScore", "GenParams", "TokenLogprob", "Usage", "CallRecord",
    "CallSink", "LLMError", "EndpointUnreachable", "EndpointTimeout", "EndpointError", "RequestRejected",
    "UnsupportedFeature", "Vocab",
]

ROLES = {"system", "user", "assistant", "tool"}


class LLMError(ConclaveError):
    pass


class EndpointUnreachable(LLMError):
    pass


class EndpointTimeout(LLMError):
    pass


class EndpointError(LLMError):
    """The endpoint kept failing (5xx) after every retry."""


class RequestRejected(LLMError):
    """The endpoint refused the request (4xx): retrying the same request will not help."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class UnsupportedFeature(LLMError):
    pass


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    finish_reason: str
    usage: Usage
    model: str
    backend: str
    logprobs: list[TokenLogprob] | None = None
    latency_s: float = 0.0
    prompt_ref: str | None = None


@dataclass(frozen=True)
class CallRecord:
    backend: str
    model: str
    kind: str  # chat | complete | score
    prompt_ref: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None
    started_at: float


class CallSink(Protocol):
    def __call__(self, record: CallRecord) -> None: ...


class Vocab(Protocol):
    """A model's tokenizer and chat template: what counting tokens needs (every TokenEngine is one)."""

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]: ...

    def chat_prompt(self, messages: list[dict]) -> str: ...


@dataclass
class Request:
    kind: str  # "chat" | "complete"
    params: GenParams
    messages: list[dict] | None = None
    prompt: str | None = None
    prompt_ref: str | None = None


@dataclass
class _Call:
    """What a call in flight has used so far; turned into a CallRecord when it ends."""

    kind: str
    prompt_ref: str | None
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    usage: Usage = Usage()
    error: str | None = None


def collect(chunks: Iterator[Chunk], *, model: str, backend: str, logprobs: bool) -> Completion:
    text, lps, last = [], [], None
    for last in chunks:
        text.append(last.text)
        lps.extend(last.logprobs)
    assert last is not None and last.finish_reason, "a backend stream must end with a finish_reason"
    return Completion(
        "".join(text), last.finish_reason, Usage(last.prompt_tokens, last.completion_tokens), model, backend,
        lps if logprobs else None,
    )


def check_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), (str, list)):
            raise ValueError(f"messages[{i}] must be a dict with role in {sorted(ROLES)} and a string content, got {m!r}")
    return messages


class LLM(ABC):
    backend: str = "?"
    vocab: Vocab | None = None  # the model's tokenizer, where the backend has it

    def __init__(self, model: str, *, sink: CallSink | None = None):
        self.model = model
        self.sink = sink

    # --- token budgets ------------------------------------------------------------------

    def count_tokens(self, what) -> int:
        """Tokens ``what`` takes in this model: a string as plain text (no BOS), chat messages
        (or a chat ``Rendered``) as the whole prompt the model reads, chat template included."""
        if self.vocab is None:
            raise UnsupportedFeature(
                f"the {self.backend} backend ({self.model}) has no tokenizer to count tokens with; "
                "give the openai backend one (a catalog name or .gguf: CONCLAVE_OPENAI_TOKENIZER)"
            )
        if isinstance(what, Rendered):
            what = what.messages if what.messages is not None else what.text
        if isinstance(what, str):
            return len(self.vocab.tokenize(what, add_bos=False))
        # the chat template writes BOS itself where the model wants one
        return len(self.vocab.tokenize(self.vocab.chat_prompt(check_messages(what)), add_bos=False))

    @property
    def context_length(self) -> int:
        """Tokens the model reads and writes in one call, prompt and output together."""
        raise UnsupportedFeature(f"the {self.backend} backend ({self.model}) does not know its context length")

    # --- what a backend implements ------------------------------------------------------

    @abstractmethod
    def _stream(self, req: Request) -> Iterator[Chunk]:
        """Chunks of text; the last one carries finish_reason and token counts."""

    @abstractmethod
    def _score(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]: ...

    def _complete(self, req: Request) -> Completion:
        return collect(self._stream(req), model=self.model, backend=self.backend, logprobs=req.params.logprobs)

    async def _acomplete(self, req: Request) -> Completion:
        return await asyncio.to_thread(self._complete, req)

    async def _ascore(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
        return await asyncio.to_thread(self._score, prompt, continuations)

    def _score_many(self, items: list[tuple[str, list[str]]]) -> list[list[ContinuationScore]]:
        """Backends that can read several prompts at once override this."""
        return [self._score(prompt, conts) for prompt, conts in items]

    async def _ascore_many(self, items: list[tuple[str, list[str]]]) -> list[list[ContinuationScore]]:
        return await asyncio.to_thread(self._score_many, items)

    async def _astream(self, req: Request) -> AsyncIterator[Chunk]:
        """Runs the sync stream in a worker thread, handing chunks to the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        abandoned = threading.Event()
        end = object()

        def produce():
            try:
                for chunk in self._stream(req):
                    if abandoned.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, end)
            except BaseException as e:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, e)

        loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            abandoned.set()

    # --- public API ---------------------------------------------------------------------

    def chat(self, messages, *, prompt_ref: str | None = None, **params) -> Completion:
        return self._run(self._request("chat", messages, prompt_ref, params))

    def complete(self, prompt, *, prompt_ref: str | None = None, **params) -> Completion:
        return self._run(self._request("complete", prompt, prompt_ref, params))

    def stream_chat(self, messages, *, prompt_ref: str | None = None, **params) -> Iterator[Chunk]:
        return self._run_stream(self._request("chat", messages, prompt_ref, params))

    def stream_complete(self, prompt, *, prompt_ref: str | None = None, **params) -> Iterator[Chunk]:
        return self._run_stream(self._request("complete", prompt, prompt_ref, params))

    def score(self, prompt, continuations: list[str], *, prompt_ref: str | None = None) -> list[ContinuationScore]:
        """log P(continuation | prompt) for each continuation, without generating."""
        prompt, prompt_ref = self._score_args(prompt, continuations, prompt_ref)
        with self._recorded("score", prompt_ref) as call:
            scores = self._score(prompt, list(continuations))
            call.usage = _score_usage(scores)
            return scores

    def score_many(self, items, *, prompt_ref: str | None = None) -> list[list[ContinuationScore]]:
        """``score`` for many (prompt, continuations) items in one call, which a backend may
        batch (several KV slots in process, one request to an endpoint)."""
        items, prompt_ref = self._many_args(items, prompt_ref)
        with self._recorded("score", prompt_ref) as call:
            results = self._score_many(items)
            call.usage = _score_usage([s for r in results for s in r])
            return results

    async def achat(self, messages, *, prompt_ref: str | None = None, **params) -> Completion:
        return await self._arun(self._request("chat", messages, prompt_ref, params))

    async def acomplete(self, prompt, *, prompt_ref: str | None = None, **params) -> Completion:
        return await self._arun(self._request("complete", prompt, prompt_ref, params))

    async def astream_chat(self, messages, *, prompt_ref: str | None = None, **params) -> AsyncIterator[Chunk]:
        async for chunk in self._arun_stream(self._request("chat", messages, prompt_ref, params)):
            yield chunk

    async def astream_complete(self, prompt, *, prompt_ref: str | None = None, **params) -> AsyncIterator[Chunk]:
        async for chunk in self._arun_stream(self._request("complete", prompt, prompt_ref, params)):
            yield chunk

    async def ascore(self, prompt, continuations: list[str], *, prompt_ref: str | None = None) -> list[ContinuationScore]:
        prompt, prompt_ref = self._score_args(prompt, continuations, prompt_ref)
        with self._recorded("score", prompt_ref) as call:
            scores = await self._ascore(prompt, list(continuations))
            call.usage = _score_usage(scores)
            return scores

    async def ascore_many(self, items, *, prompt_ref: str | None = None) -> list[list[ContinuationScore]]:
        items, prompt_ref = self._many_args(items, prompt_ref)
        with self._recorded("score", prompt_ref) as call:
            results = await self._ascore_many(items)
            call.usage = _score_usage([s for r in results for s in r])
            return results

    # --- shared machinery ---------------------------------------------------------------

    def _request(self, kind: str, what, prompt_ref: str | None, params: dict) -> Request:
        if isinstance(what, Rendered):
            prompt_ref = prompt_ref or what.ref
            what = what.messages if kind == "chat" else what.text
            if what is None:
                raise TypeError(f"prompt template {prompt_ref} does not render to {'messages' if kind == 'chat' else 'text'}")
        gen = GenParams(**params)
        if kind == "chat":
            return Request("chat", gen, messages=check_messages(what), prompt_ref=prompt_ref)
        if not isinstance(what, str):
            raise ValueError(f"prompt must be a string, got {type(what).__name__}")
        return Request("complete", gen, prompt=what, prompt_ref=prompt_ref)

    @staticmethod
    def _score_args(prompt, continuations, prompt_ref):
        if isinstance(prompt, Rendered):
            prompt_ref = prompt_ref or prompt.ref
            prompt = prompt.text
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("score needs a non-empty prompt string")
        if not continuations or not all(isinstance(c, str) and c for c in continuations):
            raise ValueError("score needs a non-empty list of non-empty continuation strings")
        return prompt, prompt_ref

    def _many_args(self, items, prompt_ref):
        out = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError("score_many needs (prompt, continuations) pairs")
            prompt, ref = self._score_args(item[0], item[1], prompt_ref)
            prompt_ref = prompt_ref or ref
            out.append((prompt, list(item[1])))
        if not out:
            raise ValueError("score_many needs at least one (prompt, continuations) pair")
        return out, prompt_ref

    @contextmanager
    def _recorded(self, kind: str, prompt_ref: str | None) -> Iterator[_Call]:
        """Logs the call when it ends, however it ends."""
        call = _Call(kind, prompt_ref)
        try:
            yield call
        except (GeneratorExit, asyncio.CancelledError):
            call.error = "cancelled by the caller"
            raise
        except BaseException as e:
            call.error = _describe(e)
            raise
        finally:
            self._emit(call)

    def _run(self, req: Request) -> Completion:
        with self._recorded(req.kind, req.prompt_ref) as call:
            return self._finish(call, self._complete(req))

    async def _arun(self, req: Request) -> Completion:
        with self._recorded(req.kind, req.prompt_ref) as call:
            return self._finish(call, await self._acomplete(req))

    def _run_stream(self, req: Request) -> Iterator[Chunk]:
        with self._recorded(req.kind, req.prompt_ref) as call:
            stream = self._stream(req)
            try:
                for chunk in stream:
                    if chunk.finish_reason:
                        call.usage = Usage(chunk.prompt_tokens, chunk.completion_tokens)
                    yield chunk
            finally:
                stream.close()  # frees the backend (its lock, its connection) at once

    async def _arun_stream(self, req: Request) -> AsyncIterator[Chunk]:
        with self._recorded(req.kind, req.prompt_ref) as call:
            stream = self._astream(req)
            try:
                async for chunk in stream:
                    if chunk.finish_reason:
                        call.usage = Usage(chunk.prompt_tokens, chunk.completion_tokens)
                    yield chunk
            finally:
                await stream.aclose()

    @staticmethod
    def _finish(call: _Call, out: Completion) -> Completion:
        call.usage = out.usage
        out.latency_s = time.perf_counter() - call.t0
        out.prompt_ref = call.prompt_ref
        return out

    def _emit(self, call: _Call) -> None:
        if self.sink is None:
            return
        self.sink(
            CallRecord(
                backend=self.backend,
                model=self.model,
                kind=call.kind,
                prompt_ref=call.prompt_ref,
                prompt_tokens=call.usage.prompt_tokens,
                completion_tokens=call.usage.completion_tokens,
                latency_s=time.perf_counter() - call.t0,
                error=call.error,
                started_at=call.started_at,
            )
        )

    def close(self) -> None:
        """Release the model or connections; the object is unusable afterwards."""


def _score_usage(scores: list[ContinuationScore]) -> Usage:
    return Usage(prompt_tokens=sum(s.n_context + s.n_tokens for s in scores))  # tokens read; none generated


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]
