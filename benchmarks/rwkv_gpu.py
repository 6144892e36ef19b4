"""RWKV-4 on a GPU: our WKV kernels against the official CUDA kernel and fla's Triton
kernel, side by side in one run, then the engine end to end on a 7B-shaped model.

Anchors (H100 80GB HBM3, 2026-11-22), re-measured here where their code is at hand:
- official RWKV-4 WKV forward, fp32: B8 T1024 C4096 0.237 ms; B1 T8192 C4096 1.32 ms;
  B64 T128 C2560 0.114 ms. Its inference build ships as CUDA source in the ``rwkv``
  package, compiled here with RWKV_CUDA_ON=1 (needs nvcc and ninja);
- fla's ``fused_recurrent_rwkv4`` (package flash-linear-attention): 5x slower than that;
- end to end, the rwkv package itself on the same RWKV-4 shape, prompt and token counts,
  ``cuda fp16`` (its WKV kernel takes fp16 or fp32, not bf16), measured in the same run: the
  only anchor the end-to-end ratios divide by. It writes a checkpoint (14 GB at 32 layers);
  ``--layers N`` cuts both sides to N layers where time is short, ``--no-anchor-e2e`` skips
  it (the ratios then read ``-``).

Goals: >= 1.0x the official kernel at B8 T1024 and B64 T128, >= 3x at B1 T8192; bf16
inputs; 7B decode at batch 1 >= 150 tok/s (bandwidth bound ~205); memory constant in
sequence length.

    python benchmarks/rwkv_gpu.py [--no-anchor-e2e] [--layers 32] [--skip-e2e]
    python benchmarks/rwkv_gpu.py --smoke     # tiny shapes on the CPU (Triton interpreter): checks the script
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gpu_timing import copy_bandwidth, device, parser, rel, timed  # noqa: E402
from conclave.kernels.wkv4 import choose, wkv4, wkv4_naive  # noqa: E402
from conclave.local_models.rwkv.model import GraphedStep, RwkvConfig  # noqa: E402
from conclave.local_models.rwkv.random_weights import random_model, save_checkpoint  # noqa: E402

SHAPES = [(8, 1024, 4096, 0.237), (1, 8192, 4096, 1.32), (64, 128, 2560, 0.114)]
SMOKE_SHAPES = [(2, 16, 32, None), (1, 40, 16, None)]
con = Console(width=160)


def official_kernel():
    """The rwkv package's inference kernel, compiled on first use; None and why if it cannot be."""
    if not torch.cuda.is_available():
        return None, "needs CUDA"
    os.environ["RWKV_CUDA_ON"] = "1"
    try:
        import rwkv.model  # noqa: F401  (builds and registers torch.ops.rwkv.wkv_forward)

        return torch.ops.rwkv.wkv_forward, ""
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"[:80]


def fla_kernel():
    try:
        from fla.ops.rwkv4 import fused_recurrent_rwkv4

        return fused_recurrent_rwkv4, ""
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"[:80]


