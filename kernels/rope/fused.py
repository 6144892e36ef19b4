"""RoPE in Triton: one program per (batch, head, position) row, both halves at once."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope(x_ptr, cos_ptr, sin_ptr, y_ptr, H, T, D2: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # over B * H * T
    b = row // (H * T)
    t = row % T
    i = tl.arange(0, BLOCK)
    m = i < D2
    base = row * 2 * D2
    tab = (b * T + t) * 2 * D2  # cos/sin rows are [B, T, D]; both halves hold the same angles
    x1 = tl.load(x_ptr + base + i, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + base + D2 + i, mask=m, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + tab + i, mask=m, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + tab + i, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + base + i, (x1 * c - x2 * s).to(y_ptr.dtype.element_ty), mask=m)
    tl.store(y_ptr + base + D2 + i, (x2 * c + x1 * s).to(y_ptr.dtype.element_ty), mask=m)


def rope_fused(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Same contract as ``rope_naive``."""
    B, H, T, D = x.shape
    if cos.shape != (B, 1, T, D) or sin.shape != cos.shape or D % 2:
        raise ValueError(f"rope: x {tuple(x.shape)} and tables {tuple(cos.shape)} do not agree")
    x = x.contiguous()
    y = torch.empty_like(x)
    _rope[(B * H * T,)](x, cos.contiguous(), sin.contiguous(), y, H, T, D // 2, BLOCK=triton.next_power_of_2(D // 2))
    return y
