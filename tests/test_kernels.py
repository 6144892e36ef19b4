"""RMSNorm and RoPE kernels against their float64 references (relative L2 error); Triton
through its interpreter without a GPU (conftest.py), at real shapes with one."""

import importlib.util
import shutil

import pytest
import torch

from conclave.kernels.gemv import cpu as gemv_cpu
from conclave.kernels.rmsnorm import rms_norm, rms_norm_naive
from conclave.kernels.attention import attention_naive, decode_naive, ring_positions
from conclave.kernels.rope import inv_freq, rope, rope_naive, rope_tables

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel(out, ref) -> float:
    return ((out.double().cpu() - ref.double().cpu()).norm() / ref.double().cpu().norm()).item()


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("shape", [(3, 5, 40), (2, 576), (1, 1, 7)])
def test_rms_norm_fused(shape, dtype, tol):
    from conclave.kernels.rmsnorm.fused import rms_norm_fused

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
    from conclave.kernels.rope.fused import rope_fused

    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 5000, (B, T), generator=g)
    cos, sin = rope_tables(pos, inv_freq(D, base), torch.float64)
    ref = rope_naive(x, cos, sin)
    out = rope_fused(x.to(DEV, dtype), cos.to(DEV, dtype), sin.to(DEV, dtype))
    assert rel(out, ref) < tol and out.dtype == dtype


def test_rope_keeps_norms_and_relative_positions():
    """A rotation: lengths are kept, and q.k depends only on the distance between positions
    (up to the angles, which are float32 as in HF: ~1e-5 at position 100)."""
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 1, 1, 32, generator=g, dtype=torch.float64) for _ in range(2))

    def at(x, p):
        return rope(x, *rope_tables(torch.tensor([[p]]), inv_freq(32, 10000.0), torch.float64))

    torch.testing.assert_close(at(q, 7).norm(), q.norm())
    torch.testing.assert_close((at(q, 10) * at(k, 3)).sum(), (at(q, 107) * at(k, 100)).sum(), atol=1e-4, rtol=1e-4)


