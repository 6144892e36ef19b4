"""Model answers of a map-reduce run, kept on disk (``agents.memo``) so that a re-run, or a
resume after a crash, asks the model only what it has not answered yet.

The key hashes the model (backend and name), the prompt ref, the exact messages (which
hold the part's text, the question or schema) and the sampling parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from conclave.agents.llm import Completion
from conclave.agents.memo import Memo, digest


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, out: Completion) -> Answer:
        return cls(out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens)


def key(*, backend: str, model: str, prompt_ref: str, messages: list[dict], params: dict) -> str:
    return digest(backend, model, prompt_ref, messages, params)


class Cache(Memo):
    def get(self, k: str) -> Answer | None:
        value = super().get(k)
        return Answer(**value) if value is not None else None

    def put(self, k: str, answer: Answer) -> None:
        super().put(k, dataclasses.asdict(answer))
