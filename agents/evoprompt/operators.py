"""The evolutionary operators, performed by the evolver model: paraphrase, GA crossover +
mutation, and DE's difference-mutation + crossover; and parent selection."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from conclave.prompts import loader as prompts
from conclave.agents.llm import LLM

_TAGGED = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"\w")


def parse_prompt(text: str, *, untagged: bool = False, scaffold: Scaffold | None = None) -> str | None:
    """The last ``<prompt>…</prompt>`` that holds words (the last, because a model may first
    repeat the instructions' own "<prompt> and </prompt>"); else, from a model that opened
    the tag and never closed it, the rest of that line; else, with ``untagged``, the first
    line of the reply. With a ``scaffold``, what the template itself says is cut away (see
    ``Scaffold``). None when there is nothing left."""
    found = [" ".join(body.split()) for body in reversed(_TAGGED.findall(text))]
    tail = re.split(r"</prompt>", text, flags=re.IGNORECASE)[-1]
    at = tail.lower().rfind("<prompt>")
    if at >= 0:
        found.append(_line(tail[at + len("<prompt>"):]))
    elif untagged:
        found.append(_line(text))
    for body in found:
        body = _bare(body) if scaffold is None else scaffold.clean(body)
        if body:
            return body
    return None


def _line(text: str) -> str:
    return " ".join(text.strip().split("\n")[0].split())


def _bare(body: str) -> str | None:
    """None for a body with no words, or only the instructions' "<prompt> and </prompt>"."""
    body = re.split(r"</?prompt\b", body, flags=re.IGNORECASE)[0].strip(" \"'/")  # a stray, broken tag ends it
    return body if _WORD.search(body) and body.lower() != "and" else None


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True)
class Scaffold:
    """What a template says itself, which a weak evolver copies into its child: the openings
    of its numbered steps ("4. Cross over the …"), its field labels ("Basic Prompt:") and
    its worked example's prompts. A child is cut at the first step or label it runs on
    into, loses a label it opens with, and is no child at all if it is only a copy of the
    worked example."""

    steps: re.Pattern | None
    labels: re.Pattern | None
    examples: frozenset[str]

    @classmethod
    def of(cls, messages: list[dict]) -> Scaffold:
        """From a rendered template. Only the turns before the real request are read: they
        are the scaffold alone, where the request also holds the prompts being evolved."""
        steps, labels, examples = set(), set(), set()
        final = _norm(messages[-1]["content"])
        for m in messages[:-1]:
            for line in m["content"].splitlines():
                if step := re.match(r"\d+\.\s+((?:[A-Za-z]+\s+){1,2}[A-Za-z]+)", line):
                    steps.add(re.escape(step.group(1)))
                if label := re.match(r"(?:\d+\.\s+)?([A-Z][A-Za-z]*(?: [A-Za-z]+)?(?: \d)?):\s", line):
                    labels.add(re.escape(label.group(1)))
            for body in _TAGGED.findall(m["content"]) + re.findall(r"^(?:Basic Prompt|Prompt \d+):\s*(.+)$", m["content"], re.M):
                if _norm(body) and _norm(body) not in final:  # the real request holding it makes it no copy
                    examples.add(_norm(body))
        alt = lambda parts: "|".join(sorted(parts, key=len, reverse=True))  # noqa: E731
        return cls(re.compile(rf"\s\d+\.\s+(?:{alt(steps)})\b", re.IGNORECASE) if steps else None,
                   re.compile(rf"(?:{alt(labels)}):", re.IGNORECASE) if labels else None,
                   frozenset(examples))

    def clean(self, body: str) -> str | None:
        if self.labels is not None:
            body = self.labels.sub("", body, count=1) if self.labels.match(body) else body
            if cut := self.labels.search(body):
                body = body[: cut.start()]
        if self.steps is not None and (cut := self.steps.search(body)):
            body = body[: cut.start()]
        body = _bare(body)
        return None if body is None or _norm(body) in self.examples else body


@dataclass
class Offspring:
    prompt: str | None  # None: the reply held no usable prompt (none at all, or a copy of the worked example)
    reply: str
    tokens: int


async def ask(llm: LLM, pid: str, *, temperature: float, max_tokens: int, seed: int, **values) -> Offspring:
    rendered = prompts.render(pid, **values)
    out = await llm.achat(rendered, temperature=temperature, max_tokens=max_tokens, seed=seed)
    # a paraphrase is the whole reply (APE's format); GA and DE write steps before the prompt
    child = parse_prompt(out.text, untagged=pid == "evoprompt_paraphrase", scaffold=Scaffold.of(rendered.messages))
    return Offspring(child, out.text, out.usage.total_tokens)


def de_template(variant: str) -> str:
    return f"evoprompt_de_{variant}"


def de_values(variant: str, a: str, b: str, best: str, base: str) -> dict:
    values = {"prompt_1": a, "prompt_2": b, "base": base}
    if variant != "v2":
        values["best"] = best
    return values


# --- selection ---------------------------------------------------------------------------


def select_parents(rng: random.Random, prompts_: list[str], fitness: list[float], how: str, tournament_size: int = 3):
    """Indices of two parents with different prompts (when the population has two). Roulette
    weights by fitness; when every fitness is zero, or all are equal, it is uniform."""
    distinct = len(set(prompts_))
    first = _pick(rng, fitness, how, tournament_size, exclude=set())
    if distinct < 2:
        others = [i for i in range(len(prompts_)) if i != first]
        return first, rng.choice(others)
    same = {i for i, p in enumerate(prompts_) if p == prompts_[first]}
    return first, _pick(rng, fitness, how, tournament_size, exclude=same)


def _pick(rng: random.Random, fitness: list[float], how: str, tournament_size: int, exclude: set[int]) -> int:
    pool = [i for i in range(len(fitness)) if i not in exclude]
    if how == "random":
        return rng.choice(pool)
    if how == "tournament":
        entrants = rng.sample(pool, min(tournament_size, len(pool)))
        return max(entrants, key=lambda i: (fitness[i], -i))
    weights = [max(fitness[i], 0.0) for i in pool]
    if sum(weights) <= 0 or len(set(weights)) == 1:
        return rng.choice(pool)
    return rng.choices(pool, weights=weights)[0]
