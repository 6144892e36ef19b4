"""A scripted LLM for orchestration tests: the only fake, and it sits at the model seam."""

from __future__ import annotations

from typing import Callable, Iterator

from conclave.agents.llm import LLM, Chunk, Completion, ContinuationScore, Request, TokenLogprob, UnsupportedFeature

# A reply is a string (its words become tokens, each with log-prob -0.1), a list of
# (token_text, logprob) pairs for workflows that read log-probs, or an exception to raise.
Reply = str | list[tuple[str, float]] | Exception


class ScriptedLLM(LLM):
    """Replies come from ``replies`` in order (or from a function of the request).
    Every request is kept in ``requests`` so tests can check what the workflow sent.
    Stop sequences cut a reply the way a real backend does. ``logprobs`` plays an
    endpoint's log-prob support: "yes", "raise" (UnsupportedFeature when asked, as the
    OpenAI backend does) or "none" (silently returns ``logprobs=None``)."""

    backend = "scripted"

    def __init__(self, replies: list[Reply] | Callable[[Request], Reply] = (), *,
                 scores: dict[str, float] | Callable[[str, str], float] | None = None, sink=None, logprobs: str = "yes"):
        super().__init__("scripted", sink=sink)
        if logprobs not in ("yes", "raise", "none"):
            raise ValueError(f"logprobs must be 'yes', 'raise' or 'none', got {logprobs!r}")
        self.replies = replies if callable(replies) else list(replies)
        self.scores = scores if scores is not None else {}
        self.logprobs = logprobs
        self.requests: list[Request] = []

    def _next(self, req: Request) -> Reply:
        self.requests.append(req)
        if callable(self.replies):
            return self.replies(req)
        if not self.replies:
            raise AssertionError("ScriptedLLM ran out of replies")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _complete(self, req: Request) -> Completion:
        out = super()._complete(req)
        if self.logprobs == "none":
            out.logprobs = None
        return out

    def _stream(self, req: Request) -> Iterator[Chunk]:
        if req.params.logprobs and self.logprobs == "raise":
            self.requests.append(req)
            raise UnsupportedFeature("scripted endpoint returns no log-probs")
        reply = self._next(req)
        if isinstance(reply, str):
            words = reply.split(" ")
            tokens = [(w if i == 0 else " " + w, -0.1) for i, w in enumerate(words)]
            if len(tokens) > 1 and tokens[0][0] == "":
                tokens = tokens[1:]  # " Paris" is one token, as a real tokenizer has it, not "" and " Paris"
        else:
            tokens = list(reply)
        finish = "length" if len(tokens) > req.params.max_tokens else "stop"
        tokens = tokens[: req.params.max_tokens]
        whole = "".join(t for t, _ in tokens)
        cut = min((i for i in (whole.find(s) for s in req.params.stop) if i >= 0), default=len(whole))
        if cut < len(whole):
            finish = "stop"
        # like the real decoder: the text ends before the stop; the tokens that wrote it keep their log-probs
        start, n_out = 0, 0
        for piece, lp in tokens:
            if start >= cut and cut < len(whole):
                break
            n_out += 1
            yield Chunk(piece[: max(cut - start, 0)], [TokenLogprob(piece, lp)] if req.params.logprobs else [])
            start += len(piece)
        n_prompt = sum(len(_text(m["content"]).split()) for m in req.messages) if req.messages else len(req.prompt.split())
        yield Chunk("", [], finish, n_prompt, n_out)

    def _score(self, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
        """``scores``: log-probs by continuation, or a function of (prompt, continuation)."""
        self.requests.append(Request("score", None, prompt=prompt))
        out = []
        for c in continuations:
            lp = self.scores(prompt, c) if callable(self.scores) else self.scores.get(c, -10.0)
            out.append(ContinuationScore(c, lp, 1, (lp,), False, len(prompt.split())))
        return out


def _text(content: str | list[dict]) -> str:
    """A message's text; an OpenAI content list (text and image parts) counts its text parts."""
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
