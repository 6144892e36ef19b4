"""AutoGen AgentChat on the model seam: ``SeamClient`` is a ``ChatCompletionClient`` over an
``LLM``, so AgentChat agents run on any backend (llama.cpp in process, an endpoint, our engines)
and every call they make lands in our call log with its prompt reference.

One ``LLM`` may serve several clients (a coder and a critic on the same model); each client
keeps its own generation settings, prompt reference and usage counts.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncGenerator, Mapping, Sequence

from autogen_core import CancellationToken
from autogen_core.models import (AssistantMessage, ChatCompletionClient, CreateResult, FunctionExecutionResultMessage,
                                 LLMMessage, ModelFamily, ModelInfo, RequestUsage, SystemMessage, UserMessage)

from conclave.agents.llm import LLM, Completion, LLMError, UnsupportedFeature, Usage

_FINISH = {"stop": "stop", "length": "length"}


class SeamClient(ChatCompletionClient):
    """``vision``: images in user messages go to the model as OpenAI image parts; a text-only
    client is never handed one (AgentChat strips images for models without vision)."""

    def __init__(self, llm: LLM, *, vision: bool = False, prompt_ref: str | None = None, max_tokens: int = 512,
                 temperature: float = 0.2, seed: int | None = 0, stop: Sequence[str] = ()):
        if vision and llm.backend not in ("openai", "scripted"):
            raise UnsupportedFeature(f"{llm.model} on the {llm.backend} backend reads text only; "
                                     "a vision model needs an OpenAI-compatible endpoint")
        self.llm = llm
        self.vision = vision
        self.prompt_ref = prompt_ref
        self.params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "stop": list(stop)}
        self._last = RequestUsage(0, 0)
        self._total = RequestUsage(0, 0)
        self.failure: LLMError | None = None  # AgentChat re-raises an agent's error as a RuntimeError of its text

    # --- what AgentChat calls ---------------------------------------------------------------

    async def create(self, messages: Sequence[LLMMessage], *, tools=(), tool_choice="auto", json_output=None,
                     extra_create_args: Mapping[str, Any] = {}, cancellation_token: CancellationToken | None = None
                     ) -> CreateResult:
        call = asyncio.ensure_future(self.llm.achat(self._messages(messages, tools, json_output),
                                                    prompt_ref=self.prompt_ref, **self._params(extra_create_args)))
        if cancellation_token is not None:
            cancellation_token.link_future(call)
        try:
            return self._result(await call)
        except LLMError as e:
            self.failure = e
            raise

    async def create_stream(self, messages: Sequence[LLMMessage], *, tools=(), tool_choice="auto", json_output=None,
                            extra_create_args: Mapping[str, Any] = {},
                            cancellation_token: CancellationToken | None = None
                            ) -> AsyncGenerator[str | CreateResult, None]:
        text, finish, usage = [], "stop", (0, 0)
        try:
            async for chunk in self.llm.astream_chat(self._messages(messages, tools, json_output),
                                                     prompt_ref=self.prompt_ref, **self._params(extra_create_args)):
                if cancellation_token is not None and cancellation_token.is_cancelled():
                    raise asyncio.CancelledError()
                if chunk.text:
                    text.append(chunk.text)
                    yield chunk.text
                if chunk.finish_reason:
                    finish, usage = chunk.finish_reason, (chunk.prompt_tokens, chunk.completion_tokens)
        except LLMError as e:
            self.failure = e
            raise
        yield self._result(Completion("".join(text), finish, Usage(*usage), self.llm.model, self.llm.backend))

    async def close(self) -> None:
        """The LLM belongs to whoever opened it; closing a client leaves it open."""

    def actual_usage(self) -> RequestUsage:
        return self._last

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools=()) -> int:
        return self.llm.count_tokens(self._messages(messages, tools, None))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools=()) -> int:
        return self.llm.context_length - self.count_tokens(messages, tools=tools)

    @property
    def model_info(self) -> ModelInfo:
        # our models are not OpenAI's: AgentChat must not guess their features from the name
        return ModelInfo(vision=self.vision, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN,
                         structured_output=False, multiple_system_messages=True)

    @property
    def capabilities(self):  # deprecated in AgentChat, still abstract
        return {"vision": self.vision, "function_calling": False, "json_output": False}

    # --- conversion -------------------------------------------------------------------------

    def _params(self, extra: Mapping[str, Any]) -> dict:
        unknown = set(extra) - set(self.params)
        if unknown:
            raise ValueError(f"SeamClient does not take {', '.join(sorted(unknown))}; it takes {', '.join(self.params)}")
        return self.params | dict(extra)

    def _messages(self, messages: Sequence[LLMMessage], tools, json_output) -> list[dict]:
        if tools:
            raise UnsupportedFeature("SeamClient does not do function calling: give the agent no tools")
        if json_output not in (None, False):
            raise UnsupportedFeature("SeamClient has no JSON mode: ask for JSON in the prompt and parse the reply")
        return [self._message(m) for m in messages]

    def _message(self, m: LLMMessage) -> dict:
        if isinstance(m, SystemMessage):
            return {"role": "system", "content": m.content}
        if isinstance(m, AssistantMessage):
            if not isinstance(m.content, str):
                raise UnsupportedFeature("SeamClient does not do function calling")
            return {"role": "assistant", "content": m.content}
        if isinstance(m, UserMessage):
            if isinstance(m.content, str):
                return {"role": "user", "content": m.content}
            if not self.vision:
                return {"role": "user", "content": "\n".join(p if isinstance(p, str) else "[image]" for p in m.content)}
            return {"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str) else
                                                {"type": "image_url", "image_url": {"url": p.data_uri}}
                                                for p in m.content]}
        if isinstance(m, FunctionExecutionResultMessage):
            raise UnsupportedFeature("SeamClient does not do function calling")
        raise TypeError(f"not an AgentChat LLM message: {type(m).__name__}")

    def _result(self, out: Completion) -> CreateResult:
        usage = RequestUsage(out.usage.prompt_tokens, out.usage.completion_tokens)
        self._last = usage
        self._total = RequestUsage(self._total.prompt_tokens + usage.prompt_tokens,
                                   self._total.completion_tokens + usage.completion_tokens)
        return CreateResult(finish_reason=_FINISH.get(out.finish_reason, "unknown"), content=out.text, usage=usage,
                            cached=False)

