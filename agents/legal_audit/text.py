"""Sentences and content words: what the lexical checks compare."""

from __future__ import annotations

import re

_STOP = set("""a an and are as at be been being but by can could did do does for from had has have he her his how i if in
into is it its may might more most must no nor not of on or our shall she should so such than that the their them then
there these they this those to under upon was we were what when where which while who whom why will with would you
court held holding case decision opinion supreme justice also its whether because only any all each""".split())
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_ABBREV = re.compile(r"\b(v|U\.S|Co|Inc|No|Corp|Dept|St|Mr|Ms|Dr|J|C\.J|Cir|Ct|Ed|Stat|e\.g|i\.e|cf|id)\.$", re.I)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, not split after the abbreviations of case names and
    citations ("v.", "U.S.")."""
    out: list[tuple[int, int]] = []
    start = 0
    for m in [*_SENT.finditer(text), None]:
        end = m.start() if m else len(text)
        piece = text[start:end]
        if piece.strip():
            if out and _ABBREV.search(text[out[-1][0]:out[-1][1]].rstrip()):
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        start = m.end() if m else end
    return out


def sentences(text: str) -> list[str]:
    return [" ".join(text[a:b].split()) for a, b in sentence_spans(text)]


def stem(word: str) -> str:
    for suffix in ("ings", "ing", "ions", "ion", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {stem(w) for w in re.findall(r"[a-z][a-z'-]+|\d+", text.lower()) if w not in _STOP and len(w) > 2}
