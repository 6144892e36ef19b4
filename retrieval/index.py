"""A named index: chunks in a Chroma collection, searched densely, lexically (BM25) or both.

Chroma runs embedded (``PersistentClient`` under the data dir) unless a server URL is
configured (``HttpClient``, the scale-out path). The collection's name carries the
embedder's id, so indexes built with different embedders never mix.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from conclave.retrieval.embed import MiniLM
from conclave.retrieval.hits import Hit, RetrievalError, RetrievalRecord, RetrievalSink, rrf
from conclave.retrieval.ingest import IngestError, Record, Splitter, files, read
from conclave.retrieval.lexical import BM25

MODES = ("hybrid", "dense", "lexical")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_BATCH = 256


@dataclass
class IngestReport:
    files: int
    chunks: int
    added: int
    unchanged: int
    removed: int


def chroma_client(data_dir: Path, url: str | None = None):
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)  # telemetry would try the network
    if not url:
        return chromadb.PersistentClient(path=str(Path(data_dir) / "chroma"), settings=settings)
    u = urlparse(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", "https") or not u.hostname:
        raise RetrievalError(f"bad Chroma server URL {url!r}: expected http(s)://host:port")
    try:
        return chromadb.HttpClient(host=u.hostname, port=u.port or (443 if u.scheme == "https" else 8000),
                                   ssl=u.scheme == "https", settings=settings)
    except Exception as e:  # chromadb raises a bare ValueError/ConnectionError when the server is not there
        raise RetrievalError(f"cannot reach the Chroma server at {url}: {e}") from None


def open_index(name: str, data_dir: Path, chroma_url: str | None = None, *, create: bool = True,
               sink: RetrievalSink | None = None) -> "Index":
    return Index(name, chroma_client(data_dir, chroma_url), create=create, sink=sink)


def list_indexes(client) -> list[str]:
    suffix = f"--{MiniLM.slug}"
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))


class Index:
    def __init__(self, name: str, client, *, embedder: MiniLM | None = None, create: bool = True,
                 sink: RetrievalSink | None = None):
        if not _NAME.match(name):
            raise RetrievalError(f"bad index name {name!r}: use letters, digits, '-' and '_' (at most 48)")
        self.name = name
        self.embedder = embedder or MiniLM()
        self.collection_name = f"{name}--{MiniLM.slug}"
        if not create and name not in list_indexes(client):
            raise RetrievalError(f"no index named {name!r}; create it with: conclave index add {name} PATH...")
        self._col = client.get_or_create_collection(
            self.collection_name, embedding_function=self.embedder,
            configuration={"hnsw": {"space": "cosine"}}, metadata={"embedder": MiniLM.name()},
        )
        self._bm25: BM25 | None = None
        self._bm25_count = -1
        self.sink = sink

    # --- writing -------------------------------------------------------------------------

    def add(self, paths: list[Path], *, chunk_tokens: int = 200, overlap_tokens: int = 32,
            progress: Callable[[int, int], None] | None = None) -> IngestReport:
        """Ingest files and folders. A file already ingested is brought up to date: its
        unchanged chunks stay, new ones are added and ones no longer in it are removed."""
        found = files(paths)
        if not found:
            raise IngestError(f"nothing to ingest in {', '.join(map(str, paths))} (looked for .txt .md .jsonl .pdf)")
        records = [r for f in found for r in read(f)]
        report = self.add_records(records, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, progress=progress)
        report.files = len(found)
        return report

    def add_records(self, records: list[Record], *, chunk_tokens: int = 200, overlap_tokens: int = 32,
                    progress: Callable[[int, int], None] | None = None) -> IngestReport:
        if chunk_tokens > self.embedder.max_tokens:
            raise ValueError(f"chunks of {chunk_tokens} tokens would be cut at the embedder's {self.embedder.max_tokens}")
        chunks = Splitter(self.embedder.tokenizer, chunk_tokens, overlap_tokens).chunks(records)
        sources = sorted({r.source for r in records})
        before = set()
        for i in range(0, len(sources), _BATCH):
            before |= set(self._col.get(where={"source": {"$in": sources[i : i + _BATCH]}}, include=[])["ids"])
        wanted = {c.id for c in chunks}
        stale = sorted(before - wanted)
        new = [c for c in {c.id: c for c in chunks}.values() if c.id not in before]
        for i in range(0, len(stale), _BATCH):
            self._col.delete(ids=stale[i : i + _BATCH])
        for i in range(0, len(new), _BATCH):
            batch = new[i : i + _BATCH]
            self._col.add(ids=[c.id for c in batch], documents=[c.text for c in batch],
                          metadatas=[{**_flat(c.meta), "source": c.source} for c in batch])
            if progress:
                progress(min(i + _BATCH, len(new)), len(new))
        self._bm25 = None
        return IngestReport(len(sources), len(chunks), len(new), len(chunks) - len(new), len(stale))

    # --- reading -------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query is empty")
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode != "lexical":
            self.embedder.load()  # a one-off model load is not search latency
        started, t0 = time.time(), time.perf_counter()
        hits, error = [], None
        try:
            hits = self._search(query, k, mode)
            return hits
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            if self.sink is not None:
                self.sink(RetrievalRecord(
                    self.name, mode, k, tuple(h.score for h in hits),
                    tuple(h.meta["similarity"] for h in hits if "similarity" in h.meta),
                    time.perf_counter() - t0, started, error,
                ))

    def _search(self, query: str, k: int, mode: str) -> list[Hit]:
        if mode == "dense":
            return self.dense(query, k)
        if mode == "lexical":
            return self.lexical(query, k)
        # fuse deeper lists than asked for: a chunk ranked 8th by both can beat one ranked 1st by one
        # (dense first: a fused hit keeps the dense meta, with its cosine similarity, where it has one)
        depth = max(4 * k, 20)
        return rrf([self.dense(query, depth), self.lexical(query, depth)], k)

    def dense(self, query: str, k: int) -> list[Hit]:
        n = self._col.count()
        if not n:
            return []
        res = self._col.query(query_texts=[query], n_results=min(k, n), include=["documents", "metadatas", "distances"])
        return [
            Hit(i, doc, meta.get("source", ""), 1.0 - dist, {**meta, "method": "dense", "similarity": 1.0 - dist})
            for i, doc, meta, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0])
        ]

    def lexical(self, query: str, k: int) -> list[Hit]:
        return self._lexical().search(query, k)

    def _lexical(self) -> BM25:
        # rebuilt when the collection changed size (another process may have added to it)
        n = self._col.count()
        if self._bm25 is None or n != self._bm25_count:
            got = self._col.get(include=["documents", "metadatas"])
            self._bm25 = BM25([(i, d, m.get("source", ""), {**m, "method": "lexical"})
                               for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])])
            self._bm25_count = n
        return self._bm25

    def stats(self) -> dict:
        got = self._col.get(include=["metadatas"])
        return {
            "index": self.name, "collection": self.collection_name, "embedder": MiniLM.name(),
            "chunks": len(got["ids"]), "sources": len({m.get("source") for m in got["metadatas"]}),
        }


def _flat(meta: dict) -> dict:
    # Chroma keeps only scalar metadata
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
