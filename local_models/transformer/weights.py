"""Filling the transformer from HF safetensors folders or GGUF files.

Both are renamed to our module names (see model.py). GGUF tensors are dequantized to
float32 by the ``gguf`` package. Two llama.cpp conventions are undone on the way: the
Llama converter permutes the rows of Q and K for its interleaved RoPE (we rotate halves,
as HF does), and the Gemma converter stores norm weights as 1 + w, which is what we
multiply by anyway (HF stores w, so its Gemma norms get the 1 added here).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch

from conclave.local_models.errors import WeightsCorrupt
from conclave.local_models.transformer.config import Config, from_gguf, from_hf
from conclave.local_models.transformer.model import Transformer

_HF = [
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.norm\.weight", "norm.weight"),
    (r"lm_head\.weight", "head.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.(q|k|v|o)_proj\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"model\.layers\.(\d+)\.self_attn\.(q|k)_norm\.weight", r"blocks.\1.attn.\2_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blocks.\1.mlp.\2.weight"),
    (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", r"blocks.\1.mlp_norm.weight"),
    (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blocks.\1.post_mlp_norm.weight"),
]
_GGUF = [
    (r"token_embd\.weight", "embed.weight"),
    (r"output_norm\.weight", "norm.weight"),
    (r"output\.weight", "head.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", r"blocks.\1.attn_norm.weight"),
    (r"blk\.(\d+)\.attn_(q|k|v)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"blk\.(\d+)\.attn_output\.weight", r"blocks.\1.attn.o.weight"),
    (r"blk\.(\d+)\.attn_(q|k)_norm\.weight", r"blocks.\1.attn.\2_norm.weight"),
    (r"blk\.(\d+)\.ffn_(gate|up|down)\.weight", r"blocks.\1.mlp.\2.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"blocks.\1.mlp_norm.weight"),
    (r"blk\.(\d+)\.post_attention_norm\.weight", r"blocks.\1.post_attn_norm.weight"),
    (r"blk\.(\d+)\.post_ffw_norm\.weight", r"blocks.\1.post_mlp_norm.weight"),
]


def _rename(name: str, rules, c: Config) -> str | None:
    # HF's post_attention_layernorm is the pre-MLP norm, except in Gemma's sandwich
    m = re.fullmatch(r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", name)
    if m:
        return f"blocks.{m[1]}.{'post_attn_norm' if c.sandwich_norm else 'mlp_norm'}.weight"
    for pattern, repl in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def unpermute_qk(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> rotated halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _fuse(tensors: dict[str, torch.Tensor], c: Config) -> None:
    """Q, K, V into one matrix and gate, up into another, where all their parts are present.
    With cross-layer KV sharing, a layer that reads another's keys and values has no use for
    its own K and V projections (nor its key norm): they are dropped."""
    for i in range(c.n_layers):
        b = f"blocks.{i}."
        if c.kv_layer(i) != i:
            for name in (f"{b}attn.k.weight", f"{b}attn.v.weight", f"{b}attn.k.bias", f"{b}attn.v.bias", f"{b}attn.k_norm.weight"):
                tensors.pop(name, None)
        for kind in ("weight", "bias"):
            names = [f"{b}attn.{n}.{kind}" for n in ("q", "k", "v")]
            if c.kv_layer(i) != i:
                names = names[:1]
            if all(n in tensors for n in names):
                tensors[f"{b}attn.qkv.{kind}"] = torch.cat([tensors.pop(n) for n in names])
        names = [f"{b}mlp.gate.weight", f"{b}mlp.up.weight"]
        if all(n in tensors for n in names):
            tensors[f"{b}mlp.gate_up.weight"] = torch.cat([tensors.pop(n) for n in names])


def build(c: Config, tensors: dict[str, torch.Tensor], *, source: str, gemma_norm_plus_one: bool,
          dtype=torch.float32, device="cpu") -> Transformer:
    """A model from tensors already under our names, [out, in] like nn.Linear."""
    with torch.device("meta"):
        model = Transformer(c)
    want = model.state_dict()
    _fuse(tensors, c)
    if c.tied and "head.weight" not in tensors and "embed.weight" in tensors:
        tensors["head.weight"] = tensors["embed.weight"]
    missing = [k for k in want if k not in tensors]
    extra = [k for k in tensors if k not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: " + ", ".join(missing[:6]) + (" …" if len(missing) > 6 else ""))
        if extra:
            parts.append(f"unexpected {len(extra)}: " + ", ".join(extra[:6]) + (" …" if len(extra) > 6 else ""))
        raise WeightsCorrupt(f"{source} does not fit a {c.arch} model of its own config: " + "; ".join(parts))
    out = {}
    for key, t in tensors.items():
        t = t.to(torch.float32)
        if key.endswith(".weight") and key != "embed.weight" and t.ndim == 2:
            t = t.t()  # Dense keeps [in, out]
        if gemma_norm_plus_one and key.endswith("norm.weight"):
            t = t + 1.0
        if tuple(t.shape) != tuple(want[key].shape):
            raise WeightsCorrupt(f"{source}: {key} has shape {tuple(t.shape)}, expected {tuple(want[key].shape)}")
        out[key] = t.to(device=device, dtype=dtype).contiguous()
    model.load_state_dict(out, assign=True)
    return model.eval()


def _sharing(c: Config, kv_share: int) -> Config:
    if kv_share < 1:
        raise ValueError(f"kv_share is the number of adjacent layers that share keys and values (>= 1), not {kv_share}")
    return dataclasses.replace(c, kv_share=kv_share)


def load_hf(path: Path, *, dtype=torch.float32, device="cpu", kv_share: int = 1) -> Transformer:
    """``kv_share`` > 1 shares keys and values across each group of that many adjacent layers
    (cross-layer attention, Brandon et al. 2024): a model not trained so loses quality."""
    path = Path(path)
    try:
        c = from_hf(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise WeightsCorrupt(f"{path}/config.json is missing or not an HF model config: {e}") from e
    c = _sharing(c, kv_share)
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightsCorrupt(f"{path} holds no *.safetensors weights")
    tensors = {}
    for f in files:
        for name, t in load_file(str(f)).items():
            ours = _rename(name, _HF, c)
            tensors[ours or name] = t
    return build(c, tensors, source=str(path), gemma_norm_plus_one=c.arch == "gemma3", dtype=dtype, device=device)


def gguf_metadata(reader) -> dict:
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
            continue  # the vocabulary itself is read by the tokenizer
        try:
            meta[key] = field.contents()
        except Exception:  # noqa: BLE001 - a field we do not need and cannot decode
            continue
    return meta


def load_gguf(path: Path, *, dtype=torch.float32, device="cpu", kv_share: int = 1) -> Transformer:
    """As ``load_hf``, from a GGUF file (dequantized)."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise WeightsCorrupt(f"{path} could not be read as GGUF ({type(e).__name__}: {e})") from e
    meta = gguf_metadata(reader)
    names = {t.name for t in reader.tensors}
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise WeightsCorrupt(f"{path} has no token_embd.weight")
    factors = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if factors is not None:
        factors = tuple(float(f) for f in np.asarray(gguf.quants.dequantize(factors.data, factors.tensor_type)).ravel())
    c = _sharing(from_gguf(meta, vocab_size=int(embd.shape[1]), tied="output.weight" not in names, freq_factors=factors), kv_share)
    tensors = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # read into the config above
            continue
        ours = _rename(t.name, _GGUF, c)
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        w = torch.from_numpy(np.array(data, dtype=np.float32)).reshape([int(d) for d in reversed(t.shape)])
        if c.arch == "llama" and ours and re.fullmatch(r"blocks\.\d+\.attn\.(q|k)\.weight", ours):
            w = unpermute_qk(w, c.n_heads if ours.endswith("q.weight") else c.n_kv_heads)
        tensors[ours or t.name] = w
    return build(c, tensors, source=str(path), gemma_norm_plus_one=False, dtype=dtype, device=device)
