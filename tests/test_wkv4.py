"""WKV-4 kernels against the float64 sequential reference (relative L2 error).

Triton runs through its interpreter on the CPU (tiny shapes), on the GPU at real shapes
when there is one."""

import importlib.util

import pytest
import torch

from conclave.kernels.wkv4 import choose, wkv4, wkv4_naive, wkv4_scan

CUDA = torch.cuda.is_available()
# the torch paths are tested everywhere; Triton's wherever it is installed (without a GPU,
# conftest.py turns on its interpreter)
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def rel(out, ref) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def inputs(B, T, C, *, k_scale=1.0, seed=0, device="cpu", dtype=torch.float64, with_state=True):
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.randn(C, generator=g, dtype=torch.float64) * 2)  # decays from ~e^-0.02 to ~e^-50 per step
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k, v, r = (torch.randn(B, T, C, generator=g, dtype=torch.float64) for _ in range(3))
    k = k * k_scale
    state = None
    if with_state:  # a state from real tokens, so that its exponents are realistic
        warm = torch.randn(B, 9, C, generator=g, dtype=torch.float64) * k_scale
        state = wkv4_naive(w, u, warm, torch.randn(B, 9, C, generator=g, dtype=torch.float64))[1]
    to = lambda x: x.to(device, dtype)  # noqa: E731
    return to(w), to(u), to(k), to(v), tuple(map(to, state)) if state else None, to(r)


def true_state(s):
    """(a, b, p) -> (A, B): the stabilised form is not unique, its meaning is."""
    a, b, p = (x.double() for x in s)
    return torch.stack([a * torch.exp(p), b * torch.exp(p)])


def check(fn, B, T, C, *, k_scale=1.0, gate=True, tol=2e-5, dtype=torch.float32, device="cpu", **kw):
    w, u, k, v, state, r = inputs(B, T, C, k_scale=k_scale)
    ref_y, ref_s = wkv4_naive(w, u, k, v, state, r if gate else None)
    cast = lambda x: x.to(device, dtype)  # noqa: E731
    state_in = tuple(x.to(device, torch.float32) for x in state)
    y, s = fn(w.to(device, torch.float32), u.to(device, torch.float32), cast(k), cast(v), state_in,
              cast(r) if gate else None, **kw)
    assert y.dtype == dtype and y.shape == (B, T, C)
    assert rel(y.cpu(), ref_y) < tol
    # p reaches ~175 with k = +-60, where float32 rounds it by ~1e-5 and e^p turns that into
    # relative error: the float32 sequential recurrence itself is off by up to 1e-3 there
    state_tol = max(tol, 1e-4) if k_scale > 20 else tol
    assert rel(true_state([x.cpu() for x in s]), true_state(ref_s)) < state_tol
    # the inputs are left as they were
    assert torch.equal(state_in[0].cpu(), state[0].float())


@pytest.mark.parametrize("B,T,C,k_scale", [(2, 37, 16, 1.0), (1, 300, 8, 60.0), (3, 5, 4, 20.0), (2, 1, 8, 1.0)])
def test_scan_matches_the_recurrence(B, T, C, k_scale):
    check(wkv4_scan, B, T, C, k_scale=k_scale)


def test_scan_without_a_state_or_gate_and_in_float64():
    w, u, k, v, _, _ = inputs(2, 50, 12)
    y, s = wkv4_scan(w, u, k, v)
    ref_y, ref_s = wkv4_naive(w, u, k, v)
    assert y.dtype == torch.float64
    assert rel(y, ref_y) < 1e-12 and rel(true_state(s), true_state(ref_s)) < 1e-12


def test_long_sequences_with_large_keys_do_not_overflow():
    """k = +-60 would overflow e^k in float32 without the running-max trick."""
    w, u, k, v, state, r = inputs(1, 2000, 8, k_scale=60.0)
    y, s = wkv4_scan(w.float(), u.float(), k.float(), v.float(), tuple(x.float() for x in state), r.float())
    assert torch.isfinite(y).all() and all(torch.isfinite(x).all() for x in s)
    ref_y, _ = wkv4_naive(w, u, k, v, state, r)
    assert rel(y, ref_y) < 2e-5


