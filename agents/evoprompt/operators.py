"""The evolutionary operators, performed by the evolver model: paraphrase, GA crossover +
mutation, and DE's difference-mutation + crossover; and parent selection."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import prompts
from agents.llm import LLM

_TAGGED = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"\w")


def parse_prompt(text: str, *, untagged: bool = False) -> str | None:
    """The last ``<prompt>…</prompt>`` that holds words (the last, because a model may first
    repeat the instructions' own "<prompt> and </prompt>"); else, from a model that opened
    the tag and never closed it, the rest of that line; else, with ``untagged``, the first
    line of the reply. None when there is nothing."""
    for body in reversed(_TAGGED.findall(text)):
        body = " ".join(body.split())
        if _WORD.search(body) and body.lower() != "and":
            return body
    tail = re.split(r"</prompt>", text, flags=re.IGNORECASE)[-1]
    at = tail.lower().rfind("<prompt>")
    if at >= 0:
        return _line(tail[at + len("<prompt>"):])
    return _line(text) if untagged else None


def _line(text: str) -> str | None:
    line = " ".join(text.strip().split("\n")[0].split())
    return line if _WORD.search(line) else None


@dataclass
class Offspring:
    prompt: str | None  # None: the reply held no parsable prompt
    reply: str
    tokens: int


async def ask(llm: LLM, pid: str, *, temperature: float, max_tokens: int, seed: int, **values) -> Offspring:
    out = await llm.achat(prompts.render(pid, **values), temperature=temperature, max_tokens=max_tokens, seed=seed)
    # a paraphrase is the whole reply (APE's format); GA and DE write steps before the prompt
    return Offspring(parse_prompt(out.text, untagged=pid == "evoprompt_paraphrase"), out.text, out.usage.total_tokens)


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
