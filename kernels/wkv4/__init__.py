"""WKV-4: the time-mixing operator of RWKV-4.

- ``naive.py``: the sequential, stabilised recurrence: the specification;
- ``scan.py``: the same as a parallel prefix scan in torch: the CPU path;
- ``fused_recurrent.py``: Triton: one pass per channel block (``wkv4_fused_recurrent``),
  and segment-parallel for long sequences at small batch (``wkv4_split``).

``wkv4`` picks among them. Every variant takes w (already -exp(time_decay)), u, k and v
of shape [B, T, C], an optional state (a, b, p) and an optional receptance r, and returns
y (times sigmoid(r) when r is given) and the state after the last token.
"""

from __future__ import annotations

import functools

import torch

from conclave.kernels.wkv4.naive import EMPTY_P, wkv4_naive, zero_state
from conclave.kernels.wkv4.scan import wkv4_scan

IMPLS = ("naive", "scan", "fused_recurrent", "split")


def _triton(name: str):
    from conclave.kernels.wkv4 import fused_recurrent

    return getattr(fused_recurrent, f"wkv4_{name}")


def choose(k: torch.Tensor) -> str:
    B, T, C = k.shape
    if not k.is_cuda:
        return "naive" if T == 1 else "scan"
    # one program per 128 channels: below a few programs per SM the GPU idles, so split time
    programs = B * -(-C // 128)
    return "split" if T >= 512 and programs < 4 * _sm_count(k.device.index) else "fused_recurrent"


@functools.cache
def _sm_count(device: int | None) -> int:
    """Streaming multiprocessors of a GPU: asked once, not on every decode step."""
    return torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device()).multi_processor_count


def wkv4(w, u, k, v, state=None, r=None, *, impl: str | None = None):
    impl = impl or choose(k)
    if impl == "naive":
        return wkv4_naive(w, u, k, v, state, r)
    if impl == "scan":
        return wkv4_scan(w, u, k, v, state, r)
    if impl in ("fused_recurrent", "split"):
        return _triton(impl)(w, u, k, v, state, r)
    raise ValueError(f"unknown wkv4 implementation {impl!r}; choose one of {', '.join(IMPLS)}")


__all__ = ["EMPTY_P", "IMPLS", "choose", "wkv4", "wkv4_naive", "wkv4_scan", "zero_state"]
