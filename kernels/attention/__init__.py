"""Attention over positions: ``naive.py`` (the specification) and ``prefill.py`` (Triton,
flash-attention style). Decode over a ring buffer with split-K is still to come."""

from kernels.attention.naive import attention_naive, visible

__all__ = ["attention_naive", "visible"]
