"""Attention over positions.

- ``naive.py``: the specification (``attention_naive``; ``decode_naive`` over a ring);
- ``prefill.py``: Triton, flash-attention style, for a chunk of queries;
- ``decode.py``: Triton, split-K (flash-decoding), one query per sequence over the cache.

``attention_decode`` picks Triton on CUDA; elsewhere the reference's arithmetic through
torch's fused SDPA, over only the cells some sequence of the batch has filled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.attention.naive import attention_naive, decode_naive, ring_positions, visible


def attention_decode(q, k_cache, v_cache, slots, pos, *, scale: float, window: int | None = None,
                     softcap: float | None = None):
    """Same contract as ``decode_naive``."""
    if q.is_cuda:
        from kernels.attention.decode import attention_decode_split

        return attention_decode_split(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)
    if softcap is not None or q.dtype == torch.float64:
        return decode_naive(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)
    cells = k_cache.shape[2]
    held = min(int(pos.max()) + 1, cells)
    if len(slots) == 1:  # one sequence: a view of the cells it sees, no copy and no mask
        s, n = int(slots[0]), int(pos[0])
        lo = max(0, n + 1 - window) if window and n < cells else 0  # a ring of W cells is all visible
        k, v = k_cache[s : s + 1, :, lo:held], v_cache[s : s + 1, :, lo:held]
        mask = None
    else:
        k, v = k_cache[:, :, :held].index_select(0, slots), v_cache[:, :, :held].index_select(0, slots)
        mask = visible(pos[:, None], ring_positions(pos + 1, cells)[:, :held], window)[:, None]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out[:, :, 0]
