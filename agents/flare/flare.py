"""FLARE (Jiang et al. 2023, "Active Retrieval Augmented Generation") and its baselines, in one harness.

direct: write a look-ahead sentence; if any of its tokens is unsure (p <= theta),
retrieve with a query made from it and write the sentence again with the passages.
instruct: few-shot exemplars teach the model to write [Search(query)] itself.
none / single / interval: no retrieval, retrieval once with the question, and
retrieval every ``interval_tokens`` with the previous window as the query.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from conclave.prompts import loader as prompts
from conclave.agents.flare.config import FlareConfig
from conclave.agents.flare.queries import first_sentence, low_spans, masked_query
from conclave.agents.flare.trace import FlareError, FlareResult, LowToken, Step
from conclave.agents.llm import LLM, Completion, UnsupportedFeature
from conclave.retrieval.hits import Hit, Retriever, rrf

ANSWER_STOP = ("\n",)  # the answer is one paragraph; a new line is the model moving on
LEADING_BREAKS = 2
SEARCH_OPEN, SEARCH_CLOSE = "[Search(", ")]"
NO_LOGPROBS = (
    "FLARE-direct needs token log-probs, but the endpoint ({model}, {backend}) does not return them; "
    "use method 'instruct', which does not need them, or a backend that does (llamacpp, native)"
)

Event = Callable[[dict], None]


def run(config: FlareConfig, llm: LLM, retriever: Retriever | None, question: str, on_event: Event | None = None) -> FlareResult:
    if not isinstance(question, str) or not question.strip():
        raise FlareError("FLARE needs a non-empty question")
    if config.method != "none" and not callable(getattr(retriever, "search", None)):
        raise FlareError(f"method {config.method!r} needs a retriever with search(query, k); got {retriever!r}")
    r = _Run(config, llm, retriever, question.strip(), on_event)
    stopped = _METHODS[config.method](r)
    r.emit({"step": len(r.steps), "kind": "done", "stopped": stopped})
    return FlareResult(
        method=config.method, question=r.question, answer=r.answer.strip(), steps=r.steps, n_calls=r.n_calls,
        n_retrievals=r.n_retrievals, retrieved_ids=r.seen, stopped=stopped, initial_query=r.initial_query,
        initial_ids=r.initial_ids, config=config.model_dump(),
    )


class _Run:
    """The state of one run, and the only two ways it touches the world: the model and the retriever."""

    def __init__(self, config: FlareConfig, llm: LLM, retriever: Retriever | None, question: str, on_event: Event | None):
        self.c, self.llm, self.retriever, self.question = config, llm, retriever, question
        self.on_event = on_event
        self.answer = ""
        self.used = 0  # answer tokens accepted so far
        self.steps: list[Step] = []
        self.n_calls = self.n_retrievals = 0
        self.seen: list[str] = []
        self.initial_query: str | None = None
        self.initial_ids: list[str] = []

    @property
    def budget(self) -> int:
        return self.c.max_answer_tokens - self.used

    def emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def generate(self, pid: str, *, max_tokens: int, logprobs: bool = False, stop=ANSWER_STOP, opens: bool = False,
                 **values) -> Completion:
        """``opens``: the call writes the first words of a text, so a line break is no end yet."""
        rendered = prompts.render(pid, **values)
        params = dict(max_tokens=max_tokens, temperature=self.c.temperature, seed=self.c.seed, stop=stop)
        if logprobs:
            params["logprobs"] = True
        out = self._complete(rendered, params)
        # After long passages a model may open with a line break and stop before writing a word.
        # The break is then taken as part of the prompt and the model goes on from it, at most twice.
        for _ in range(LEADING_BREAKS if opens and "\n" in stop and rendered.text is not None else 0):
            if out.text.strip() or out.finish_reason != "stop":
                break
            rendered = dataclasses.replace(rendered, text=rendered.text + out.text + "\n")
            out = self._complete(rendered, params)
        if logprobs and out.logprobs is None:
            raise FlareError(NO_LOGPROBS.format(model=self.llm.model, backend=self.llm.backend))
        self.emit({"step": len(self.steps), "kind": "generate", "prompt": pid, "text": out.text,
                   "finish_reason": out.finish_reason})
        return out

    def _complete(self, rendered, params: dict) -> Completion:
        self.n_calls += 1  # before the call: a failed call is still a call in the seam's log
        try:
            return self.llm.complete(rendered, **params)
        except UnsupportedFeature as e:
            if params.get("logprobs"):
                raise FlareError(NO_LOGPROBS.format(model=self.llm.model, backend=self.llm.backend) + f" ({e})") from e
            raise

    def answer_call(self, hits: list[Hit], *, max_tokens: int, logprobs: bool = False) -> Completion:
        return self.generate("flare_answer", max_tokens=max_tokens, logprobs=logprobs, opens=not self.answer.strip(),
                             passages=[h.text for h in hits], question=self.question, answer=self.answer)

    def retrieve(self, query: str) -> list[Hit]:
        self.n_retrievals += 1
        hits = self.retriever.search(query, self.c.k)
        for h in hits:
            if h.id not in self.seen:
                self.seen.append(h.id)
        self.emit({"step": len(self.steps), "kind": "retrieve", "query": query, "ids": [h.id for h in hits]})
        return hits

    def accept(self, step: Step, text: str, n_tokens: int) -> None:
        step.text = text
        self.answer += text
        self.used += n_tokens
        self.steps.append(step)


# --- FLARE-direct ------------------------------------------------------------------------


def _direct(r: _Run) -> str:
    r.initial_query = r.question
    hits = r.retrieve(r.question)
    r.initial_ids = [h.id for h in hits]
    for i in range(r.c.max_steps):
        if r.budget <= 0:
            return "max_answer_tokens"
        limit = min(r.c.lookahead_tokens, r.budget)
        # the look-ahead sees the passages of the last retrieval, as the answer so far was written with them
        draft = r.answer_call(hits, max_tokens=limit, logprobs=True)
        sentence, tokens, rest = first_sentence(draft.text, draft.logprobs)
        step = Step(i, "sentence", draft=sentence)
        if not sentence.strip():
            step.note = "the model ended the answer"
            r.steps.append(step)
            return "end"
        step.low_confidence = [LowToken(t.token, t.prob) for t in tokens if t.prob <= r.c.theta]
        if not step.low_confidence:
            r.accept(step, sentence, max(len(tokens), 1))
            if _ended(draft, rest):
                return "end"
            continue
        step.queries = _queries(r, sentence, tokens)
        hits = _search_all(r, step.queries)
        step.retrieved_ids = [h.id for h in hits]
        again = r.answer_call(hits, max_tokens=limit, logprobs=True)
        regenerated, regen_tokens, regen_rest = first_sentence(again.text, again.logprobs)
        step.regenerated = regenerated
        if not regenerated.strip():
            step.note = "with the new passages the model ended the answer"
            r.steps.append(step)
            return "end"
        r.accept(step, regenerated, max(len(regen_tokens), 1))
        if _ended(again, regen_rest):
            return "end"
    return "max_steps" if r.budget > 0 else "max_answer_tokens"


def _ended(out: Completion, rest: str) -> bool:
    """The model stopped by itself right after this sentence."""
    return out.finish_reason == "stop" and not rest.strip()


def _queries(r: _Run, sentence: str, tokens) -> list[str]:
    if r.c.query_mode == "questions":
        spans = low_spans(tokens, r.c.theta)
        if spans:
            return [_ask(r, sentence, span) for span in spans]
    # masked mode, or questions mode when every unsure token was punctuation
    return [masked_query(tokens, r.c.beta) or r.question]


def _ask(r: _Run, sentence: str, span: str) -> str:
    out = r.generate("flare_question", max_tokens=r.c.question_tokens, opens=True, question=r.question,
                     text=(r.answer + sentence).strip(), span=span)
    asked = out.text.strip()
    return asked if re.search(r"\w", asked) else r.question  # an empty question would find nothing


def _search_all(r: _Run, queries: list[str]) -> list[Hit]:
    rankings = [r.retrieve(q) for q in queries]
    return rankings[0] if len(rankings) == 1 else rrf(rankings, r.c.k)


# --- FLARE-instruct ----------------------------------------------------------------------


def _instruct(r: _Run) -> str:
    hits: list[Hit] = []
    written = ""  # the answer with its [Search(...)] marks: what the model continues from
    for i in range(r.c.max_steps):
        if r.budget <= 0:
            return "max_answer_tokens"
        out = r.generate("flare_instruct", max_tokens=r.budget, stop=(SEARCH_CLOSE, "\n"), opens=not written.strip(),
                         passages=[h.text for h in hits], question=r.question, answer=written)
        n = out.usage.completion_tokens
        before, query, note = parse_search(out.text, out.finish_reason)
        step = Step(i, "search", draft=out.text, note=note)
        r.accept(step, before, n)
        if query is None:
            written += before
            if out.finish_reason == "stop" or not before.strip():
                return "end"
            continue
        written += f"{before}{SEARCH_OPEN}{query}{SEARCH_CLOSE}"
        step.queries = [query or r.question]
        hits = r.retrieve(step.queries[0])
        step.retrieved_ids = [h.id for h in hits]
    return "max_steps" if r.budget > 0 else "max_answer_tokens"


def parse_search(text: str, finish_reason: str) -> tuple[str, str | None, str | None]:
    """(text before the search, its query or None when there is none, a note on malformed output).

    A backend that honours the stop sequence leaves ``...[Search(query``; one that does
    not leaves ``...[Search(query)] more``, whose tail was written without the passages
    and is dropped. An empty query gives "" (the caller searches with the question)."""
    at = text.find(SEARCH_OPEN)
    if at < 0:
        return text, None, None
    before, tail = text[:at], text[at + len(SEARCH_OPEN):]
    close = tail.find(SEARCH_CLOSE)
    note = None
    if close >= 0:
        query = tail[:close]
    elif finish_reason == "length":
        # cut off inside the query: it may be half a query, and the answer budget is spent anyway
        return before, None, f"unterminated {SEARCH_OPEN} at the token limit was dropped: {tail[:80]!r}"
    else:
        query = tail.rstrip(")]")
    query = " ".join(query.split())
    if not re.search(r"\w", query):
        note = f"empty {SEARCH_OPEN}{SEARCH_CLOSE}: searched with the question instead"
        query = ""
    return before, query, note


# --- baselines ---------------------------------------------------------------------------


def _none(r: _Run) -> str:
    return _one_shot(r, None)


def _single(r: _Run) -> str:
    return _one_shot(r, r.question)


def _one_shot(r: _Run, query: str | None) -> str:
    step = Step(0, "answer")
    hits = []
    if query is not None:
        step.queries = [query]
        hits = r.retrieve(query)
        step.retrieved_ids = [h.id for h in hits]
    out = r.answer_call(hits, max_tokens=r.c.max_answer_tokens)
    step.draft = out.text
    r.accept(step, out.text, out.usage.completion_tokens)
    return "end" if out.finish_reason == "stop" else "max_answer_tokens"


def _interval(r: _Run) -> str:
    query = r.question  # nothing is written yet: the first window is retrieved for with the question
    for i in range(r.c.max_steps):
        if r.budget <= 0:
            return "max_answer_tokens"
        step = Step(i, "window", queries=[query])
        hits = r.retrieve(query)
        step.retrieved_ids = [h.id for h in hits]
        out = r.answer_call(hits, max_tokens=min(r.c.interval_tokens, r.budget))
        step.draft = out.text
        r.accept(step, out.text, out.usage.completion_tokens)
        if out.finish_reason == "stop" or not out.text.strip():
            return "end"
        query = " ".join(out.text.split()) or r.question
    return "max_steps" if r.budget > 0 else "max_answer_tokens"


_METHODS = {"none": _none, "single": _single, "interval": _interval, "direct": _direct, "instruct": _instruct}
