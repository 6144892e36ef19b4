"""Attention by positions, the specification for our attention kernels.

Every query and every key carries its position in the sequence. A query at position i sees
a key at position j when j <= i, and, with a sliding window W, when j > i - W (exactly W
keys, the HF / vLLM convention); keys at position -1 are empty cells. Positions rather
than indices express at once: causal attention, the window, a prefill chunk attending to
the cached keys before its own (bottom-right alignment), and a ring buffer whose cells are
not in position order. Query heads share KV heads in groups (GQA).
"""

from __future__ import annotations

import torch


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[B, Tq, Tk]: which keys each query sees."""
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]
    seen = (kp >= 0) & (kp <= qp)
    if window:
        seen &= kp > qp - window
    return seen


def ring_positions(length: torch.Tensor, cells: int) -> torch.Tensor:
    """[B, cells]: the position each cell of a buffer holds after ``length`` [B] tokens were
    written, position j into cell j mod cells; -1 marks a cell not yet written. A buffer as
    long as the sequence is the case that never wraps."""
    s = torch.arange(cells, device=length.device)
    n = length[:, None]
    return torch.where(s < n, s + cells * torch.div(n - 1 - s, cells, rounding_mode="floor"), -1)


def attention_naive(q, k, v, q_pos, k_pos, *, scale: float, window: int | None = None, softcap: float | None = None):
    """q [B, Hq, Tq, D]; k, v [B, Hkv, Tk, D]; q_pos [B, Tq], k_pos [B, Tk] -> [B, Hq, Tq, D]."""
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1).to(dt), v.repeat_interleave(groups, 1).to(dt)
    s = (q.to(dt) @ k.transpose(-1, -2)) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    s = s.masked_fill(~visible(q_pos, k_pos, window)[:, None], float("-inf"))
    return (torch.softmax(s, -1) @ v).to(q.dtype)


def decode_naive(q, k_cache, v_cache, slots, pos, *, scale: float, window: int | None = None, softcap: float | None = None):
    """One new query per sequence over its slot of a KV cache whose cells are a ring.

    q [B, Hq, D]; k_cache, v_cache [slots, Hkv, cells, D]; ``slots`` [B] picks each
    sequence's cache, ``pos`` [B] is the query's position, whose key is already written
    (cell pos mod cells). Returns [B, Hq, D]."""
    k_pos = ring_positions(pos + 1, k_cache.shape[2])
    out = attention_naive(q[:, :, None], k_cache[slots], v_cache[slots], pos[:, None], k_pos,
                          scale=scale, window=window, softcap=softcap)
    return out[:, :, 0]
