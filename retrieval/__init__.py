"""Embeddings, the Chroma vector store, splitting, BM25 and citation tools."""
