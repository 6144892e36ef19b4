"""In-process backends: any ``TokenEngine`` (llama.cpp, or our native engines) behind the seam."""

from __future__ import annotations

import threading
from typing import Iterator

from conclave.agents.llm import LLM, Chunk, ContinuationScore, Request
from conclave.local_models.engine import TokenEngine
from conclave.local_models.generate import generate, score


class LocalLLM(LLM):
    def __init__(self, engine: TokenEngine, *, backend: str, model: str, sink=None):
        super().__init__(model, sink=sink)
        self.backend = backend
        self.engine = engine
        self.vocab = engine
        self._lock = threading.Lock()  # one sequence in the engine at a time

    def tokens(self, req: Request) -> list[int]:
        if req.messages is not None:
            # the chat template writes BOS itself where the model wants one
            return self.engine.tokenize(self.engine.chat_prompt(req.messages), add_bos=False)
        return self.engine.tokenize(req.prompt, add_bos=self.engine.add_bos)

    @property
    def context_length(self) -> int:
        return self.engine.n_ctx

    def _stream(self, req: Request) -> Iterator[Chunk]:
        with self._lock:
            yield from generate(self.engine, self.tokens(req), req.params)

    def _score(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
        with self._lock:
            return score(self.engine, prompt, continuations)
