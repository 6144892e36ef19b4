"""Rotary position embedding in the HF / NeoX layout, the specification: each head's two
halves (a, b) become (a cos - b sin, b cos + a sin), with cos and sin of position times
inverse frequency base^(-2i/d). The tables take the frequencies themselves, because
models stretch them past their trained context (linear, Llama 3, YaRN) and Gemma 3 gives
local and global layers different bases."""

from __future__ import annotations

import torch


def inv_freq(head_dim: int, base: float, device=None) -> torch.Tensor:
    """base^(-2i/d) for i < d/2, in float32 as HF computes it."""
    return 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)


def rope_tables(pos: torch.Tensor, freq: torch.Tensor, dtype, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, head_dim] for positions [B, T] and inverse frequencies [head_dim / 2];
    ``scale`` multiplies both (YaRN's attention factor)."""
    ang = pos.float()[..., None] * freq.to(pos.device)
    ang = torch.cat([ang, ang], dim=-1)[:, None]
    cos, sin = ang.cos(), ang.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), sin.to(dtype)


def rope_naive(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D]; cos, sin [B, 1, T, D]."""
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-b, a], dim=-1) * sin
