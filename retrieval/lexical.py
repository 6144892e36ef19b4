"""Lexical search: Okapi BM25 (rank_bm25) over word tokens."""

from __future__ import annotations

import math
import re

import numpy as np
from rank_bm25 import BM25Okapi

from retrieval.hits import Hit

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _OkapiLuceneIdf(BM25Okapi):
    """rank_bm25's Okapi with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)). The stock
    idf is zero for a term in exactly half the documents and floors negative ones at a
    fraction of the average, so in a small corpus a matching term can score nothing."""

    def _calc_idf(self, nd):
        n = self.corpus_size
        self.idf = {w: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for w, f in nd.items()}


class BM25:
    """BM25 over a fixed list of chunks. ``chunks`` holds (id, text, source, meta)."""

    def __init__(self, chunks: list[tuple[str, str, str, dict]]):
        self.chunks = chunks
        # rank_bm25 divides by the corpus size: an empty index simply answers nothing
        self._bm25 = _OkapiLuceneIdf([words(c[1]) for c in chunks]) if chunks else None

    def search(self, query: str, k: int = 5) -> list[Hit]:
        terms = words(query)
        if self._bm25 is None or not terms:
            return []
        scores = self._bm25.get_scores(terms)
        top = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.chunks[i][0], self.chunks[i][1], self.chunks[i][2], float(scores[i]), self.chunks[i][3])
                for i in top if scores[i] > 0]
