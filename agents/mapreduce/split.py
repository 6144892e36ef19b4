"""Cutting documents into parts counted in the model's own tokens, and cutting text to a token budget."""

from __future__ import annotations

from typing import Callable

from conclave.retrieval.ingest import Chunk, Record, Splitter

Count = Callable[[str], int]


# Lines first, not paragraphs: the recursive splitter never joins the rest of a long
# paragraph with what follows, so paragraph-first parts come out anywhere from a sixth to
# all of the size asked (Hamlet at 512 tokens: 11 parts instead of 8), and every part is a
# model call.
LINES_FIRST = ["\n", " ", ""]


def token_splitter(count: Count, chunk_tokens: int, overlap_tokens: int) -> Splitter:
    """retrieval's Splitter (recursive splitting, overlap, stable chunk ids), counting in the
    model's own tokens through the seam: what the map prompt's budget is spent in."""
    return Splitter(count, chunk_tokens, overlap_tokens, separators=LINES_FIRST)


def offsets(records: list[Record], chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Where each chunk lies in its record's text, as (start, end) character offsets.
    Chunks come in document order and overlap, so each is looked for from just after
    the previous one's start."""
    texts = {}
    for rec in records:
        texts.setdefault(rec.source, []).append(rec.text)
    out, pos, last_source = [], 0, None
    for c in chunks:
        text = "\n".join(texts.get(c.source, []))
        if c.source != last_source:
            pos, last_source = 0, c.source
        start = text.find(c.text, pos)
        if start < 0:  # not found verbatim (should not happen): say where the search stood
            start = pos
        out.append((start, start + len(c.text)))
        pos = start + 1
    return out


def truncate(text: str, max_tokens: int, count: Count) -> str:
    """The longest prefix of ``text`` that takes at most ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    if count(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)  # count(text[:lo]) <= max_tokens < count(text[:hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid
    return text[:lo]
