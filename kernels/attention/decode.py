"""Decode attention in Triton, split-K (flash-decoding): one new query per sequence over
its slot of the KV cache.

With one query per sequence there is little to share between programs but the keys, so
a program takes one KV head of one sequence, all the query heads of its group at once
(each key block is read once per group, not once per head), and one range of cells. The
ranges run in parallel, so a batch of one long cache still fills the GPU; each writes a
partial (max, sum, unnormalised output), and ``_combine`` merges them.

Cells form a ring (see naive.ring_positions): the cell s of a buffer of C cells holds the
newest position congruent to s that is at most the query's, so a full-length buffer, a
ring of W cells, and a wide buffer shared with a sliding-window layer all read the same.
The grid depends on the cache's shape only, never on the sequences' lengths: a decode
step keeps one launch shape and can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from conclave.kernels.attention.online import online_update


@triton.jit
def _split(q_ptr, k_ptr, v_ptr, o_ptr, m_ptr, l_ptr, slot_ptr, pos_ptr,
           Hq, Hkv, C, D, S, per_split, scale, window, softcap,
           GROUP: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
           BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    bh, sp = tl.program_id(0).to(tl.int64), tl.program_id(1)
    b, hk = bh // Hkv, bh % Hkv
    slot = tl.load(slot_ptr + b).to(tl.int64)
    n = tl.load(pos_ptr + b)
    g, dims = tl.arange(0, BLOCK_G), tl.arange(0, BLOCK_D)
    gmask, dmask = g < GROUP, dims < D
    heads = hk * GROUP + g
    q = tl.load(q_ptr + (b * Hq + heads[:, None]) * D + dims[None, :], mask=gmask[:, None] & dmask[None, :], other=0.0)
    lo = sp * per_split
    hi = tl.minimum(tl.minimum(lo + per_split, C), n + 1)  # cells past the query's position are empty
    if HAS_WINDOW:
        lo = tl.maximum(lo, tl.where(n < C, n - window + 1, 0))  # an unwrapped buffer: skip what the window left
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    base = (slot * Hkv + hk) * C
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        seen = cols < hi
        if HAS_WINDOW:
            kpos = cols + C * ((n - cols) // C)  # n - cols >= 0 on the cells in range
            seen = seen & (kpos > n - window)
        off = (base + cols[:, None]) * D + dims[None, :]
        k = tl.load(k_ptr + off, mask=seen[:, None] & dmask[None, :], other=0.0)
        v = tl.load(v_ptr + off, mask=seen[:, None] & dmask[None, :], other=0.0)
        m, l, acc = online_update(q, k, v, seen[None, :], m, l, acc, scale, softcap, HAS_SOFTCAP)
    part = (b * Hq + heads) * S + sp
    tl.store(m_ptr + part, m, mask=gmask)
    tl.store(l_ptr + part, l, mask=gmask)
    tl.store(o_ptr + part[:, None] * D + dims[None, :], acc, mask=gmask[:, None] & dmask[None, :])


@triton.jit
def _combine(o_ptr, m_ptr, l_ptr, out_ptr, D, S, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    sp, dims = tl.arange(0, BLOCK_S), tl.arange(0, BLOCK_D)
    smask, dmask = sp < S, dims < D
    m = tl.load(m_ptr + bh * S + sp, mask=smask, other=float("-inf"))
    l = tl.load(l_ptr + bh * S + sp, mask=smask, other=0.0)
    o = tl.load(o_ptr + (bh * S + sp[:, None]) * D + dims[None, :], mask=smask[:, None] & dmask[None, :], other=0.0)
    top = tl.max(m, axis=0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - tl.where(top == float("-inf"), 0.0, top)))
    total = tl.sum(w * l, axis=0)
    out = tl.sum(w[:, None] * o, axis=0) / tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + bh * D + dims, out.to(out_ptr.dtype.element_ty), mask=dmask)


@functools.cache
def _sm_count(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def splits_for(batch_heads: int, cells: int, block_n: int, device: torch.device) -> int:
    """Enough ranges that the grid covers every SM about twice, each at least one block."""
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else 4
    return max(1, min(triton.cdiv(2 * sms, batch_heads), triton.cdiv(cells, block_n)))


def attention_decode_split(q, k_cache, v_cache, slots, pos, *, scale: float, window: int | None = None,
                           softcap: float | None = None, splits: int | None = None, block_n: int = 64, num_warps: int = 4):
    """Same contract as ``decode_naive``: q [B, Hq, D]; caches [slots, Hkv, cells, D]."""
    B, Hq, D = q.shape
    _, Hkv, C, _ = k_cache.shape
    if Hq % Hkv or v_cache.shape != k_cache.shape or k_cache.shape[-1] != D or slots.shape != (B,) or pos.shape != (B,):
        raise ValueError(f"decode attention: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, slots "
                         f"{tuple(slots.shape)}, positions {tuple(pos.shape)} do not agree")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("decode attention reads the cache in place: it must be contiguous")
    S = splits or splits_for(B * Hkv, C, block_n, q.device)
    per_split = triton.cdiv(triton.cdiv(C, S), block_n) * block_n
    q = q.contiguous()
    parts_o = torch.empty(B, Hq, S, D, dtype=torch.float32, device=q.device)
    parts_m = torch.empty(B, Hq, S, dtype=torch.float32, device=q.device)
    parts_l = torch.empty(B, Hq, S, dtype=torch.float32, device=q.device)
    group = Hq // Hkv
    _split[(B * Hkv, S)](q, k_cache, v_cache, parts_o, parts_m, parts_l,
                         slots.to(torch.int32).contiguous(), pos.to(torch.int32).contiguous(),
                         Hq, Hkv, C, D, S, per_split, scale, window or 0, softcap or 0.0,
                         GROUP=group, HAS_WINDOW=bool(window), HAS_SOFTCAP=bool(softcap),
                         BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n,
                         BLOCK_D=max(16, triton.next_power_of_2(D)), num_warps=num_warps)
    out = torch.empty_like(q)
    _combine[(B * Hq,)](parts_o, parts_m, parts_l, out, D, S,
                        BLOCK_S=max(2, triton.next_power_of_2(S)), BLOCK_D=max(16, triton.next_power_of_2(D)))
    return out
