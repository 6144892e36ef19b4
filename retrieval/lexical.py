"""Lexical search: Okapi BM25 over word tokens, on an inverted index.

Scoring touches only the documents that hold a query term (numpy over each term's
postings), so a query costs what its terms' postings cost, not a pass over every
document as rank_bm25's ``get_scores`` makes (tests check our scores against it).
The idf is Lucene's, log(1 + (N - n + 0.5) / (n + 0.5)): the classic Okapi idf is zero
for a term in exactly half the documents, so in a small corpus a matching term could
score nothing.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from conclave.retrieval.hits import Hit

_WORD = re.compile(r"\w+", re.UNICODE)
K1, B = 1.5, 0.75  # rank_bm25's defaults


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25:
    """BM25 over a fixed list of chunks. ``chunks`` holds (id, text, source, meta)."""

    def __init__(self, chunks: list[tuple[str, str, str, dict]], *, k1: float = K1, b: float = B):
        self.chunks = chunks
        docs: dict[str, list[int]] = {}
        freqs: dict[str, list[int]] = {}
        lengths = np.zeros(len(chunks))
        for i, chunk in enumerate(chunks):
            tokens = words(chunk[1])
            lengths[i] = len(tokens)
            for term, tf in Counter(tokens).items():
                docs.setdefault(term, []).append(i)
                freqs.setdefault(term, []).append(tf)
        n = len(chunks)
        avgdl = lengths.mean() if n and lengths.sum() else 1.0
        self._norm = k1 * (1 - b + b * lengths / avgdl)  # per document: the tf saturation's denominator term
        self._k1 = k1
        self._postings = {t: (np.array(d, dtype=np.int64), np.array(freqs[t], dtype=np.float64)) for t, d in docs.items()}
        self._idf = {t: math.log(1.0 + (n - len(d) + 0.5) / (len(d) + 0.5)) for t, d in docs.items()}

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every chunk (a repeated query term counts again, as in rank_bm25)."""
        out = np.zeros(len(self.chunks))
        for term in words(query):
            posting = self._postings.get(term)
            if posting is None:
                continue
            idx, tf = posting
            out[idx] += self._idf[term] * tf * (self._k1 + 1) / (tf + self._norm[idx])
        return out

    def search(self, query: str, k: int = 5) -> list[Hit]:
        scores = self.scores(query)
        hit = np.flatnonzero(scores > 0)
        if not hit.size:
            return []
        top = hit[np.lexsort((hit, -scores[hit]))][:k]  # best first; ties in corpus order
        return [Hit(self.chunks[i][0], self.chunks[i][1], self.chunks[i][2], float(scores[i]), self.chunks[i][3]) for i in top]
