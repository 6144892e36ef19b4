"""Embeddings, the Chroma vector store, splitting, BM25 and hybrid search.

``Index`` is the entry point (``open_index(name, data_dir)``); every retriever offers
``search(query, k) -> list[Hit]``.
"""

from retrieval.hits import Hit, RetrievalError, Retriever, rrf

__all__ = ["Hit", "RetrievalError", "Retriever", "rrf"]
