"""The systems under test, each behind one interface: a question in, an answer with its
citations out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from conclave.agents.llm import LLM, UnsupportedFeature
from conclave.prompts.loader import render
from conclave.retrieval.hits import Retriever
@dataclass
class Answer:
    text: str
    passages: list[str] = field(default_factory=list)  # the ids of what a RAG system retrieved
    finish_reason: str = "stop"
    note: str | None = None  # e.g. passages dropped to fit the context


class System(Protocol):
    name: str

    def answer(self, question: str) -> Answer: ...


class Rag:
    """Our legal RAG: the index's best passages (each headed by its case's citation) and an
    instruction to answer from them and cite."""

    def __init__(self, name: str, llm: LLM, retriever: Retriever, *, k: int = 4, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0):
        self.name, self.llm, self.retriever, self.k = name, llm, retriever, k
        self.params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}

    def answer(self, question: str) -> Answer:
        hits = self.retriever.search(question, self.k)
        prompt, dropped = self._fit([h.text for h in hits], question)
        out = self.llm.chat(prompt, **self.params)
        kept = hits[: len(hits) - dropped]
        return Answer(out.text.strip(), [h.id for h in kept], out.finish_reason,
                      f"{dropped} passage{'s' * (dropped > 1)} dropped to fit the context" if dropped else None)

    def _fit(self, passages: list[str], question: str):
        """The prompt with as many passages as the context holds beside the answer's budget
        (the lowest-ranked go first)."""
        prompt = render("legal_rag_answer", passages=passages, question=question)
        try:
            budget = self.llm.context_length - self.params["max_tokens"]
        except UnsupportedFeature:
            return prompt, 0  # an endpoint without a known context: it will say if the prompt is too long
        dropped = 0
        while passages and self.llm.count_tokens(prompt) > budget:
            passages, dropped = passages[:-1], dropped + 1
            prompt = render("legal_rag_answer", passages=passages, question=question)
        return prompt, dropped


class ClosedBook:
    """The same model and instructions, no retrieval: what the model itself knows."""

    def __init__(self, name: str, llm: LLM, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0):
        self.name, self.llm = name, llm
        self.params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}

    def answer(self, question: str) -> Answer:
        out = self.llm.chat(render("legal_closed_book", question=question), **self.params)
        return Answer(out.text.strip(), finish_reason=out.finish_reason)


class Endpoint:
    """Any OpenAI-compatible chat endpoint, a RAG product or a plain model, asked the bare
    question as a user would ask it."""

    def __init__(self, name: str, llm: LLM, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0):
        self.name, self.llm = name, llm
        self.params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}

    def answer(self, question: str) -> Answer:
        out = self.llm.chat([{"role": "user", "content": question}], **self.params)
        return Answer(out.text.strip(), finish_reason=out.finish_reason)