def kernels_table(dev, roof: float) -> None:
    official, why_official = official_kernel()
    fla, why_fla = fla_kernel()
    table = Table(title=f"WKV-4 forward, fp32 unless marked; {torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU (smoke)'}; "
                        f"copy bandwidth {roof / 1e12:.2f} TB/s")
    for col in ("shape", "impl", "ms", "TB/s", "vs official", "anchor ms (H100)", "rel err vs fp64"):
        table.add_column(col, justify="left" if col in ("shape", "impl") else "right")
    for B, T, C, anchor in (SMOKE_SHAPES if SMOKE else SHAPES):
        g = torch.Generator(device=dev).manual_seed(0)
        w = -torch.exp(torch.randn(C, device=dev, generator=g))
        u = torch.randn(C, device=dev, generator=g)
        k = torch.randn(B, T, C, device=dev, generator=g) * 5
        v = torch.randn(B, T, C, device=dev, generator=g)
        nbytes = 3 * B * T * C * 4 + 6 * B * C * 4  # read k, v; write y; state in and out
        ref_y, _ = wkv4_naive(w.double(), u.double(), k.double(), v.double())
        shape = f"B{B} T{T} C{C}"
        t_official = None
        if official is not None:
            def run_official():
                y = torch.empty_like(k)
                aa, bb = torch.zeros(B, C, device=dev), torch.zeros(B, C, device=dev)
                pp = torch.full((B, C), -1e38, device=dev)
                official(B, T, C, w, u, k, v, y, aa, bb, pp)
                return y
            t_official = timed(run_official)
            table.add_row(shape, "official CUDA (rwkv pkg)", f"{t_official * 1e3:.3f}", f"{nbytes / t_official / 1e12:.2f}",
                          "1.00x", f"{anchor}" if anchor else "", f"{rel(run_official(), ref_y):.1e}")
        else:
            table.add_row(shape, "official CUDA (rwkv pkg)", "-", "-", "-", f"{anchor}" if anchor else "", why_official)
        impls = ["fused_recurrent", "split"]
        auto = choose(k) if dev.type == "cuda" else "fused_recurrent"
        for impl in impls:
            y, _ = wkv4(w, u, k, v, impl=impl)
            t = timed(lambda: wkv4(w, u, k, v, impl=impl))
            ratio = f"{t_official / t:.2f}x" if t_official else "-"
            name = f"ours {impl}" + (" (chosen)" if impl == auto else "")
            table.add_row(shape, name, f"{t * 1e3:.3f}", f"{nbytes / t / 1e12:.2f}", ratio, "", f"{rel(y, ref_y):.1e}")
        kb, vb = k.bfloat16(), v.bfloat16()
        y, _ = wkv4(w, u, kb, vb, impl=auto)
        t = timed(lambda: wkv4(w, u, kb, vb, impl=auto))
        table.add_row(shape, f"ours {auto}, bf16 in/out", f"{t * 1e3:.3f}", f"{(nbytes / 2) / t / 1e12:.2f}",
                      f"{t_official / t:.2f}x" if t_official else "-", "",
                      f"{rel(y, wkv4_naive(w.double(), u.double(), kb.double(), vb.double())[0]):.1e}")
        if fla is not None:
            state = torch.stack([torch.zeros(B, C, device=dev), torch.zeros(B, C, device=dev),
                                 torch.full((B, C), -1e38, device=dev)], 1)[:, :, None]
            td = torch.log(-w)  # fla takes time_decay and applies w = -exp(time_decay) itself
            y, _ = fla(td, u, k, v, state)
            t = timed(lambda: fla(td, u, k, v, state))
            table.add_row(shape, "fla fused_recurrent_rwkv4", f"{t * 1e3:.3f}", f"{nbytes / t / 1e12:.2f}",
                          f"{t_official / t:.2f}x" if t_official else "-", "", f"{rel(y, ref_y):.1e}")
        else:
            table.add_row(shape, "fla fused_recurrent_rwkv4", "-", "-", "-", "", why_fla)
    con.print(table)


REPS = 3  # timed repetitions (the median kept) of every end-to-end measure, ours and the rwkv package's alike


