"""A Mistral-style decoder in one file: Llama, Mistral, Qwen2 and Gemma 3 from one Config.

Each layer is RMSNorm -> attention -> residual, RMSNorm -> gated MLP -> residual (Gemma
adds a norm after each as well). Attention has grouped KV heads, RoPE with a per-layer
base, optional QK-norm, and per layer either global causal attention or a sliding window
of W keys: a query at position i sees the keys j with i - W < j <= i.

The KV cache holds, per layer, a full buffer (global layers) or a ring of W cells
(sliding layers: position j lives in cell j mod W). A chunk of new tokens attends to the
cached keys followed by its own, and only then is written into the cache, so a ring never
loses a key that a query of the same chunk still needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from conclave.kernels.attention import attention_decode, attention_naive, ring_positions, visible
from conclave.kernels.rmsnorm import rms_norm
from conclave.kernels.rope import rope, rope_tables
from conclave.local_models.dense import Dense
from conclave.local_models.transformer.config import Config
from conclave.local_models.transformer.rope_scaling import frequencies


class RMSNorm(nn.Module):
    """x / rms(x) * weight, in float32. Gemma's (1 + w) is folded into the weight on loading."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class KVCache:
    """Keys and values of every slot: per KV-producing layer [slots, kv_heads, cells, head_dim],
    with cells = W for sliding layers (a ring) and max_len for global ones."""

    def __init__(self, c: Config, slots: int, max_len: int, *, dtype, device):
        self.c, self.max_len = c, max_len
        need = [min(c.sliding_window, max_len) if t == "sliding" else max_len for t in c.layer_types]
        # a layer's cache serves every layer that shares it: as many cells as the widest needs
        self.cells = [max(need[j] for j in range(c.n_layers) if c.kv_layer(j) == c.kv_layer(i)) for i in range(c.n_layers)]
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        for i in range(c.n_layers):
            if c.kv_layer(i) == i:
                shape = (slots, c.n_kv_heads, self.cells[i], c.head_dim)
                self.k[i] = torch.zeros(shape, dtype=dtype, device=device)
                self.v[i] = torch.zeros(shape, dtype=dtype, device=device)
        self.length = [0] * slots

    @property
    def nbytes_per_slot(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in (*self.k.values(), *self.v.values()))

    def cell_positions(self, layer: int, n: int, device) -> torch.Tensor:
        """The position each held cell stores, for a slot holding n tokens (cells in storage order)."""
        cells = self.cells[layer]
        return ring_positions(torch.tensor([n], device=device), cells)[0, : min(n, cells)]

    def write(self, layer: int, slot: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys/values [kv_heads, T, head_dim] of positions start.. for one slot."""
        cells, T = self.cells[layer], k.shape[1]
        if self.cells[layer] == self.max_len:  # a full buffer
            self.k[layer][slot, :, start : start + T] = k
            self.v[layer][slot, :, start : start + T] = v
            return
        keep = min(T, cells)  # only the last W of a long chunk survive in the ring
        idx = torch.arange(start + T - keep, start + T, device=k.device) % cells
        self.k[layer][slot][:, idx] = k[:, T - keep :]
        self.v[layer][slot][:, idx] = v[:, T - keep :]


@dataclass
class Batch:
    """Where one forward's tokens go: each row's cache slot and positions as tensors (all a
    CUDA graph can hold), and for prompt chunks the same as Python lists, which size the
    per-sequence slices of the cache."""

    slot_t: torch.Tensor  # [B]
    pos: torch.Tensor  # [B, T]
    slots: list[int] | None = None
    start: list[int] | None = None


class Attention(nn.Module):
    def __init__(self, c: Config, layer: int):
        super().__init__()
        self.c, self.layer = c, layer
        self.owns_kv = c.kv_layer(layer) == layer
        # Q, K and V in one product (one pass over the input, one call): loading concatenates them
        self.widths = [c.n_heads * c.head_dim] + ([c.n_kv_heads * c.head_dim] * 2 if self.owns_kv else [])
        self.qkv = Dense(c.dim, sum(self.widths), bias=c.qkv_bias)
        self.o = Dense(c.n_heads * c.head_dim, c.dim)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
            if self.owns_kv:
                self.k_norm = RMSNorm(c.head_dim, c.norm_eps)
        self.window = c.sliding_window if c.layer_types[layer] == "sliding" else None

    def forward(self, x, cache: KVCache, batch: Batch, rope_cs, shared: dict):
        c, B, T = self.c, x.shape[0], x.shape[1]
        y = self.qkv(x)
        Hq, Hkv, D = c.n_heads, c.n_kv_heads, c.head_dim
        if self.owns_kv:
            # queries and keys are adjacent columns: normed per head, then rotated in one call
            qk = y[..., : (Hq + Hkv) * D].view(B, T, Hq + Hkv, D).transpose(1, 2)
            if c.qk_norm:
                qk = torch.cat([self.q_norm(qk[:, :Hq]), self.k_norm(qk[:, Hq:])], dim=1)
            qk = rope(qk, *rope_cs)
            q, k = qk[:, :Hq], qk[:, Hq:]
            v = y[..., (Hq + Hkv) * D :].view(B, T, Hkv, D).transpose(1, 2)
            shared[self.layer] = (k, v)
        else:
            q = y.view(B, T, Hq, D).transpose(1, 2)
            if c.qk_norm:
                q = self.q_norm(q)
            q = rope(q, *rope_cs)
            k, v = shared[c.kv_layer(self.layer)]
        kv = c.kv_layer(self.layer)
        if T == 1:
            return self.o(self._decode(q, k, v, cache, kv, batch).reshape(B, 1, -1))
        slots, start = batch.slots, batch.start
        out = []
        for b, (slot, s0) in enumerate(zip(slots, start)):
            held = cache.cell_positions(kv, s0, x.device)
            keys = torch.cat([cache.k[kv][slot, :, : len(held)], k[b]], dim=1)
            vals = torch.cat([cache.v[kv][slot, :, : len(held)], v[b]], dim=1)
            kpos = torch.cat([held, torch.arange(s0, s0 + T, device=x.device)])[None]
            qpos = torch.arange(s0, s0 + T, device=x.device)[None]
            out.append(self._prefill(q[b : b + 1], keys[None], vals[None], qpos, kpos, len(held)))
        if self.owns_kv:  # after attending: a ring must not lose keys this chunk still reads
            for b, (slot, s0) in enumerate(zip(slots, start)):
                cache.write(kv, slot, s0, k[b], v[b])
        y = torch.cat(out).transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim)
        return self.o(y)

    def _decode(self, q, k, v, cache: KVCache, kv: int, batch: Batch):
        """One new token per sequence, the whole batch in tensors (no per-sequence Python,
        so a GPU can capture it as a graph). Writing its key first is safe: in a ring it
        replaces position n - W, which query n no longer sees."""
        pos = batch.pos[:, 0]
        if self.owns_kv and batch.slots is not None and len(batch.slots) == 1:  # a plain copy, no scatter
            slot, cell = batch.slots[0], batch.start[0] % cache.cells[kv]
            cache.k[kv][slot, :, cell] = k[0, :, 0]
            cache.v[kv][slot, :, cell] = v[0, :, 0]
        elif self.owns_kv:
            cells = pos % cache.cells[kv]
            cache.k[kv][batch.slot_t, :, cells] = k[:, :, 0]
            cache.v[kv][batch.slot_t, :, cells] = v[:, :, 0]
        return attention_decode(q[:, :, 0], cache.k[kv], cache.v[kv], batch.slot_t, pos, scale=self.c.scale,
                                window=self.window, softcap=self.c.attn_softcap)

    def _prefill(self, q, k, v, q_pos, k_pos, n_cached: int):
        """A chunk's queries over the cached keys and its own (from ``n_cached`` on, in
        order), masked by position."""
        c = self.c
        if q.is_cuda:
            from conclave.kernels.attention.prefill import attention_prefill

            return attention_prefill(q, k, v, q_pos, k_pos, scale=c.scale, window=self.window, softcap=c.attn_softcap,
                                     ordered_from=n_cached)
        if c.attn_softcap is not None:
            return attention_naive(q, k, v, q_pos, k_pos, scale=c.scale, window=self.window, softcap=c.attn_softcap)
        mask = visible(q_pos, k_pos, self.window)[:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=c.scale, enable_gqa=True)


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate_up = Dense(c.dim, 2 * c.ffn_dim)  # both in one product; loading concatenates them
        self.down = Dense(c.ffn_dim, c.dim)
        self.act = F.silu if c.act == "silu" else (lambda x: F.gelu(x, approximate="tanh"))

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


class Block(nn.Module):
    def __init__(self, c: Config, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(c, layer)
        self.mlp_norm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = MLP(c)
        if c.sandwich_norm:
            self.post_attn_norm = RMSNorm(c.dim, c.norm_eps)
            self.post_mlp_norm = RMSNorm(c.dim, c.norm_eps)
        self.sandwich = c.sandwich_norm

    def forward(self, x, cache, batch, rope_cs, shared):
        h = self.attn(self.attn_norm(x), cache, batch, rope_cs, shared)
        x = x + (self.post_attn_norm(h) if self.sandwich else h)
        h = self.mlp(self.mlp_norm(x))
        return x + (self.post_mlp_norm(h) if self.sandwich else h)


class Transformer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList(Block(c, i) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.head = Dense(c.dim, c.vocab_size)  # holds the embedding's transpose when tied
        self.ropes = [c.rope_of(i) for i in range(c.n_layers)]  # (base, scaling) of each layer
        self._freqs: dict = {}  # RoPE frequencies per (base, scaling, device): made once, outside any graph capture

    @property
    def dtype(self):
        return self.head.weight.dtype

    @property
    def device(self):
        return self.head.weight.device

    def new_cache(self, slots: int, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, slots, max_len or self.config.max_len, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cache: KVCache, slots: list[int] | None = None, *, all_logits: bool = False):
        """tokens [B, T] continue the sequences in cache ``slots`` (default 0..B-1); returns
        float32 logits after the last token [B, V] (or every token [B, T, V]) and advances
        the cache."""
        B, T = tokens.shape
        slots = list(range(B)) if slots is None else slots
        start = [cache.length[s] for s in slots]
        if max(start) + T > cache.max_len:
            raise ValueError(f"{max(start) + T} tokens exceed the cache of {cache.max_len}")
        dev = tokens.device
        pos = torch.tensor(start, device=dev)[:, None] + torch.arange(T, device=dev)
        logits = self.run(tokens, cache, Batch(torch.tensor(slots, device=dev), pos, slots, start), all_logits=all_logits)
        for s in slots:
            cache.length[s] += T
        return logits

    @torch.no_grad()
    def run(self, tokens: torch.Tensor, cache: KVCache, batch: Batch, *, all_logits: bool = False) -> torch.Tensor:
        """The forward itself; it leaves ``cache.length`` to the caller. A decoding batch
        given as tensors only (no lists) runs without reading a value back to the host."""
        c = self.config
        tables = {}
        for rope_of in set(self.ropes):
            key = (*rope_of, batch.pos.device)
            if key not in self._freqs:
                freq, scale = frequencies(c.head_dim, *rope_of)
                self._freqs[key] = (freq.to(batch.pos.device), scale)
            tables[rope_of] = rope_tables(batch.pos, self._freqs[key][0], self.dtype, self._freqs[key][1])
        x = self.embed(tokens)
        if c.embed_scale != 1.0:
            x = x * torch.tensor(c.embed_scale, dtype=x.dtype)  # HF rounds the scale to the weights' type
        shared: dict = {}
        for block, rope_of in zip(self.blocks, self.ropes):
            x = block(x, cache, batch, tables[rope_of], shared)
        if not all_logits:
            x = x[:, -1]
        logits = self.head(self.norm(x)).float()
        if c.final_softcap is not None:
            logits = c.final_softcap * torch.tanh(logits / c.final_softcap)
        return logits


class GraphedDecode:
    """One decoding step for a fixed batch size, captured once as a CUDA graph and replayed.

    A 7B-shaped step is some 500 kernels; launched one by one from Python their overhead
    alone would cap batch-1 decoding well below the bandwidth limit. The graph owns its
    inputs (``tokens``, ``slot_t``, ``pos``) and reads and writes the cache in place.
    Warming up runs the step for real, so it writes into ``scratch``, a cache slot no
    sequence uses."""

    def __init__(self, model: Transformer, cache: KVCache, batch: int, scratch: int):
        dev = model.device
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.slot_t = torch.full((batch,), scratch, dtype=torch.long, device=dev)
        self.pos = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.graph = None
        self._run = lambda: model.run(self.tokens, cache, Batch(self.slot_t, self.pos))
        if dev.type != "cuda":  # nothing to capture: the same static inputs, run eagerly
            return
        with torch.cuda.device(dev):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # compile the Triton kernels, let cuBLAS pick its algorithms
                for _ in range(2):
                    self._run()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self._run()

    def __call__(self, tokens: torch.Tensor, slot_t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits [batch, V] after ``tokens`` [batch, 1] at positions ``pos`` [batch, 1] of
        slots ``slot_t``; overwritten by the next call."""
        self.tokens.copy_(tokens)
        self.slot_t.copy_(slot_t)
        self.pos.copy_(pos)
        if self.graph is None:
            return self._run()
        with torch.cuda.device(self.tokens.device):
            self.graph.replay()
        return self.logits
