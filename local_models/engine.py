"""The token-level interface every in-process engine offers (llama.cpp, and our native engines).

Generation, sampling, stop sequences, log-probs and scoring are written once, in
``generate.py``, on top of these few calls.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TokenEngine(Protocol):
    name: str
    arch: str
    n_ctx: int
    n_vocab: int

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """Text to ids; special-token markup in ``text`` becomes special tokens."""

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (empty for control tokens)."""

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>, …)."""

    @property
    def add_bos(self) -> bool:
        """Whether plain prompts start with BOS for this model."""

    def chat_prompt(self, messages: list[dict]) -> str:
        """The model's own chat template applied to ``messages``, ready for generation."""

    def prefill(self, tokens: list[int]) -> np.ndarray:
        """Make the sequence exactly ``tokens`` (reusing any cached prefix) and return the
        logits after its last token. The array is only valid until the next call."""

    def append(self, tokens: list[int], *, all_logits: bool = False) -> np.ndarray:
        """Extend the sequence. Returns the last logits, or one row per token if ``all_logits``."""


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share: what a cache holding ``a`` can keep for ``b``."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reuse_prefix(engine, tokens: list[int]) -> np.ndarray:
    """``prefill`` for engines with slots: keep what slot 0 already holds of ``tokens`` (but
    re-read at least the last token, for its logits) and append the rest."""
    if not tokens:
        raise ValueError("cannot evaluate an empty prompt")
    engine.truncate(0, min(common_prefix(engine.cached(0), tokens), len(tokens) - 1))
    return engine.append(tokens[len(engine.cached(0)) :])
