"""WKV-4 as a parallel prefix scan in plain torch: the CPU path.

The recurrence is linear with a constant per-channel decay, so the state after a stretch
of tokens is a sum that composes: a stretch of n tokens summarised as (a, b, p), meaning
A = a e^p = sum_j e^((last - j) w + k_j) v_j (and B likewise without v), followed by
another stretch of n' tokens, gives A = A_1 e^(n' w) + A_2. That is associative, so a
Hillis-Steele scan finds every token's state in log2(T) vectorised steps instead of T
small ones: on a CPU, where a per-token loop is all interpreter overhead, that is the
difference between seconds and tens of milliseconds. The exponents are stabilised by
their running maximum exactly as in the sequential form (see naive.py).
"""

from __future__ import annotations

import torch

from kernels.wkv4.naive import compute_dtype, zero_state


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
    # each token alone: A = e^k v, B = e^k
    a, b, p = vf, torch.ones_like(vf), kf
    off = 1
    while off < T:
        # the stretch ending at t (length off) preceded by the one ending at t - off
        na, nb, np_ = combine(a[:, :-off], b[:, :-off], p[:, :-off], a[:, off:], b[:, off:], p[:, off:], off * w)
        a = torch.cat([a[:, :off], na], 1)
        b = torch.cat([b[:, :off], nb], 1)
        p = torch.cat([p[:, :off], np_], 1)
        off *= 2
    # bring in the incoming state: after token t it has decayed t + 1 steps
    steps = torch.arange(1, T + 1, device=k.device, dtype=dt)[None, :, None]
    a, b, p = combine(a0[:, None], b0[:, None], p0[:, None], a, b, p, steps * w)
    # y_t reads the state before token t, plus token t with the bonus u
    pa = torch.cat([a0[:, None], a[:, :-1]], 1)
    pb = torch.cat([b0[:, None], b[:, :-1]], 1)
    pp = torch.cat([p0[:, None], p[:, :-1]], 1)
    ya, yb, _ = combine(pa, pb, pp, vf, torch.ones_like(vf), u + kf, 0.0)
    y = ya / yb
    if r is not None:
        y = torch.sigmoid(r.to(dt)) * y
    return y.to(v.dtype), (a[:, -1].contiguous(), b[:, -1].contiguous(), p[:, -1].contiguous())
