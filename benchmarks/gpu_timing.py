"""Timing for the GPU benchmark scripts: medians over CUDA events, the device's copy
bandwidth (the roof a memory-bound kernel is judged against), relative error."""

from __future__ import annotations

import time

import torch


def timed(fn, reps: int = 20) -> float:
    """Median seconds per call (CUDA events on a GPU; one timed call on the CPU)."""
    fn()
    if not torch.cuda.is_available():
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def rel(out, ref) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def copy_bandwidth(dev) -> float:
    """Device copy bandwidth (read + write bytes per second)."""
    n = (1 << 28) if dev.type == "cuda" else (1 << 20)
    a = torch.empty(n, device=dev)
    b = torch.empty_like(a)
    return 2 * a.numel() * 4 / timed(lambda: b.copy_(a))
