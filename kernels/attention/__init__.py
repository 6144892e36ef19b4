"""Attention over positions.

- ``naive.py``: the specification (``attention_naive``; ``decode_naive`` over a ring);
- ``prefill.py``: Triton, flash-attention style, for a chunk of queries;
- ``decode.py``: Triton, split-K (flash-decoding), one query per sequence over the cache.

``attention_decode`` picks Triton on CUDA and the reference elsewhere.
"""

from __future__ import annotations

from kernels.attention.naive import attention_naive, decode_naive, ring_positions, visible


def attention_decode(q, k_cache, v_cache, slots, pos, *, scale: float, window: int | None = None,
                     softcap: float | None = None):
    if q.is_cuda:
        from kernels.attention.decode import attention_decode_split

        return attention_decode_split(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)
    return decode_naive(q, k_cache, v_cache, slots, pos, scale=scale, window=window, softcap=softcap)


__all__ = ["attention_decode", "attention_naive", "decode_naive", "ring_positions", "visible"]
