"""The online softmax both attention kernels run: a block of keys folded into each query
row's running maximum m, sum l and unnormalised output acc, so that scores never reach
memory (Milakov & Gimelshein 2018; FlashAttention)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def online_update(q, k, v, seen, m, l, acc, scale, softcap, HAS_SOFTCAP: tl.constexpr):
    """q [rows, D], k and v [keys, D], seen [rows or 1, keys]: returns the new (m, l, acc)."""
    s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
    if HAS_SOFTCAP:
        s = softcap * tanh(s / softcap)
    s = tl.where(seen, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m - m_safe)
    l = l * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
    return m_new, l, acc
