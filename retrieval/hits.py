"""What a search returns, what every retriever offers, and how ranked lists are fused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from conclave.local_models.errors import ConclaveError


class RetrievalError(ConclaveError):
    pass


@dataclass(frozen=True)
class Hit:
    id: str  # the chunk id: stable across re-ingestion of the same text
    text: str
    source: str  # the file (or record) the chunk came from
    score: float  # higher is better; its scale depends on the method (cosine, BM25, RRF)
    meta: dict = field(default_factory=dict, compare=False)


class Retriever(Protocol):
    def search(self, query: str, k: int = 5) -> list[Hit]: ...


@dataclass(frozen=True)
class RetrievalRecord:
    """One search, for the run store's log. The query text is not kept, as prompts are not."""

    index: str
    mode: str
    k: int
    scores: tuple[float, ...]  # as returned: cosine, BM25 or RRF, by mode
    # cosine similarity of each returned hit that the dense search saw: the one scale that
    # is comparable across modes and over time, so drift monitoring plots this
    similarities: tuple[float, ...]
    latency_s: float
    started_at: float
    error: str | None = None


class RetrievalSink(Protocol):
    def __call__(self, record: RetrievalRecord) -> None: ...


def rrf(rankings: list[list[Hit]], k: int, c: int = 60) -> list[Hit]:
    """Reciprocal-rank fusion (Cormack et al. 2009): score(d) = sum over lists of 1 / (c + rank)."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (c + rank)
            first.setdefault(hit.id, hit)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return [Hit(i, first[i].text, first[i].source, scores[i], first[i].meta) for i in best]
