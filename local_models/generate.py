"""Generation and scoring over any ``TokenEngine``: one loop for llama.cpp and the native engines.

Log-probs come from the last logits of each step (never from logits of the whole
sequence), so asking for them costs one pass over the vocabulary per token.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from conclave.local_models.engine import TokenEngine
from conclave.local_models.errors import ContextOverflow
from conclave.local_models.sampling import choose, logsumexp, top_k

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        problems = []
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            problems.append(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(f"temperature must be in [0, 2], got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            problems.append(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append("stop sequences must be non-empty strings")
        if len(self.stop) > 4:
            problems.append(f"at most 4 stop sequences, got {len(self.stop)}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    @property
    def prob(self) -> float:
        return float(np.exp(self.logprob))


@dataclass
class Chunk:
    """A stretch of generated text, the tokens that produced it, and, at the end, why it stopped."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ContinuationScore:
    continuation: str
    logprob: float  # sum over the continuation's tokens
    n_tokens: int
    token_logprobs: tuple[float, ...]
    greedy: bool  # every token was the model's argmax
    n_context: int = 0  # tokens of the prompt it was scored after

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


def _token_text(engine: TokenEngine, token: int) -> str:
    return engine.token_bytes(token).decode("utf-8", errors="replace")


def token_logprob(engine: TokenEngine, logits: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """The log-prob of ``token`` under ``logits`` (one row), with the ``n_top`` best alternatives."""
    lse = logsumexp(logits)
    top = ()
    if n_top:
        top = tuple((_token_text(engine, int(t)), float(logits[t]) - lse) for t in top_k(logits, n_top))
    return TokenLogprob(_token_text(engine, token), float(logits[token]) - lse, top)


def _held_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that could still grow into a stop sequence."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def check_fits(engine: TokenEngine, n_prompt: int) -> None:
    if n_prompt >= engine.n_ctx:
        raise ContextOverflow(
            f"prompt is {n_prompt} tokens but {engine.name} has a context of {engine.n_ctx}; shorten it or raise n_ctx"
        )


class Decoder:
    """One sequence's side of generation: picks each token from its logits and turns the
    tokens into final text (whole UTF-8 characters, stop sequences cut, log-probs attached).
    The single-sequence loop below and the batching scheduler both drive it."""

    def __init__(self, engine: TokenEngine, params: GenParams, n_prompt: int):
        check_fits(engine, n_prompt)
        self.engine, self.params, self.n_prompt = engine, params, n_prompt
        self.budget = min(params.max_tokens, engine.n_ctx - n_prompt)
        # OpenAI seeds are any int64; numpy wants a non-negative one
        self.rng = np.random.default_rng(None if params.seed is None else params.seed % 2**64)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""  # text that might be the start of a stop sequence
        self.pending: list[TokenLogprob] = []
        self.n_out = 0

    def step(self, logits: np.ndarray) -> tuple[int | None, list[Chunk]]:
        """Choose the next token. Returns the token to feed back (None once finished) and
        the chunks that became final; the last chunk of a sequence has ``finish_reason``."""
        p = self.params
        token = choose(logits, p.temperature, p.top_p, self.rng)
        self.n_out += 1
        if self.engine.is_eog(token):
            return None, [self._finish("stop")]
        if p.logprobs:
            self.pending.append(token_logprob(self.engine, logits, token, p.top_logprobs))
        text = self.held + self.utf8.decode(self.engine.token_bytes(token))
        cut = min((i for i in (text.find(s) for s in p.stop) if i >= 0), default=-1)
        if cut >= 0:
            chunks = [Chunk(text[:cut], self.pending)]
            self.held, self.pending = "", []
            return None, chunks + [self._finish("stop", flush=False)]
        keep = _held_suffix(text, p.stop) if p.stop else 0
        emit, self.held = text[: len(text) - keep], text[len(text) - keep :]
        chunks = []
        if emit:
            chunks.append(Chunk(emit, self.pending))
            self.pending = []
        if self.n_out >= self.budget:
            return None, chunks + [self._finish("length")]
        return token, chunks

    def _finish(self, reason: str, flush: bool = True) -> Chunk:
        tail = self.held + self.utf8.decode(b"", final=True) if flush else ""
        return Chunk(tail, self.pending if flush else [], reason, self.n_prompt, self.n_out)


def generate(engine: TokenEngine, prompt_tokens: list[int], params: GenParams) -> Iterator[Chunk]:
    """Yield pieces of text as they become final; the last piece carries ``finish_reason``."""
    decoder = Decoder(engine, params, len(prompt_tokens))
    logits = engine.prefill(prompt_tokens)
    while True:
        token, chunks = decoder.step(logits)
        yield from chunks
        if token is None:
            return
        logits = engine.append([token])


def split_continuation(engine: TokenEngine, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokens of the context and of the continuation, cut where the joint tokenization
    stops agreeing with the prompt's own, so that a merge across the boundary is scored
    as part of the continuation."""
    ctx = engine.tokenize(prompt, add_bos=engine.add_bos)
    whole = engine.tokenize(prompt + continuation, add_bos=engine.add_bos)
    n = 0
    for a, b in zip(ctx, whole):
        if a != b:
            break
        n += 1
    if n == 0:
        raise ValueError("scoring needs a non-empty prompt (the first token has nothing to be predicted from)")
    if n == len(whole):
        raise ValueError(f"continuation {continuation!r} adds no tokens to the prompt")
    return whole[:n], whole[n:]


def score(engine: TokenEngine, prompt: str, continuations: list[str]) -> list[ContinuationScore]:
    """log P(continuation | prompt) for each continuation; the shared prompt is evaluated once."""
    out = []
    for cont in continuations:
        ctx, cont_tokens = split_continuation(engine, prompt, cont)
        check_fits(engine, len(ctx) + len(cont_tokens))
        rows = [np.array(engine.prefill(ctx), copy=True)]
        if len(cont_tokens) > 1:
            rows.extend(engine.append(cont_tokens[:-1], all_logits=True))
        out.append(_scored(cont, ctx, cont_tokens, rows))
    return out


def _scored(cont: str, ctx: list[int], cont_tokens: list[int], rows) -> ContinuationScore:
    lps, greedy = [], True
    for row, tok in zip(rows, cont_tokens):
        lps.append(float(row[tok]) - logsumexp(row))
        greedy = greedy and int(row.argmax()) == tok
    return ContinuationScore(cont, float(sum(lps)), len(cont_tokens), tuple(lps), greedy, len(ctx))

