"""What our native engines share: sequences in slots, answered the way the batching
scheduler and the generation loop expect (the ``LlamaCppEngine`` contract).

A subclass says how to run one step for several slots at once (``_step``) and how to read
a prompt chunk into one slot (``_read``), and how far back a slot can go (``truncate``).
"""

from __future__ import annotations

import numpy as np
import torch

from conclave.local_models.engine import reuse_prefix
from conclave.local_models.errors import ContextOverflow


class SlotEngine:
    n_ctx: int
    n_slots: int
    n_batch: int

    def __init__(self, *, n_ctx: int, n_slots: int, n_batch: int):
        self.n_ctx, self.n_slots, self.n_batch = n_ctx, n_slots, n_batch
        self._tokens: list[list[int]] = [[] for _ in range(n_slots)]
        self.tokens_read = 0  # tokens that went through the model: what reusing a prefix saves

    def cached(self, slot: int = 0) -> list[int]:
        """The tokens a slot holds, in order."""
        return self._tokens[slot]

    def truncate(self, slot: int, n: int) -> None:
        """Keep at most the first ``n`` tokens of a slot (callers read on from ``cached``)."""
        raise NotImplementedError

    def _step(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One token into each of several slots; logits [len(slots), V]."""
        raise NotImplementedError

    def _read(self, slot: int, tokens: list[int], all_logits: bool) -> torch.Tensor:
        """Prompt tokens into one slot; the last logits [V], or every row [T, V]."""
        raise NotImplementedError

    def decode(self, work: list[tuple[int, list[int], bool]]) -> list[np.ndarray]:
        """(slot, tokens, all_logits) entries, answered in order: the logits after each
        entry's last token, or one row per token. Single tokens run together as one batch;
        prompt chunks run one by one."""
        for slot, tokens, _ in work:
            if not tokens:
                raise ValueError("nothing to decode")
            if len(self._tokens[slot]) + len(tokens) > self.n_ctx:
                raise ContextOverflow(f"{len(self._tokens[slot]) + len(tokens)} tokens exceed the context of {self.n_ctx}")
        out: list[np.ndarray | None] = [None] * len(work)
        steps = [i for i, (_, tokens, _) in enumerate(work) if len(tokens) == 1]
        if steps:
            logits = self._step([work[i][0] for i in steps], [work[i][1][0] for i in steps])
            self.tokens_read += len(steps)
            for i, row in zip(steps, logits):
                out[i] = row[None].cpu().numpy() if work[i][2] else row.cpu().numpy()
        for i, (slot, tokens, all_logits) in enumerate(work):
            if out[i] is None:
                out[i] = self._read(slot, tokens, all_logits).cpu().numpy()
                self.tokens_read += len(tokens)
        return out

    # --- one sequence, in slot 0 ---------------------------------------------------------

    def prefill(self, tokens: list[int]) -> np.ndarray:
        return reuse_prefix(self, tokens)

    def append(self, tokens: list[int], *, all_logits: bool = False) -> np.ndarray:
        if not tokens:
            raise ValueError("nothing to append")
        return self.decode([(0, tokens, all_logits)])[0]
