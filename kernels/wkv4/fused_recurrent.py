"""WKV-4 in Triton: the stabilised recurrence, one program per block of channels.

``_recurrent`` walks a stretch of tokens for a block of channels, holding (a, b, p) in
registers. It reads its starting state and writes only its final state: never a state
per token, as a training kernel would. With one stretch covering the sequence it is the
fused recurrent kernel, the right shape when batch x channels fills the GPU. With the
sequence split into segments it is half of ``wkv4_split`` below, for long sequences at
small batch, where one program per channel leaves most of the GPU idle:

1. every segment, from the zero state, finds its own summary (a, b, p), all in parallel;
2. ``_carry`` runs over the segments in order, turning summaries into the state each
   segment starts from (the same combine as scan.py: A = A_1 e^(n w) + A_2);
3. every segment runs again from its true starting state and writes its outputs.

That reads k and v twice but puts segments x channels programs to work.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from conclave.kernels.wkv4.naive import EMPTY_P


@triton.jit
def _recurrent(
    w_ptr, u_ptr, k_ptr, v_ptr, r_ptr, y_ptr,
    a_in, b_in, p_in, a_out, b_out, p_out,
    T, C, seg_len,
    HAS_R: tl.constexpr, WRITE_Y: tl.constexpr, BLOCK_C: tl.constexpr,
):
    bid, sid, cid = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)  # B*T*C can pass 2^31
    n_seg = tl.num_programs(1)
    cs = cid * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = cs < C
    w = tl.load(w_ptr + cs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + cs, mask=mask, other=0.0).to(tl.float32)
    st = (bid * n_seg + sid) * C + cs  # states are [B, n_seg, C]
    a = tl.load(a_in + st, mask=mask, other=0.0)
    b = tl.load(b_in + st, mask=mask, other=0.0)
    p = tl.load(p_in + st, mask=mask, other=EMPTY_P)
    t0 = sid * seg_len
    t1 = tl.minimum(t0 + seg_len, T)
    for t in range(t0, t1):
        off = (bid * T + t) * C + cs
        kt = tl.load(k_ptr + off, mask=mask, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if WRITE_Y:
            uk = u + kt
            q = tl.maximum(p, uk)
            e1 = tl.exp(p - q)
            e2 = tl.exp(uk - q)
            y = (e1 * a + e2 * vt) / (e1 * b + e2)
            if HAS_R:
                rt = tl.load(r_ptr + off, mask=mask, other=0.0).to(tl.float32)
                y = y * tl.sigmoid(rt)
            tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)
        pw = p + w
        q = tl.maximum(pw, kt)
        e1 = tl.exp(pw - q)
        e2 = tl.exp(kt - q)
        a = e1 * a + e2 * vt
        b = e1 * b + e2
        p = q
    tl.store(a_out + st, a, mask=mask)
    tl.store(b_out + st, b, mask=mask)
    tl.store(p_out + st, p, mask=mask)


@triton.jit
def _carry(
    w_ptr, a0, b0, p0, a_seg, b_seg, p_seg, a_start, b_start, p_start, a_end, b_end, p_end,
    T, C, seg_len, n_seg, BLOCK_C: tl.constexpr,
):
    bid, cid = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cs = cid * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = cs < C
    w = tl.load(w_ptr + cs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a0 + bid * C + cs, mask=mask, other=0.0)
    b = tl.load(b0 + bid * C + cs, mask=mask, other=0.0)
    p = tl.load(p0 + bid * C + cs, mask=mask, other=EMPTY_P)
    for s in range(n_seg):
        st = (bid * n_seg + s) * C + cs
        tl.store(a_start + st, a, mask=mask)
        tl.store(b_start + st, b, mask=mask)
        tl.store(p_start + st, p, mask=mask)
        n = tl.minimum(seg_len, T - s * seg_len)
        sa = tl.load(a_seg + st, mask=mask, other=0.0)
        sb = tl.load(b_seg + st, mask=mask, other=0.0)
        sp = tl.load(p_seg + st, mask=mask, other=EMPTY_P)
        pd = p + n * w
        q = tl.maximum(pd, sp)
        e1 = tl.exp(pd - q)
        e2 = tl.exp(sp - q)
        a = e1 * a + e2 * sa
        b = e1 * b + e2 * sb
        p = q
    tl.store(a_end + bid * C + cs, a, mask=mask)
    tl.store(b_end + bid * C + cs, b, mask=mask)
    tl.store(p_end + bid * C + cs, p, mask=mask)


def _prepare(w, u, k, v, state, r):
    B, T, C = k.shape
    if v.shape != k.shape or (r is not None and r.shape != k.shape) or w.shape != (C,) or u.shape != (C,):
        raise ValueError(f"wkv4: k {tuple(k.shape)}, v {tuple(v.shape)}, w {tuple(w.shape)}, u {tuple(u.shape)} do not agree")
    k, v = k.contiguous(), v.contiguous()
    r = r.contiguous() if r is not None else k  # a dummy pointer when HAS_R is off
    if state is None:
        a = torch.zeros(B, C, device=k.device, dtype=torch.float32)
        state = (a, a.clone(), torch.full_like(a, EMPTY_P))
    if any(s.shape != (B, C) or s.device != k.device for s in state):
        raise ValueError(f"wkv4: the state must be three [{B}, {C}] tensors on {k.device}")
    state = tuple(s.to(torch.float32).contiguous() for s in state)
    return B, T, C, w.float().contiguous(), u.float().contiguous(), k, v, r, state


def wkv4_fused_recurrent(w, u, k, v, state=None, r=None, *, block_c: int = 128, num_warps: int = 4):
    """Same contract as ``wkv4_naive``; the state is always float32."""
    B, T, C, w, u, k, v, rr, (a, b, p) = _prepare(w, u, k, v, state, r)
    y = torch.empty_like(v)
    out = tuple(torch.empty_like(a) for _ in range(3))
    grid = (B, 1, triton.cdiv(C, block_c))
    _recurrent[grid](w, u, k, v, rr, y, a, b, p, *out, T, C, max(T, 1),
                     HAS_R=r is not None, WRITE_Y=True, BLOCK_C=block_c, num_warps=num_warps)
    return y, out


def wkv4_split(w, u, k, v, state=None, r=None, *, seg_len: int = 128, block_c: int = 128, num_warps: int = 4):
    """Same contract as ``wkv4_naive``, parallel over segments of ``seg_len`` tokens."""
    B, T, C, w, u, k, v, rr, (a0, b0, p0) = _prepare(w, u, k, v, state, r)
    n_seg = max(triton.cdiv(T, seg_len), 1)
    shape = (B, n_seg, C)
    zero = torch.zeros(shape, device=k.device, dtype=torch.float32)
    empty = (zero, zero, torch.full_like(zero, EMPTY_P))
    seg = tuple(torch.empty(shape, device=k.device, dtype=torch.float32) for _ in range(3))
    start = tuple(torch.empty(shape, device=k.device, dtype=torch.float32) for _ in range(3))
    end = tuple(torch.empty_like(a0) for _ in range(3))
    y = torch.empty_like(v)
    blocks = triton.cdiv(C, block_c)
    _recurrent[(B, n_seg, blocks)](w, u, k, v, rr, y, *empty, *seg, T, C, seg_len,
                                   HAS_R=False, WRITE_Y=False, BLOCK_C=block_c, num_warps=num_warps)
    _carry[(B, blocks)](w, a0, b0, p0, *seg, *start, *end, T, C, seg_len, n_seg, BLOCK_C=block_c, num_warps=num_warps)
    _recurrent[(B, n_seg, blocks)](w, u, k, v, rr, y, *start, *seg, T, C, seg_len,
                                   HAS_R=r is not None, WRITE_Y=True, BLOCK_C=block_c, num_warps=num_warps)
    return y, end
