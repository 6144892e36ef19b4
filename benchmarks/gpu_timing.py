"""What the GPU benchmark scripts share: their common options and device choice, medians
over CUDA events, the device's copy bandwidth (the roof a memory-bound kernel is judged
against), relative error."""

from __future__ import annotations

import argparse
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


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU through the Triton interpreter")
    ap.add_argument("--skip-e2e", action="store_true")
    return ap


def device(args) -> torch.device:
    """The GPU; the CPU only for --smoke, which checks a script, not a figure."""
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("no GPU here: GPU figures count only when measured on one (try --smoke to check the script)")
    return torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
