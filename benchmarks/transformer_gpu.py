"""The native transformer on a GPU: our attention kernels against FlexAttention, torch SDPA
and the device's copy bandwidth, then a 7B-shaped Mistral end to end against HF
transformers, side by side in one run.

Anchors (H100, 2026-11-22), each re-measured here:
- prefill attention, Mistral-7B shape (32 query / 8 KV heads, head dim 128, T=16384),
  bf16: FlexAttention with a W=4096 sliding window 360 useful TFLOP/s; causal without a
  window, torch SDPA 654 TFLOP/s;
- decode attention, batch 16, 32k cache: the goal is 80% of the copy bandwidth (~3.0 TB/s);
- decode end to end, 7B shape, random bf16 weights: HF eager 9.4 tok/s at batch 1 and 172
  tok/s at batch 16.

Goals: prefill >= 1.2x FlexAttention; decode attention >= 0.8x copy bandwidth; decode
>= 150 tok/s at batch 1 (bandwidth limit ~207) and >= 1,500 tok/s at batch 16.

    python benchmarks/transformer_gpu.py [--skip-e2e] [--skip-hf]
    python benchmarks/transformer_gpu.py --smoke    # tiny shapes on the CPU (Triton interpreter): checks the script
"""

from __future__ import annotations

import os
import sys

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gpu_timing import copy_bandwidth, device, parser, rel, timed  # noqa: E402
from conclave.kernels.attention import attention_naive, decode_naive  # noqa: E402
from conclave.kernels.attention.decode import attention_decode_split  # noqa: E402
from conclave.kernels.attention.prefill import attention_prefill  # noqa: E402
from conclave.local_models.transformer.config import Config  # noqa: E402
from conclave.local_models.transformer.engine import TransformerEngine  # noqa: E402
from conclave.local_models.transformer.model import Transformer  # noqa: E402

con = Console(width=170)
# (B, Hq, Hkv, D, T, W) for prefill; (B, Hq, Hkv, D, cache) for decode
PREFILL = (1, 4, 2, 16, 64, 16) if SMOKE else (1, 32, 8, 128, 16384, 4096)
DECODE = (2, 4, 2, 16, 64) if SMOKE else (16, 32, 8, 128, 32768)
PREFILL_CONFIGS = [(16, 16, 4, 1)] if SMOKE else [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3),
                                                  (128, 128, 8, 2), (64, 128, 4, 2)]
DECODE_CONFIGS = [(16, 4)] if SMOKE else [(32, 4), (64, 4), (64, 8), (128, 8)]


def useful_pairs(T: int, W: int | None) -> int:
    """(query, key) pairs a causal (windowed) attention computes: the FLOP count's basis."""
    i = np.arange(T)
    return int(np.minimum(i + 1, W).sum() if W else (i + 1).sum())


def flex_runner(T: int, W: int | None, dev):
    """FlexAttention compiled with a causal (sliding-window) block mask; None and why if unavailable."""
    if dev.type != "cuda":
        return None, "needs CUDA"
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask(b, h, q, k):
            return (q >= k) & (q - k < W) if W else q >= k
        block = create_block_mask(mask, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
        flex = torch.compile(flex_attention)
        return (lambda q, k, v, scale: flex(q, k, v, block_mask=block, scale=scale, enable_gqa=True)), ""
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"[:80]


def prefill_table(dev, dtype) -> None:
    B, Hq, Hkv, D, T, W = PREFILL
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, Hq, T, D, device=dev, dtype=dtype, generator=g)
    k, v = (torch.randn(B, Hkv, T, D, device=dev, dtype=dtype, generator=g) for _ in range(2))
    pos = torch.arange(T, device=dev)[None].expand(B, -1)
    scale = D ** -0.5
    table = Table(title=f"Prefill attention B{B} Hq{Hq} Hkv{Hkv} D{D} T{T}, {str(dtype).removeprefix('torch.')}; "
                        f"{torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU (smoke)'}")
    for col in ("mask", "impl", "block m/n, warps, stages", "ms", "TFLOP/s", "vs anchor now", "anchor (H100)", "rel err vs fp64"):
        table.add_column(col, justify="left" if col in ("mask", "impl") else "right")
    for window in (W, None):
        flops = 4 * D * Hq * B * useful_pairs(T, window)
        label = f"sliding W={window}" if window else "causal"
        sub = slice(0, min(T, 2048))  # the float64 reference on the first 2k queries (their keys come first)
        ref = attention_naive(q[:, :, sub].double(), k[:, :, sub].double(), v[:, :, sub].double(), pos[:, sub], pos[:, sub],
                              scale=scale, window=window)
        if window:
            flex, why = flex_runner(T, window, dev)
            anchor_name, anchor_tf = "FlexAttention", 360
            if flex is not None:
                t_anchor = timed(lambda: flex(q, k, v, scale))
                table.add_row(label, "FlexAttention (compiled)", "", f"{t_anchor * 1e3:.3f}", f"{flops / t_anchor / 1e12:.0f}",
                              "1.00x", "360", f"{rel(flex(q, k, v, scale)[:, :, sub], ref):.1e}")
            else:
                t_anchor = None
                table.add_row(label, "FlexAttention", "", "-", "-", "-", "360", why)
        else:
            anchor_name, anchor_tf = "SDPA", 654
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)  # noqa: E731
            t_anchor = timed(sdpa)
            table.add_row(label, "torch SDPA", "", f"{t_anchor * 1e3:.3f}", f"{flops / t_anchor / 1e12:.0f}", "1.00x", "654",
                          f"{rel(sdpa()[:, :, sub], ref):.1e}")
        best = None
        for bm, bn, warps, stages in PREFILL_CONFIGS:
            run = lambda: attention_prefill(q, k, v, pos, pos, scale=scale, window=window, ordered_from=0,  # noqa: E731
                                            block_m=bm, block_n=bn, num_warps=warps, num_stages=stages)
            try:
                t = timed(run)
            except Exception as e:  # a configuration the GPU cannot hold (shared memory)
                table.add_row(label, "ours", f"{bm}/{bn}, {warps}, {stages}", "-", "-", "-", "", f"{type(e).__name__}"[:40])
                continue
            ratio = f"{t_anchor / t:.2f}x vs {anchor_name}" if t_anchor else "-"
            table.add_row(label, "ours", f"{bm}/{bn}, {warps}, {stages}", f"{t * 1e3:.3f}", f"{flops / t / 1e12:.0f}", ratio,
                          f"goal {1.2 * anchor_tf:.0f}" if window else "", f"{rel(run()[:, :, sub], ref):.1e}")
            best = t if best is None else min(best, t)
        if best and t_anchor:
            con.print(f"{label}: best of ours {flops / best / 1e12:.0f} TFLOP/s = {t_anchor / best:.2f}x {anchor_name} measured now")
    con.print(table)


