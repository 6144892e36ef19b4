"""The native RWKV-4 engine against the ``rwkv`` package (ChatRWKV's reference, strategy
``cpu fp32``) on the same random-weight checkpoint, in one process, on the CPU.

Anchors (2 cores, 2026-11-23, the 169M shape): the rwkv package decodes 27.5 tok/s at
batch 1 and prefills ~550 tok/s on 512 tokens. Goals: decode at batch 1 >= 1.5x, prefill
>= 1.0x; batched decode (batch 8, which the rwkv package does not offer) in total tok/s.

    python benchmarks/rwkv_cpu.py [--layers 12 --embd 768 --vocab 50277] [--prompt 512] [--new 128] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from conclave.kernels import gemv
from conclave.local_models.rwkv import weights
from conclave.local_models.rwkv.random_weights import save_checkpoint


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def product_path() -> str:
    """Which product the native engine's decoding rows (up to 16, float32) take in
    local_models/dense.py: without it in the table, torch's fallback reads as the kernel's."""
    return "C kernel (kernels/gemv)" if gemv.available() else "torch fallback (no C compiler on PATH)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50277)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    products = product_path()  # before any timing: a kernel that fails to build stops the run here
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    from rwkv.model import RWKV

    con = Console()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, args.vocab, (args.prompt,), generator=g).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "rwkv4.pth", args.layers, args.embd, args.vocab)
        ref = RWKV(model=str(path), strategy="cpu fp32", verbose=False)
        ours = weights.load(path)

    def ref_prefill():
        return ref.forward(prompt, None)

    def ref_decode():
        logits, state = ref.forward(prompt[-1:], [s.clone() for s in ref_state])
        toks = []
        for _ in range(args.new):
            tok = int(logits.argmax())
            toks.append(tok)
            logits, state = ref.forward([tok], state)
        return toks

    def our_prefill():
        return ours(torch.tensor([prompt]))

    def our_decode(batch: int):
        state = our_state.rows([0] * batch)
        logits, _ = ours(torch.tensor([prompt[-1:]] * batch), state)
        toks = []
        for _ in range(args.new):
            tok = logits.argmax(-1)
            toks.append(int(tok[0]))
            logits, _ = ours(tok[:, None], state)
        return toks

    # decoding starts from the state after all but the prompt's last token
    ref_state = ref.forward(prompt[:-1], None)[1]
    our_state = ours(torch.tensor([prompt[:-1]]))[1]

    t_ref_pre = best(ref_prefill, args.rounds)
    t_our_pre = best(our_prefill, args.rounds)
    ref_toks, our_toks = ref_decode(), our_decode(1)
    t_ref_dec = best(ref_decode, args.rounds)
    t_our_dec = best(lambda: our_decode(1), args.rounds)
    t_our_bat = best(lambda: our_decode(args.batch), args.rounds)
    same = sum(a == b for a, b in zip(ref_toks, our_toks))

    n_params = sum(p.numel() for p in ours.parameters())
    table = Table(title=f"RWKV-4 L{args.layers} D{args.embd} V{args.vocab} ({n_params / 1e6:.0f}M), fp32, "
                        f"{args.threads} threads, {platform.processor() or platform.machine()}; "
                        f"native decode products: {products}")
    for col in ("measure", "rwkv package (anchor)", "native", "ratio", "goal"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    pre_ref, pre_our = args.prompt / t_ref_pre, args.prompt / t_our_pre
    dec_ref, dec_our = args.new / t_ref_dec, args.new / t_our_dec
    bat = args.batch * args.new / t_our_bat
    table.add_row(f"prefill {args.prompt} tokens, tok/s", f"{pre_ref:.0f}", f"{pre_our:.0f}", f"{pre_our / pre_ref:.2f}x", ">= 1.0x")
    table.add_row("decode batch 1, tok/s", f"{dec_ref:.1f}", f"{dec_our:.1f}", f"{dec_our / dec_ref:.2f}x", ">= 1.5x")
    table.add_row(f"decode batch {args.batch}, total tok/s", "(no batching)", f"{bat:.1f}", f"{bat / dec_ref:.2f}x vs batch 1", "reported")
    state_bytes = ours.new_state(1).nbytes
    table.add_row("state per sequence (any length)", "", f"{state_bytes / 1024:.0f} KiB", "", "constant")
    con.print(table)
    con.print(f"greedy decode, {args.new} tokens: {same}/{args.new} identical to the rwkv package")


if __name__ == "__main__":
    main()
