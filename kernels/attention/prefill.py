"""Prefill attention in Triton, flash-attention style: each program holds a block of
queries of one head and streams the keys block by block, keeping a running maximum, sum
and output (the online softmax), so the scores never reach memory. Masks come from
positions (see naive.py): causal, sliding window, cached keys before the chunk, ring
cells in any order. A query head reads KV head ``head // groups`` (GQA).

Work is spent only on keys some query of the block sees. Where the caller says the keys
from some index on are at consecutive positions (a prompt chunk always is), the loop over
them runs only from the window's start to the causal edge of the block: with a window W,
about W keys per query block, not the whole prefix. Keys in any order (the cached ring)
are checked block by block, and a block nobody sees is skipped before it is loaded."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from conclave.kernels.attention.online import online_update


@triton.jit
def _block(q, qp, m, l, acc, k_ptr, v_ptr, kpos_ptr, kv_base, kpos_base, cols, cmask, dims, dmask, D, scale, window,
           softcap, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """One block of keys into the running (max, sum, output) of a block of queries; skipped
    before its keys are loaded when no query sees any of them."""
    kp = tl.load(kpos_ptr + kpos_base + cols, mask=cmask, other=-1)
    seen = (kp[None, :] >= 0) & (kp[None, :] <= qp[:, None])
    if HAS_WINDOW:
        seen = seen & (kp[None, :] > qp[:, None] - window)
    if tl.max(tl.max(seen.to(tl.int32), axis=1), axis=0) > 0:
        kv_off = (kv_base + cols[:, None]) * D + dims[None, :]
        k = tl.load(k_ptr + kv_off, mask=cmask[:, None] & dmask[None, :], other=0.0)
        v = tl.load(v_ptr + kv_off, mask=cmask[:, None] & dmask[None, :], other=0.0)
        m, l, acc = online_update(q, k, v, seen, m, l, acc, scale, softcap, HAS_SOFTCAP)
    return m, l, acc


@triton.jit
def _prefill(q_ptr, k_ptr, v_ptr, o_ptr, qpos_ptr, kpos_ptr,
             Hq, Hkv, Tq, Tk, D, scale, window, softcap, ordered_from,
             HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    bh, mb = tl.program_id(0).to(tl.int64), tl.program_id(1)
    b, h = bh // Hq, bh % Hq
    hk = h // (Hq // Hkv)
    rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    rmask, dmask = rows < Tq, dims < D
    q = tl.load(q_ptr + ((b * Hq + h) * Tq + rows[:, None]) * D + dims[None, :],
                mask=rmask[:, None] & dmask[None, :], other=0.0)
    qp = tl.load(qpos_ptr + b * Tq + rows, mask=rmask, other=-1)
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    kv_base, kpos_base = (b * Hkv + hk) * Tk, b * Tk
    # keys in any order (cached ring cells): every block is checked
    for start in range(0, ordered_from, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        m, l, acc = _block(q, qp, m, l, acc, k_ptr, v_ptr, kpos_ptr, kv_base, kpos_base, cols, cols < ordered_from,
                           dims, dmask, D, scale, window, softcap, HAS_WINDOW, HAS_SOFTCAP)
    # keys at consecutive positions from ordered_from on: only the range these queries can see
    if ordered_from < Tk:
        p0 = tl.load(kpos_ptr + kpos_base + ordered_from)
        q_lo = tl.min(tl.where(rmask, qp, 2147483647), axis=0)
        q_hi = tl.max(qp, axis=0)
        first = ordered_from
        if HAS_WINDOW:
            first = ordered_from + tl.maximum(q_lo - window + 1 - p0, 0)
        last = tl.minimum(ordered_from + q_hi - p0 + 1, Tk)
        for start in range(first, last, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            m, l, acc = _block(q, qp, m, l, acc, k_ptr, v_ptr, kpos_ptr, kv_base, kpos_base, cols, cols < last,
                               dims, dmask, D, scale, window, softcap, HAS_WINDOW, HAS_SOFTCAP)
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    tl.store(o_ptr + ((b * Hq + h) * Tq + rows[:, None]) * D + dims[None, :], out.to(o_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


def attention_prefill(q, k, v, q_pos, k_pos, *, scale: float, window: int | None = None,
                      softcap: float | None = None, ordered_from: int | None = None, block_m: int = 64,
                      block_n: int = 64, num_warps: int = 4, num_stages: int = 2):
    """Same contract as ``attention_naive``. ``ordered_from``: the caller's word that keys
    from that index on sit at consecutive positions (a chunk after its cached keys, or a
    whole prompt: 0), so that each query block loops only over the keys it can see."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if Hq % Hkv or v.shape != k.shape or q_pos.shape != (B, Tq) or k_pos.shape != (B, Tk):
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, positions "
                         f"{tuple(q_pos.shape)}/{tuple(k_pos.shape)} do not agree")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(q)
    grid = (B * Hq, triton.cdiv(Tq, block_m))
    _prefill[grid](q, k, v, o, q_pos.to(torch.int32).contiguous(), k_pos.to(torch.int32).contiguous(),
                   Hq, Hkv, Tq, Tk, D, scale, window or 0, softcap or 0.0, Tk if ordered_from is None else ordered_from,
                   HAS_WINDOW=bool(window), HAS_SOFTCAP=bool(softcap),
                   BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)), num_warps=num_warps, num_stages=num_stages)
    return o
