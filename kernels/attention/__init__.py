"""Attention over positions.

- ``naive.py``: the specification (``attention_naive``; ``decode_naive`` over a ring);
- ``prefill.py``: Triton, flash-attention style, for a chunk of queries;
- ``decode.py``: Triton, split-K (flash-decoding), one query per sequence over the cache;
- ``online.py``: the online-softmax step both kernels share.

``attention_decode`` picks Triton on CUDA; elsewhere the reference's arithmetic through
torch's fused SDPA, over only the cells some sequence of the batch has filled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conclave.kernels.attention.naive import attention_naive, decode_naive, ring_positions, visible


def attention_decode(q, k_cache, v_cache, slots, pos, *, scale: float, window: int | None = None,
                     softcap: float | None = None):
    """Same contract as ``decode_naive``."""
    if q.is_cuda:
        from conclave.kernels.attention.decode import attention_decode_split

        return attention_decode_split(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)
    if softcap is not None or q.dtype == torch.float64:
        return decode_naive(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)
    cells = k_cache.shape[2]
    top = int(pos.max())
    held = min(top + 1, cells)
    rows = slots.tolist()
    # one sequence in an unwrapped buffer skips the cells its window has left; a ring of W is all visible
    lo = max(0, top + 1 - window) if len(rows) == 1 and window and top < cells else 0
    if rows == list(range(rows[0], rows[0] + len(rows))):  # consecutive slots: a view, no copy
        k, v = k_cache[rows[0] : rows[0] + len(rows), :, lo:held], v_cache[rows[0] : rows[0] + len(rows), :, lo:held]
    else:
        k, v = k_cache[:, :, :held].index_select(0, slots), v_cache[:, :, :held].index_select(0, slots)
    mask = None  # one sequence sees every cell in its view
    if len(rows) > 1:
        s, n = torch.arange(held, device=pos.device), pos[:, None]
        if top < cells:  # nothing has wrapped: cell s holds position s
            mask = (s <= n) & (s > n - window) if window else s <= n
        else:
            mask = visible(n, ring_positions(pos + 1, cells)[:, :held], window)[:, 0]
        mask = mask[:, None, None]  # [B, heads, query, cells]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    return out[:, :, 0]