def decode_table(dev, dtype, roof: float) -> None:
    B, Hq, Hkv, D, C = DECODE
    g = torch.Generator(device=dev).manual_seed(1)
    k_cache, v_cache = (torch.randn(B, Hkv, C, D, device=dev, dtype=dtype, generator=g) for _ in range(2))
    q = torch.randn(B, Hq, D, device=dev, dtype=dtype, generator=g)
    slots = torch.arange(B, device=dev)
    pos = torch.full((B,), C - 1, device=dev)  # every cell held
    scale = D ** -0.5
    nbytes = 2 * k_cache.numel() * k_cache.element_size()
    ref = decode_naive(q[:2].double(), k_cache.double()[:2], v_cache.double()[:2], slots[:2], pos[:2], scale=scale)
    table = Table(title=f"Decode attention B{B} Hq{Hq} Hkv{Hkv} D{D}, cache {C} cells, {str(dtype).removeprefix('torch.')}; "
                        f"copy bandwidth {roof / 1e12:.2f} TB/s")
    for col in ("impl", "block n, warps", "ms", "TB/s read", "of copy bandwidth", "goal", "rel err vs fp64"):
        table.add_column(col, justify="left" if col == "impl" else "right")
    qs = q[:, :, None]
    sdpa = lambda: F.scaled_dot_product_attention(qs, k_cache, v_cache, scale=scale, enable_gqa=True)  # noqa: E731
    t = timed(sdpa)
    table.add_row("torch SDPA (one query)", "", f"{t * 1e3:.3f}", f"{nbytes / t / 1e12:.2f}", f"{nbytes / t / roof:.0%}", "",
                  f"{rel(sdpa()[:2, :, 0], ref):.1e}")
    for bn, warps in DECODE_CONFIGS:
        run = lambda: attention_decode_split(q, k_cache, v_cache, slots, pos, scale=scale, block_n=bn, num_warps=warps)  # noqa: E731
        t = timed(run)
        table.add_row("ours, split-K", f"{bn}, {warps}", f"{t * 1e3:.3f}", f"{nbytes / t / 1e12:.2f}", f"{nbytes / t / roof:.0%}",
                      ">= 80%", f"{rel(run()[:2], ref):.1e}")
    con.print(table)


def mistral_7b() -> Config:
    if SMOKE:
        return Config(arch="mistral", vocab_size=500, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                      norm_eps=1e-5, rope_base=10000.0, layer_types=("sliding",) * 2, sliding_window=32, max_len=256)
    return Config(arch="mistral", vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
                  ffn_dim=14336, norm_eps=1e-5, rope_base=10000.0, layer_types=("sliding",) * 32, sliding_window=4096,
                  max_len=32768)


def random_transformer(c: Config, dtype, dev) -> Transformer:
    with torch.device("meta"):
        model = Transformer(c).to(dtype)
    model = model.to_empty(device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=g) if p.ndim > 1 else p.fill_(1.0)
    return model.eval()


