"""WKV-4 as a blocked parallel scan in plain torch: the CPU path.

The recurrence is linear with a constant per-channel decay, so a stretch of tokens has a
summary that composes: n tokens summarised as (a, b, p), meaning
A = a e^p = sum_j e^((last - j) w + k_j) v_j (and B likewise without v), followed by n'
more, give A = A_1 e^(n' w) + A_2. On a CPU a per-token loop is all interpreter overhead,
so the sequence is cut into chunks of ``CHUNK`` tokens and:

1. within every chunk at once, a Hillis-Steele scan (log2 CHUNK vectorised steps) gives
   each token the summary of its chunk up to and including it;
2. a short loop over the chunks carries the state from one chunk to the next;
3. each token's state before it is the carry into its chunk followed by the tokens of the
   chunk before it; its output adds the token itself with the bonus u.

Every combination is stabilised by the running maximum exponent exactly as in the
sequential form (see naive.py).
"""

from __future__ import annotations

import torch

from conclave.kernels.wkv4.naive import EMPTY_P, compute_dtype, zero_state

CHUNK = 16


def combine(a1, b1, p1, a2, b2, p2, decay):
    """The stretch (a1, b1, p1) followed by (a2, b2, p2); ``decay`` is w times the second's length."""
    p1 = p1 + decay
    p = torch.maximum(p1, p2)
    e1, e2 = torch.exp(p1 - p), torch.exp(p2 - p)
    return e1 * a1 + e2 * a2, e1 * b1 + e2 * b2, p


def wkv4_scan(w, u, k, v, state=None, r=None):
    """Same contract as ``wkv4_naive``."""
    B, T, C = k.shape
    dt = compute_dtype(w, u, k, v, *(state or ()))
    w, u = w.to(dt), u.to(dt)
    kf, vf = k.to(dt), v.to(dt)
    a0, b0, p0 = zero_state(B, C, device=k.device, dtype=dt) if state is None else (s.to(dt) for s in state)
    L = min(CHUNK, T)
    N = -(-T // L)
    # each token alone: A = e^k v, B = e^k; padding tokens stand for nothing. These are
    # our own buffers, updated in place below.
    a, b = vf.new_zeros(B, N * L, C), vf.new_zeros(B, N * L, C)
    p = vf.new_full((B, N * L, C), EMPTY_P)
    a[:, :T], b[:, :T], p[:, :T] = vf, 1.0, kf
    a, b, p = (x.view(B, N, L, C) for x in (a, b, p))
    off = 1
    while off < L:  # 1. within chunks; the new values are computed before any is written
        a[:, :, off:], b[:, :, off:], p[:, :, off:] = combine(
            a[:, :, :-off], b[:, :, :-off], p[:, :, :-off], a[:, :, off:], b[:, :, off:], p[:, :, off:], off * w)
        off *= 2
    carry = [(a0, b0, p0)]  # 2. across chunks
    for c in range(N - 1):
        carry.append(combine(*carry[-1], a[:, c, -1], b[:, c, -1], p[:, c, -1], L * w))
    ca, cb, cp = (torch.stack(x, 1)[:, :, None] for x in zip(*carry))
    # 3. the chunk's tokens before each one (none for the first), after the carry
    ea = torch.cat([torch.zeros_like(a[:, :, :1]), a[:, :, :-1]], 2)
    eb = torch.cat([torch.zeros_like(b[:, :, :1]), b[:, :, :-1]], 2)
    ep = torch.cat([torch.full_like(p[:, :, :1], EMPTY_P), p[:, :, :-1]], 2)
    steps = torch.arange(L, device=k.device, dtype=dt)[:, None]  # tokens since the chunk began
    steps = torch.where(steps == 0, 0.0, steps * w)  # [L, C]; 0 * w is NaN where w = -inf
    sa, sb, sp = combine(ca, cb, cp, ea, eb, ep, steps)
    sa, sb, sp = (x.reshape(B, N * L, C)[:, :T] for x in (sa, sb, sp))
    ya, yb, _ = combine(sa, sb, sp, vf, torch.ones_like(vf), u + kf, 0.0)
    y = ya / yb
    if r is not None:
        y = torch.sigmoid(r.to(dt)) * y
    # the state after the last token: the carry into its chunk, then its chunk up to it
    last, n_last = N - 1, T - (N - 1) * L
    end = combine(ca[:, last, 0], cb[:, last, 0], cp[:, last, 0],
                  a[:, last, n_last - 1], b[:, last, n_last - 1], p[:, last, n_last - 1], n_last * w)
    return y.to(v.dtype), tuple(x.contiguous() for x in end)
