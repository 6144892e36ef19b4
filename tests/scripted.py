"""A scripted LLM for orchestration tests: the only fake, and it sits at the model seam."""

from __future__ import annotations

from typing import Callable, Iterator

from agents.llm import LLM, Chunk, ContinuationScore, Request, TokenLogprob


class ScriptedLLM(LLM):
    """Replies come from ``replies`` in order (or from a function of the request).
    Every request is kept in ``requests`` so tests can check what the workflow sent."""

    backend = "scripted"

    def __init__(self, replies: list[str] | Callable[[Request], str] = (), *, scores: dict[str, float] | None = None, sink=None):
        super().__init__("scripted", sink=sink)
        self.replies = replies if callable(replies) else list(replies)
        self.scores = scores or {}
        self.requests: list[Request] = []

    def _next(self, req: Request) -> str:
        self.requests.append(req)
        if callable(self.replies):
            return self.replies(req)
        if not self.replies:
            raise AssertionError("ScriptedLLM ran out of replies")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _stream(self, req: Request) -> Iterator[Chunk]:
        text = self._next(req)
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)][: req.params.max_tokens]
        for p in pieces:
            yield Chunk(p, [TokenLogprob(p, -0.1)] if req.params.logprobs else [])
        finish = "length" if len(words) > req.params.max_tokens else "stop"
        n_prompt = sum(len(m["content"].split()) for m in req.messages) if req.messages else len(req.prompt.split())
        yield Chunk("", [], finish, n_prompt, len(pieces))

    def _score(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
        self.requests.append(Request("score", None, prompt=prompt))
        return [ContinuationScore(c, self.scores.get(c, -10.0), 1, (self.scores.get(c, -10.0),), False, len(prompt.split())) for c in continuations]
