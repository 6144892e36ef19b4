"""Rotary position embedding in the HF / NeoX layout, the specification: each head's two
halves (a, b) become (a cos - b sin, b cos + a sin), with cos and sin of position times
inverse frequency base^(-2i/d). The base is an argument because Gemma 3 gives local and
global layers different ones."""

from __future__ import annotations

import torch


def rope_tables(pos: torch.Tensor, head_dim: int, base: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, head_dim] for positions [B, T]."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    ang = pos.float()[..., None] * inv
    ang = torch.cat([ang, ang], dim=-1)[:, None]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope_naive(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D]; cos, sin [B, 1, T, D]."""
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-b, a], dim=-1) * sin
