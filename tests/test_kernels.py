"""RMSNorm and RoPE kernels against their float64 references (relative L2 error); Triton
through its interpreter without a GPU (conftest.py), at real shapes with one."""

import importlib.util

import pytest
import torch

from kernels.rmsnorm import rms_norm, rms_norm_naive
from kernels.attention import attention_naive
from kernels.rope import rope, rope_naive, rope_tables

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(out, ref) -> float:
    return ((out.double().cpu() - ref.double().cpu()).norm() / ref.double().cpu().norm()).item()


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("shape", [(3, 5, 40), (2, 576), (1, 1, 7)])
def test_rms_norm_fused(shape, dtype, tol):
    from kernels.rmsnorm.fused import rms_norm_fused

    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(2))
    w = 1 + torch.randn(shape[-1], generator=g, dtype=torch.float64) * 0.2
    ref = rms_norm_naive(x, w, 1e-6)
    ref_y, ref_h = rms_norm_naive(x, w, 1e-6, residual=r)
    x_, r_, w_ = (t.to(DEV, dtype) for t in (x, r, w))
    assert rel(rms_norm_fused(x_, w_, 1e-6), ref) < tol
    y, h = rms_norm_fused(x_, w_, 1e-6, residual=r_)
    assert rel(y, ref_y) < tol and rel(h, ref_h) < tol and y.dtype == dtype


def test_rms_norm_dispatch_matches_the_specification():
    x, r = torch.randn(4, 64), torch.randn(4, 64)
    w = torch.rand(64) + 0.5
    assert rel(rms_norm(x, w, 1e-5), rms_norm_naive(x.double(), w.double(), 1e-5)) < 1e-6
    y, h = rms_norm(x, w, 1e-5, residual=r)
    assert torch.equal(h, x + r) and rel(y, rms_norm_naive(h.double(), w.double(), 1e-5)) < 1e-6


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("B,H,T,D,base", [(2, 3, 5, 16, 10000.0), (1, 4, 9, 64, 1e6), (3, 1, 1, 8, 500.0)])
def test_rope_fused(B, H, T, D, base, dtype, tol):
    from kernels.rope.fused import rope_fused

    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 5000, (B, T), generator=g)
    cos, sin = rope_tables(pos, D, base, torch.float64)
    ref = rope_naive(x, cos, sin)
    out = rope_fused(x.to(DEV, dtype), cos.to(DEV, dtype), sin.to(DEV, dtype))
    assert rel(out, ref) < tol and out.dtype == dtype


def test_rope_keeps_norms_and_relative_positions():
    """A rotation: lengths are kept, and q.k depends only on the distance between positions
    (up to the angles, which are float32 as in HF: ~1e-5 at position 100)."""
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64) for _ in range(2))

    def at(x, p):
        return rope(x, *rope_tables(torch.tensor([[p]]), 32, 10000.0, torch.float64))

    torch.testing.assert_close(at(q, 7).norm(), q.norm())
    torch.testing.assert_close((at(q, 10) * at(k, 3)).sum(), (at(q, 107) * at(k, 100)).sum(), atol=1e-4, rtol=1e-4)


def _attention_case(B, Hq, Hkv, cached, T, D, ring: int | None, seed=0):
    """A prefill chunk of T queries after ``cached`` keys; with ``ring``, the cached keys sit
    in a ring of that many cells (position j in cell j % ring), as the KV cache keeps them."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
    n_cells = min(cached, ring) if ring else cached
    k, v = (torch.randn(B, Hkv, n_cells + T, D, generator=g, dtype=torch.float64) for _ in range(2))
    cells = torch.arange(n_cells)
    if ring and cached > ring:
        cells = cells + ring * ((cached - 1 - cells) // ring)
    k_pos = torch.cat([cells, torch.arange(cached, cached + T)]).expand(B, -1)
    q_pos = torch.arange(cached, cached + T).expand(B, -1)
    return q, k, v, q_pos, k_pos


def test_attention_reference_agrees_with_torch_sdpa():
    q, k, v, q_pos, k_pos = _attention_case(2, 4, 2, 0, 12, 8, None)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert rel(attention_naive(q, k, v, q_pos, k_pos, scale=8 ** -0.5), ref) < 1e-12


@needs_triton
@pytest.mark.parametrize("dtype,tol", [
    (torch.float32, 2e-6),
    # Triton's CPU interpreter returns garbage for bfloat16 tl.dot (values ~1e8): GPU only
    pytest.param(torch.bfloat16, 2e-2, marks=pytest.mark.skipif(DEV == "cpu", reason="bf16 dot needs a GPU")),
])
@pytest.mark.parametrize("case", [
    dict(B=1, Hq=4, Hkv=4, cached=0, T=20, D=16, ring=None, window=None),  # causal
    dict(B=2, Hq=4, Hkv=2, cached=0, T=37, D=32, ring=None, window=8),  # sliding window, GQA
    dict(B=1, Hq=6, Hkv=2, cached=25, T=11, D=16, ring=None, window=None),  # a chunk after cached keys
    dict(B=1, Hq=2, Hkv=1, cached=30, T=9, D=16, ring=12, window=12),  # after a ring buffer that wrapped
])
def test_prefill_attention_triton(case, dtype, tol):
    from kernels.attention.naive import attention_naive
    from kernels.attention.prefill import attention_prefill

    case = dict(case)
    window = case.pop("window")
    q, k, v, q_pos, k_pos = _attention_case(**case)
    ref = attention_naive(q, k, v, q_pos, k_pos, scale=q.shape[-1] ** -0.5, window=window)
    to = lambda t: t.to(DEV, dtype)  # noqa: E731
    out = attention_prefill(to(q), to(k), to(v), q_pos.to(DEV), k_pos.to(DEV), scale=q.shape[-1] ** -0.5,
                            window=window, block_m=16, block_n=16)
    assert out.dtype == dtype and rel(out, ref) < tol
