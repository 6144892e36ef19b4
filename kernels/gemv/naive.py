"""The specification: y = x @ W with W stored [in, out], computed in float64."""

from __future__ import annotations

import torch


def gemv_naive(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.double() @ w.double()).to(x.dtype)
