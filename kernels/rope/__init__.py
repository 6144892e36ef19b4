"""RoPE: ``naive.py`` (the specification, and the CPU path) and ``fused.py`` (Triton)."""

from __future__ import annotations

from conclave.kernels.rope.naive import inv_freq, rope_naive, rope_tables


def rope(x, cos, sin):
    if x.is_cuda:
        from conclave.kernels.rope.fused import rope_fused

        return rope_fused(x, cos, sin)
    return rope_naive(x, cos, sin)


__all__ = ["inv_freq", "rope", "rope_naive", "rope_tables"]