def e2e_table(dev, roof: float, anchor_e2e: bool, layers: int | None) -> None:
    c = (RwkvConfig(n_layer=layers or 2, n_embd=64, n_att=64, n_ffn=256, vocab_size=1000) if SMOKE else
         RwkvConfig(n_layer=layers or 32, n_embd=4096, n_att=4096, n_ffn=16384, vocab_size=50277))
    dtype = torch.float32 if SMOKE else torch.bfloat16
    n_prompt, n_new = (32, 8) if SMOKE else (1024, 128)
    prompt = torch.randint(0, c.vocab_size, (1, n_prompt), device=dev)
    # the anchor first, and its model freed, so that both 7B models never share the GPU
    if anchor_e2e:
        theirs, why = anchor_rwkv_package(c, prompt[0].tolist(), n_new, dev)
    else:
        theirs, why = None, "not run (--no-anchor-e2e)"
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    model = random_model(c, dtype=dtype, device=dev)
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("emb"))
    table = Table(title=f"RWKV-4 L{c.n_layer} D{c.n_embd} end to end, ours {str(dtype).removeprefix('torch.')}, "
                        f"random weights; anchor: the rwkv package on this shape now "
                        f"({'cpu fp32' if dev.type != 'cuda' else 'cuda fp16'}), "
                        f"{f'median of {REPS}' if dev.type == 'cuda' else 'one timed call'} on both sides")
    for col in ("measure", "native", "anchor (rwkv pkg, now)", "ratio", "goal / limit"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    t_pre = timed(lambda: model(prompt), reps=REPS)
    pre = n_prompt / t_pre
    table.add_row(f"prefill {n_prompt} tokens, tok/s", f"{pre:,.0f}", f"{theirs[0]:,.0f}" if theirs else why,
                  f"{pre / theirs[0]:.2f}x" if theirs else "-", "")
    limit = roof / 2 / weight_bytes  # the copy figure counts read + write; a step only reads
    for batch in (1, 16):
        state = model.new_state(batch)
        model(prompt.expand(batch, -1), state)
        step = GraphedStep(model, batch) if dev.type == "cuda" else (lambda t, s: model(t, s)[0])
        tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)

        def decode():
            nonlocal tok
            for _ in range(n_new):
                tok = step(tok, state).argmax(-1, keepdim=True)
        t = timed(decode, reps=REPS)
        rate = batch * n_new / t
        if batch == 1:
            table.add_row("decode batch 1, tok/s", f"{rate:,.1f}", f"{theirs[1]:,.1f}" if theirs else why,
                          f"{rate / theirs[1]:.2f}x" if theirs else "-", f">= 150; bandwidth limit {limit:,.0f}")
        else:  # the rwkv package decodes one sequence at a time: nothing of its own to set beside this
            table.add_row(f"decode batch {batch}, total tok/s", f"{rate:,.1f}", "(no batching)", "-", "reported")
    if dev.type == "cuda":
        mem = []
        for n in (128, 8192):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            state = model.new_state(1)
            for i in range(0, n, 1024):  # read the context in chunks, then decode
                model(torch.randint(0, c.vocab_size, (1, min(1024, n - i)), device=dev), state)
            base = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            model(torch.zeros(1, 1, dtype=torch.long, device=dev), state)
            mem.append((n, base, torch.cuda.max_memory_allocated()))
        for n, base, peak in mem:
            table.add_row(f"decode memory after {n} tokens, GiB", f"{peak / 2**30:.2f}", "", "",
                          f"state {model.new_state(1).nbytes / 2**20:.1f} MiB, constant")
    con.print(table)


def anchor_rwkv_package(c: RwkvConfig, prompt: list[int], n_new: int, dev) -> tuple[tuple[float, float] | None, str]:
    """The rwkv package's prefill and batch-1 decode rates (tok/s) on shape ``c``, the same
    prompt and the same number of new tokens as ours, from a checkpoint written for it; None
    and why where it cannot run (no nvcc to build its kernel, no memory, no disk)."""
    try:
        if "rwkv.model" not in sys.modules:  # official_kernel() may have imported it with its CUDA kernel already
            os.environ["RWKV_CUDA_ON"] = "1" if dev.type == "cuda" else "0"
        from rwkv.model import RWKV

        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(Path(tmp) / "rwkv4.pth", c.n_layer, c.n_embd, c.vocab_size,
                                   n_ffn=c.n_ffn, dtype=torch.float16 if dev.type == "cuda" else torch.float32)
            ref = RWKV(model=str(path), strategy="cuda fp16" if dev.type == "cuda" else "cpu fp32", verbose=False)
        t_pre = timed(lambda: ref.forward(prompt, None), reps=REPS)
        _, state = ref.forward(prompt, None)

        def decode():
            tok, s = 0, [x.clone() for x in state]
            for _ in range(n_new):
                logits, s = ref.forward([tok], s)
                tok = int(logits.argmax())
        t_dec = timed(decode, reps=REPS)
        return (len(prompt) / t_pre, n_new / t_dec), ""
    except Exception as e:  # the anchor is missing, not ours: our figures still print, their ratios as "-"
        return None, f"{type(e).__name__}: {e}"[:60]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--anchor-e2e", action=argparse.BooleanOptionalAction, default=True,
                    help="run the rwkv package on the same shape, the end-to-end ratios' anchor (on by default)")
    ap.add_argument("--layers", type=int, default=None, help="layers on both sides end to end (default 32; 2 with --smoke)")
    args = ap.parse_args()
    dev = device(args)
    roof = copy_bandwidth(dev)
    kernels_table(dev, roof)
    if not args.skip_e2e:
        e2e_table(dev, roof, args.anchor_e2e, args.layers)


if __name__ == "__main__":
    main()