def hf_model(c: Config, dtype, dev):
    """HF's MistralForCausalLM with the same shape and random weights, built in ``dtype``."""
    import transformers

    cfg = transformers.MistralConfig(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim,
                                     num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                                     num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, sliding_window=c.sliding_window,
                                     max_position_embeddings=c.max_len, rms_norm_eps=c.norm_eps)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            return transformers.MistralForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(before)


REPS = 3  # timed repetitions (the median kept) of every end-to-end measure, ours and HF's alike


def hf_decode_rate(hf, vocab: int, dev, batch: int, n_prompt: int, n_new: int) -> float:
    """HF's decode rate measured as ours is: the prompt and ``n_new`` decoding steps after it,
    less the prompt alone. ``generate`` asked for k tokens runs the prompt (which gives the
    first) and k - 1 steps, so k = n_new + 1 against k = 1 leaves n_new steps, as ours does."""
    prompt = torch.randint(0, vocab, (batch, n_prompt), device=dev)

    def generate(k: int):
        return lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=k, min_new_tokens=k,
                                   do_sample=False, pad_token_id=0)
    t = timed(generate(n_new + 1), reps=REPS)
    t_prompt = timed(generate(1), reps=REPS)
    return batch * n_new / max(t - t_prompt, 1e-9)


def e2e_table(dev, roof: float, skip_hf: bool) -> None:
    c = mistral_7b()
    dtype = torch.float32 if SMOKE else torch.bfloat16
    model = random_transformer(c, dtype, dev)
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("embed"))
    limit = roof / 2 / weight_bytes  # the copy figure counts read + write; a step only reads
    n_prompt, n_new = (16, 4) if SMOKE else (128, 128)
    engine = TransformerEngine(model, None, name="mistral-7b-random", n_ctx=min(4096, c.max_len), n_slots=16, graphs=True)
    table = Table(title=f"Mistral-7B shape end to end, random {str(dtype).removeprefix('torch.')} weights "
                        f"({weight_bytes / 2**30:.1f} GiB read per step), {n_prompt} prompt + {n_new} new tokens; "
                        f"{'CUDA graphs' if dev.type == 'cuda' else 'graph inputs, run eagerly (no capture on a CPU)'}; "
                        f"decode tok/s on both sides = {n_new} steps / (prompt + steps - prompt alone), "
                        f"{f'median of {REPS}' if dev.type == 'cuda' else 'one timed call each (CPU smoke)'}")
    for col in ("decode", "ours, tok/s", "HF generate now", "ratio", "HF anchor (H100)", "goal / limit"):
        table.add_column(col, justify="left" if col == "decode" else "right")
    hf, why = None, "skipped"
    if not skip_hf:
        try:
            hf = hf_model(c, dtype, dev)
        except ImportError as e:  # the anchor needs transformers; our figures do not
            why = f"{type(e).__name__}: {e}"[:60]
    for batch, anchor, goal in ((1, 9.4, 150), (16, 172, 1500)):
        slots = list(range(batch))

        def prompt():
            for s in slots:
                engine.truncate(s, 0)
            return engine.decode([(s, torch.randint(0, c.vocab_size, (n_prompt,)).tolist(), False) for s in slots])

        def generate():
            rows = prompt()
            for _ in range(n_new):
                rows = engine.decode([(s, [int(np.argmax(r))], False) for s, r in zip(slots, rows)])
        t = timed(generate, reps=REPS)
        t_prompt = timed(prompt, reps=REPS)  # timed alone and taken off: the rate is decoding's (HF's too)
        rate = batch * n_new / max(t - t_prompt, 1e-9)
        theirs = hf_decode_rate(hf, c.vocab_size, dev, batch, n_prompt, n_new) if hf is not None else None
        table.add_row(f"batch {batch}", f"{rate:,.1f}", f"{theirs:,.1f}" if theirs else why,
                      f"{rate / theirs:.1f}x" if theirs else "-",
                      f"{anchor}", f">= {goal:,}" + (f"; limit {limit * batch:,.0f}" if batch == 1 else ""))
    table.add_row("KV cache per slot", f"{engine.cache.nbytes_per_slot / 2**20:,.0f} MiB", "", "", "",
                  f"ring of W={c.sliding_window} per layer")
    con.print(table)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--skip-hf", action="store_true", help="leave out the HF transformers anchor")
    args = ap.parse_args()
    dev = device(args)
    dtype = torch.float32 if args.smoke else torch.bfloat16  # the interpreter's bf16 dot is broken
    roof = copy_bandwidth(dev)
    prefill_table(dev, dtype)
    decode_table(dev, dtype, roof)
    if not args.skip_e2e:
        e2e_table(dev, roof, args.skip_hf)


if __name__ == "__main__":
    main()
