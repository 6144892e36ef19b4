"""The native transformer against HF transformers ``generate`` on the same float32 weights
(SmolLM2-135M-Instruct, dequantized from its GGUF), with llama.cpp on the quantized file
beside them, in one process on the CPU.

Anchors (2 cores, 2026-11-23): HF 18.8 tok/s at batch 1 and 80 tok/s in total at batch
8; llama.cpp (Q4_1) 110 tok/s. Reading 540 MB of float32 weights per step caps batch-1
decoding near 60 tok/s. Goal: the native engine at least 2x HF at batch 1 and at batch 8.

    python benchmarks/transformer_cpu.py [--model smollm2-135m-instruct] [--new 128] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from rich.console import Console
from rich.table import Table

from conclave.app.settings import load_settings
from conclave.kernels import gemv
from conclave.local_models import catalog, torch_lm
from conclave.local_models.llamacpp import LlamaCppEngine
from conclave.local_models.transformer.engine import load

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):",
           "The three laws of thermodynamics state that", "Water boils at a temperature of",
           "The history of the Roman Empire", "To make a good cup of tea,", "In machine learning, overfitting"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def product_path() -> str:
    """Which product the native engine's decoding rows (up to 16, float32) take in
    local_models/dense.py: without it in the table, torch's fallback reads as the kernel's."""
    return "C kernel (kernels/gemv)" if gemv.available() else "torch fallback (no C compiler on PATH)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    products = product_path()  # before any timing: a kernel that fails to build stops the run here
    settings = load_settings()
    spec = catalog.resolve(args.model or settings.model)
    path = catalog.ensure_weights(spec, settings.data_dir)
    ours = load(path, n_ctx=1024, n_slots=args.batch)
    tok, hf = torch_lm.load(path)
    lc = LlamaCppEngine(path, n_ctx=1024, n_threads=args.threads)
    # prompts of one length, so that HF's batch needs no padding
    ids = [ours.tokenize(p, add_bos=ours.add_bos) for p in PROMPTS[: args.batch]]
    n = min(len(i) for i in ids)
    ids = [i[:n] for i in ids]

    def hf_generate(rows):
        with torch.no_grad():
            hf.generate(input_ids=torch.tensor(rows), attention_mask=torch.ones(len(rows), n, dtype=torch.long),
                        max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=tok.pad_token_id)

    def our_generate(rows):
        cache = ours.model.new_cache(len(rows), n + args.new + 1)
        logits = ours.model(torch.tensor(rows), cache)
        for _ in range(args.new):
            logits = ours.model(logits.argmax(-1, keepdim=True), cache)

    def lc_generate():
        lc.truncate(0, 0)
        logits = lc.prefill(ids[0])
        for _ in range(args.new):
            logits = lc.append([int(logits.argmax())])

    our_generate(ids[:1])  # warm-up
    hf_generate(ids[:1])
    table = Table(title=f"{spec.name} decode, greedy, {args.new} new tokens, {args.threads} threads; "
                        f"native decode products: {products}")
    for col in ("batch", "HF generate fp32 (anchor)", "native fp32", "ratio", "goal", "llama.cpp Q4_1", "llama.cpp lead"):
        table.add_column(col, justify="right")
    lc_rate = args.new / timed(lc_generate)
    for rows in (ids[:1], ids):
        h = len(rows) * args.new / timed(lambda: hf_generate(rows))
        o = len(rows) * args.new / timed(lambda: our_generate(rows))
        table.add_row(str(len(rows)), f"{h:.1f}", f"{o:.1f}", f"{o / h:.2f}x", ">= 2.0x",
                      f"{lc_rate:.1f}" if len(rows) == 1 else "", f"{lc_rate / o:.2f}x" if len(rows) == 1 else "")
    Console().print(table)


if __name__ == "__main__":
    main()
