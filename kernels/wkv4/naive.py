"""WKV-4, the time-mixing operator of RWKV-4 (Peng et al. 2023, eq. 14), as a plain loop.

This is the specification the kernels are tested against. For each channel, with decay
w < 0 (w = -exp(time_decay)) and bonus u:

    y_t = (A + e^(u+k_t) v_t) / (B + e^(u+k_t))
    A  <- e^w A + e^(k_t) v_t
    B  <- e^w B + e^(k_t)

A and B overflow for k of a few tens, so the state carries them scaled: (a, b, p) stands
for A = a e^p, B = b e^p, and every update takes out the running maximum exponent (the
p/o trick of the official kernels). The zero state has p = -1e38.
"""

from __future__ import annotations

import torch

EMPTY_P = -1e38  # the exponent of the zero state: e^(EMPTY_P - anything finite) is 0


def compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64 (the tests' references), else float32."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def zero_state(batch: int, channels: int, *, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    aa = torch.zeros(batch, channels, device=device, dtype=dtype)
    return aa, aa.clone(), torch.full_like(aa, EMPTY_P)


def wkv4_naive(w, u, k, v, state=None, r=None):
    """w, u: [C]; k, v (and r, if given): [B, T, C]; state: (a, b, p), each [B, C].

    Returns y [B, T, C] in v's dtype, sigmoid(r) * y when r is given (the receptance gate
    fused in), and the state after the last token. The inputs are left untouched."""
    B, T, C = k.shape
    dt = compute_dtype(w, u, k, v, *(state or ()))
    w, u = w.to(dt), u.to(dt)
    if state is None:
        a, b, p = zero_state(B, C, device=k.device, dtype=dt)
    else:
        a, b, p = (s.to(dt) for s in state)
    y = torch.empty(B, T, C, device=k.device, dtype=dt)
    for t in range(T):
        kt, vt = k[:, t].to(dt), v[:, t].to(dt)
        q = torch.maximum(p, u + kt)
        e1, e2 = torch.exp(p - q), torch.exp(u + kt - q)
        y[:, t] = (e1 * a + e2 * vt) / (e1 * b + e2)
        q = torch.maximum(p + w, kt)
        e1, e2 = torch.exp(p + w - q), torch.exp(kt - q)
        a, b, p = e1 * a + e2 * vt, e1 * b + e2, q
    if r is not None:
        y = torch.sigmoid(r.to(dt)) * y
    return y.to(v.dtype), (a, b, p)