def _attention_case(B, Hq, Hkv, cached, T, D, ring: int | None, seed=0):
    """A prefill chunk of T queries after ``cached`` keys; with ``ring``, the cached keys sit
    in a ring of that many cells (position j in cell j % ring), as the KV cache keeps them."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
    n_cells = min(cached, ring) if ring else cached
    k, v = (torch.randn(B, Hkv, n_cells + T, D, generator=g, dtype=torch.float64) for _ in range(2))
    cells = ring_positions(torch.tensor([cached]), n_cells)[0]
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
    dict(B=1, Hq=2, Hkv=2, cached=0, T=24, D=16, ring=None, window=None, softcap=3.0),  # soft-capped scores
])
def test_prefill_attention_triton(case, dtype, tol):
    from conclave.kernels.attention.naive import attention_naive
    from conclave.kernels.attention.prefill import attention_prefill

    case = dict(case)
    window, softcap = case.pop("window"), case.pop("softcap", None)
    q, k, v, q_pos, k_pos = _attention_case(**case)
    ref = attention_naive(q, k, v, q_pos, k_pos, scale=q.shape[-1] ** -0.5, window=window, softcap=softcap)
    to = lambda t: t.to(DEV, dtype)  # noqa: E731
    cached = k.shape[2] - q.shape[2]  # the chunk's own keys come last, at consecutive positions
    for ordered_from in (None, cached):
        out = attention_prefill(to(q), to(k), to(v), q_pos.to(DEV), k_pos.to(DEV), scale=q.shape[-1] ** -0.5,
                                window=window, softcap=softcap, ordered_from=ordered_from, block_m=16, block_n=16)
        assert out.dtype == dtype and rel(out, ref) < tol, ordered_from


def test_ring_positions_are_what_writing_token_by_token_leaves():
    for cells, n in [(8, 0), (8, 5), (8, 8), (8, 19), (5, 100)]:
        held = [-1] * cells
        for j in range(n):
            held[j % cells] = j
        assert ring_positions(torch.tensor([n]), cells)[0].tolist() == held


def _ring_cache(slots, Hkv, cells, D, lengths, seed=0):
    """A KV cache whose slot s was written token by token for lengths[s] tokens (position j
    into cell j % cells), beside the same keys in position order."""
    g = torch.Generator().manual_seed(seed)
    k_seq = torch.randn(slots, Hkv, max(lengths), D, generator=g, dtype=torch.float64)
    v_seq = torch.randn(slots, Hkv, max(lengths), D, generator=g, dtype=torch.float64)
    k_cache = torch.zeros(slots, Hkv, cells, D, dtype=torch.float64)
    v_cache = torch.zeros_like(k_cache)
    for s, n in enumerate(lengths):
        for j in range(n):
            k_cache[s, :, j % cells], v_cache[s, :, j % cells] = k_seq[s, :, j], v_seq[s, :, j]
    return k_cache, v_cache, k_seq, v_seq


@pytest.mark.parametrize("cells,window", [(64, None), (12, 12), (64, 12)])
def test_decode_reference_over_a_ring_is_attention_over_the_sequence(cells, window):
    lengths = [40, 7, 12, 13]
    k_cache, v_cache, k_seq, v_seq = _ring_cache(4, 2, cells, 8, lengths)
    q = torch.randn(3, 4, 8, dtype=torch.float64)
    slots, pos = torch.tensor([2, 0, 3]), torch.tensor([11, 39, 12])  # each query's key is written
    out = decode_naive(q, k_cache, v_cache, slots, pos, scale=0.3, window=window)
    for b, (s, n) in enumerate(zip(slots.tolist(), pos.tolist())):
        k, v = k_seq[s : s + 1, :, : n + 1], v_seq[s : s + 1, :, : n + 1]
        ref = attention_naive(q[b : b + 1, :, None], k, v, torch.tensor([[n]]), torch.arange(n + 1)[None],
                              scale=0.3, window=window)
        assert rel(out[b], ref[0, :, 0]) < 1e-12


DECODE_CASES = [
    dict(cells=96, window=None, group=1, splits=3, softcap=None),  # full buffers, cache split three ways
    dict(cells=16, window=16, group=4, splits=2, softcap=None),  # rings that wrapped, GQA
    dict(cells=96, window=10, group=2, splits=4, softcap=None),  # a wide buffer read by a sliding layer
    dict(cells=96, window=None, group=3, splits=1, softcap=2.5),  # one range, soft-capped, odd group
]


def _decode_case(case):
    lengths = [70, 3, 33, 96]
    k_cache, v_cache, _, _ = _ring_cache(4, 2, case["cells"], 16, lengths, seed=1)
    q = torch.randn(4, 2 * case["group"], 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    slots, pos = torch.tensor([3, 1, 0, 2]), torch.tensor([95, 2, 69, 32])
    kw = dict(scale=0.25, window=case["window"], softcap=case["softcap"])
    return q, k_cache, v_cache, slots, pos, kw, decode_naive(q, k_cache, v_cache, slots, pos, **kw)


@pytest.mark.parametrize("case", DECODE_CASES)
@pytest.mark.parametrize("rows", [[0, 1, 2, 3], [2, 1], [0], [1]])  # slots 3 1 0 2: shuffled, consecutive, single
def test_decode_attention_on_the_cpu(case, rows):
    """The dispatcher's CPU path: torch's SDPA over the cells the batch has filled."""
    from conclave.kernels.attention import attention_decode

    q, k_cache, v_cache, slots, pos, kw, ref = _decode_case(case)
    out = attention_decode(q[rows].float(), k_cache.float(), v_cache.float(), slots[rows], pos[rows], **kw)
    assert out.dtype == torch.float32 and rel(out, ref[rows]) < 2e-6


@needs_triton
@pytest.mark.parametrize("dtype,tol", [
    (torch.float32, 2e-6),
    pytest.param(torch.bfloat16, 2e-2, marks=pytest.mark.skipif(DEV == "cpu", reason="bf16 dot needs a GPU")),
])
@pytest.mark.parametrize("case", DECODE_CASES)
def test_decode_attention_triton(case, dtype, tol):
    from conclave.kernels.attention.decode import attention_decode_split

    q, k_cache, v_cache, slots, pos, kw, ref = _decode_case(case)
    to = lambda t: t.to(DEV, dtype)  # noqa: E731
    out = attention_decode_split(to(q), to(k_cache), to(v_cache), slots.to(DEV), pos.to(DEV),
                                 splits=case["splits"], block_n=16, **kw)
    assert out.dtype == dtype and rel(out, ref) < tol


@pytest.mark.skipif(DEV == "cpu", reason="real shapes need a GPU")
def test_decode_attention_at_real_shape_gpu():
    from conclave.kernels.attention.decode import attention_decode_split

    g = torch.Generator(device="cuda").manual_seed(0)
    k_cache, v_cache = (torch.randn(16, 8, 4096, 128, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    q = torch.randn(16, 32, 128, generator=g, device="cuda", dtype=torch.bfloat16)
    slots, pos = torch.arange(16, device="cuda").flip(0), torch.randint(0, 4096, (16,), generator=g, device="cuda")
    ref = decode_naive(q.double(), k_cache.double(), v_cache.double(), slots, pos, scale=128 ** -0.5, window=1024)
    out = attention_decode_split(q, k_cache, v_cache, slots, pos, scale=128 ** -0.5, window=1024)
    assert rel(out, ref) < 2e-2


# on PATH, not "the kernel built": a compiler whose build fails must fail these tests, not skip them
needs_cc = pytest.mark.skipif(not any(shutil.which(cc) for cc in gemv_cpu.COMPILERS), reason="no C compiler on PATH")


@needs_cc
def test_gemv_kernel_available_where_a_compiler_is():
    from conclave.kernels.gemv import available

    assert available()


def test_gemv_failed_build_raises_with_the_compilers_stderr(tmp_path, monkeypatch):
    if gemv_cpu.compiler() is None:
        pytest.skip("no C compiler on PATH")
    broken = tmp_path / "panels.c"
    broken.write_text("void gemv_panels(void) { this is not C; }\n")
    monkeypatch.setattr(gemv_cpu, "SOURCE", broken)
    gemv_cpu._library.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="failed to build") as e:
            gemv_cpu.available()
        assert "panels.c" in str(e.value) and "error" in str(e.value)  # the compiler's own diagnostic
    finally:
        monkeypatch.undo()
        gemv_cpu._library.cache_clear()  # the next caller builds the real kernel


def test_gemv_unavailable_only_without_a_compiler(monkeypatch):
    monkeypatch.setattr(gemv_cpu.shutil, "which", lambda name: None)
    gemv_cpu._library.cache_clear()
    try:
        assert not gemv_cpu.available()
    finally:
        monkeypatch.undo()
        gemv_cpu._library.cache_clear()


@needs_cc
@pytest.mark.parametrize("M,K,N", [(1, 576, 3072), (2, 64, 33), (8, 96, 64), (11, 40, 100), (16, 576, 960)])
def test_gemv_panels(M, K, N):
    """The C kernel against float64, row counts on both sides of its 8-row blocks, widths
    that leave the last panel part-filled."""
    from conclave.kernels.gemv import gemv_naive, gemv_panels, pack

    g = torch.Generator().manual_seed(M * K + N)
    x, w = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    out = gemv_panels(x, pack(w), N)
    assert out.shape == (M, N) and rel(out, gemv_naive(x.double(), w.double())) < 1e-6


def test_dense_repacks_a_weight_written_in_place():
    from conclave.local_models.dense import Dense

    d = Dense(64, 40)
    torch.nn.init.normal_(d.weight)
    x = torch.randn(3, 64)
    torch.testing.assert_close(d(x), x @ d.weight)
    with torch.no_grad():
        d.weight.mul_(2.0)  # what loading into an existing model does
    torch.testing.assert_close(d(x), x @ d.weight)
    prompt = torch.randn(2, 40, 64)  # 80 rows: the plain product
    torch.testing.assert_close(d(prompt), prompt @ d.weight)
