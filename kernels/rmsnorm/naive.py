"""RMSNorm, the specification: x / sqrt(mean(x^2) + eps) * weight, computed in float32
(or float64 for float64 inputs) and returned in x's dtype. With ``residual``, the sum
x + residual is normalised and returned beside the result, as a decoder layer needs it."""

from __future__ import annotations

import torch


def rms_norm_naive(x, weight, eps: float, residual=None):
    h = x if residual is None else x + residual
    dt = torch.float64 if h.dtype == torch.float64 else torch.float32
    hf = h.to(dt)
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(dt)).to(x.dtype)
    return y if residual is None else (y, h)