def test_extreme_decays_stay_finite():
    """w = -inf (a channel that forgets at once) and w = -0 (one that never forgets)."""
    w, u, k, v, state, r = inputs(2, 40, 6)
    w[0], w[1] = -torch.inf, -0.0
    ref_y, ref_s = wkv4_naive(w, u, k, v, state, r)
    y, s = wkv4_scan(w, u, k, v, state, r)
    assert torch.isfinite(y).all() and rel(y, ref_y) < 1e-12
    assert rel(true_state(s), true_state(ref_s)) < 1e-12


@needs_triton
@pytest.mark.parametrize("B,T,C,block_c", [(2, 13, 40, 16), (1, 24, 8, 8), (3, 1, 5, 8)])
def test_triton_fused_recurrent(B, T, C, block_c):
    from conclave.kernels.wkv4.fused_recurrent import wkv4_fused_recurrent

    check(wkv4_fused_recurrent, B, T, C, k_scale=30.0, block_c=block_c)
    check(wkv4_fused_recurrent, B, T, C, gate=False, block_c=block_c)


@needs_triton
@pytest.mark.parametrize("B,T,C,seg_len", [(1, 23, 8, 4), (2, 16, 12, 8), (1, 3, 4, 8)])
def test_triton_split_over_time(B, T, C, seg_len):
    from conclave.kernels.wkv4.fused_recurrent import wkv4_split

    check(wkv4_split, B, T, C, k_scale=30.0, seg_len=seg_len, block_c=8)


@needs_triton
def test_triton_takes_bfloat16_inputs():
    from conclave.kernels.wkv4.fused_recurrent import wkv4_fused_recurrent, wkv4_split

    # the reference sees the same rounded inputs, so only the kernel's arithmetic and the
    # bfloat16 output rounding (2^-8) are measured
    check(wkv4_fused_recurrent, 2, 9, 16, dtype=torch.bfloat16, tol=8e-3, block_c=8)
    check(wkv4_split, 1, 17, 8, dtype=torch.bfloat16, tol=8e-3, seg_len=4, block_c=8)


def test_dispatch_on_the_cpu():
    k = torch.zeros(1, 1, 4)
    assert choose(k) == "naive"
    assert choose(torch.zeros(1, 2, 4)) == "scan"
    with pytest.raises(ValueError, match="unknown wkv4 implementation"):
        wkv4(torch.zeros(4), torch.zeros(4), k, k, impl="cuda")


@needs_triton
def test_mismatched_shapes_are_refused():
    from conclave.kernels.wkv4.fused_recurrent import wkv4_fused_recurrent

    k = torch.zeros(1, 3, 8)
    with pytest.raises(ValueError, match="do not agree"):
        wkv4_fused_recurrent(torch.zeros(4), torch.zeros(8), k, k)


@pytest.mark.skipif(not CUDA, reason="real shapes need a GPU")
@pytest.mark.parametrize("impl", ["fused_recurrent", "split"])
@pytest.mark.parametrize("B,T,C", [(8, 1024, 512), (1, 8192, 256), (64, 128, 256)])
def test_real_shapes_on_the_gpu(impl, B, T, C):
    w, u, k, v, state, r = inputs(B, T, C, k_scale=5.0)
    ref_y, ref_s = wkv4_naive(*(x.cuda() for x in (w, u, k, v)), tuple(x.cuda() for x in state), r.cuda())
    y, s = wkv4(w.float().cuda(), u.float().cuda(), k.float().cuda(), v.float().cuda(),
                tuple(x.float().cuda() for x in state), r.float().cuda(), impl=impl)
    assert rel(y, ref_y) < 1e-5
    assert rel(true_state(s), true_state(ref_s)) < 1e-5
