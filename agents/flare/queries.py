"""Cutting a look-ahead at its first sentence, and turning its unsure tokens into queries."""

from __future__ import annotations

import re

from conclave.local_models.generate import TokenLogprob

# a run of end punctuation (and closing quotes/brackets) followed by space or the end, or a line break
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)|\n")
_WORD = re.compile(r"\w")


def first_sentence(text: str, tokens: list[TokenLogprob]) -> tuple[str, list[TokenLogprob], str]:
    """(the first sentence, the tokens that wrote it, the text after it). Without an end
    mark the whole look-ahead is the sentence, as in the paper."""
    lead = len(text) - len(text.lstrip())
    m = _SENTENCE_END.search(text, lead)
    end = m.end() if m else len(text)
    if m and m.group() == "\n":
        end = m.start()
    kept, offset = [], 0
    for t in tokens:
        if offset >= end:
            break
        kept.append(t)
        offset += len(t.token)
    return text[:end], kept, text[end:]


def masked_query(tokens: list[TokenLogprob], beta: float) -> str:
    """The sentence without its tokens of probability <= beta; empty if no word is left."""
    query = " ".join("".join(t.token for t in tokens if t.prob > beta).split())
    return query if _WORD.search(query) else ""


def low_spans(tokens: list[TokenLogprob], theta: float) -> list[str]:
    """Maximal runs of consecutive tokens with probability <= theta that hold a word
    (a lone unsure comma is not worth a question)."""
    spans, run = [], []
    for t in tokens + [None]:
        if t is not None and t.prob <= theta:
            run.append(t.token)
            continue
        text = "".join(run).strip()
        if _WORD.search(text):
            spans.append(text)
        run = []
    return spans
