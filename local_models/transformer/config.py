"""One configuration for the Mistral-style families we run (Llama, Mistral, Qwen2, Gemma 3),
read from an HF ``config.json`` or from GGUF metadata."""

from __future__ import annotations

from dataclasses import dataclass

from conclave.local_models.errors import BackendUnavailable, WeightsCorrupt
from conclave.local_models.transformer.rope_scaling import RopeScaling

ARCHS = ("llama", "mistral", "qwen2", "gemma3")


@dataclass(frozen=True)
class Config:
    arch: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    rope_base: float
    layer_types: tuple[str, ...]  # per layer: "full" or "sliding"
    sliding_window: int | None = None
    rope_local_base: float | None = None  # the sliding layers' own base (Gemma 3)
    act: str = "silu"  # silu (SwiGLU) or gelu_tanh (GeGLU)
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Gemma 3
    sandwich_norm: bool = False  # Gemma: norms after attention and after the MLP as well
    embed_scale: float = 1.0  # Gemma multiplies the embeddings by sqrt(dim)
    attn_scale: float | None = None  # default head_dim ** -0.5
    final_softcap: float | None = None
    attn_softcap: float | None = None
    tied: bool = False
    max_len: int = 8192
    kv_share: int = 1  # cross-layer attention: each group of kv_share adjacent layers shares one KV
    rope_scaling: RopeScaling | None = None  # for the layers on rope_base (Gemma's local layers have their own)

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise WeightsCorrupt(f"{self.n_heads} query heads cannot share {self.n_kv_heads} KV heads evenly")
        if len(self.layer_types) != self.n_layers or set(self.layer_types) - {"full", "sliding"}:
            raise WeightsCorrupt(f"layer types {self.layer_types} do not describe {self.n_layers} layers")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise WeightsCorrupt("sliding-window layers need a window size")

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.head_dim ** -0.5

    def rope_of(self, layer: int) -> tuple[float, RopeScaling | None]:
        """The RoPE base of a layer, and how it is stretched."""
        if self.layer_types[layer] == "sliding" and self.rope_local_base:
            return self.rope_local_base, None
        return self.rope_base, self.rope_scaling

    def kv_layer(self, layer: int) -> int:
        """The layer whose keys and values ``layer`` attends to (itself unless KV is shared)."""
        return layer - layer % self.kv_share


def _rope(params: dict | None, key: str | None = None, max_len: int | None = None) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from HF's rope_parameters (or a 4.x rope_scaling dict with rope_theta in it)."""
    if params is None:
        return 10000.0, None
    if key is not None and key in params:
        params = params[key]
    theta = float(params.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind in ("default", None):
        return theta, None
    if kind not in ("linear", "llama3", "yarn"):
        raise BackendUnavailable(f"RoPE scaling {kind!r} is not supported by the native engine (linear, llama3, yarn are)")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise BackendUnavailable("partial rotary embeddings are not supported by the native engine")
    original = params.get("original_max_position_embeddings")
    factor = params.get("factor") or (max_len / original if max_len and original else None)
    if factor is None or (kind in ("llama3", "yarn") and not original):
        raise WeightsCorrupt(f"RoPE scaling {kind!r} needs its factor and original_max_position_embeddings: {params}")
    optional = {k: params[k] for k in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor",
                                       "mscale", "mscale_all_dim", "truncate") if params.get(k) is not None}
    return theta, RopeScaling(kind, float(factor), original, **optional)


def from_hf(cfg: dict) -> Config:
    """From an HF config.json (transformers 4.x or 5.x spellings)."""
    if cfg.get("model_type") == "gemma3" and "text_config" in cfg:
        cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
    kind = cfg.get("model_type")
    arch = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gemma3_text": "gemma3"}.get(kind)
    if arch is None:
        raise BackendUnavailable(f"model_type {kind!r} is not one the native transformer runs ({', '.join(ARCHS)})")
    n_layers, dim, heads = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or dim // heads
    window = cfg.get("sliding_window")
    if arch == "qwen2" and not cfg.get("use_sliding_window"):
        window = None
    types = cfg.get("layer_types")
    if types:
        types = tuple("sliding" if t == "sliding_attention" else "full" for t in types)
    else:
        types = ("sliding" if window else "full",) * n_layers
    if "sliding" not in types:
        window = None
    rope = cfg.get("rope_parameters")
    if rope is None and (cfg.get("rope_scaling") or "rope_theta" in cfg):  # transformers 4.x spelling
        rope = {**(cfg.get("rope_scaling") or {}), "rope_theta": cfg.get("rope_theta", 10000.0)}
    max_len = cfg.get("max_position_embeddings", 8192)
    theta, scaling = _rope(rope, "full_attention", max_len)
    gemma = arch == "gemma3"
    local_base = None
    if gemma:
        local_base = _rope(rope, "sliding_attention")[0] if rope and "sliding_attention" in rope else cfg.get("rope_local_base_freq", 10000.0)
    return Config(
        arch=arch, vocab_size=cfg["vocab_size"], dim=dim, n_layers=n_layers, n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=head_dim, ffn_dim=cfg["intermediate_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_base=theta, rope_scaling=scaling, layer_types=types,
        sliding_window=window, rope_local_base=local_base,
        act="gelu_tanh" if gemma else "silu", qkv_bias=arch == "qwen2" or bool(cfg.get("attention_bias")),
        qk_norm=gemma, sandwich_norm=gemma, embed_scale=dim ** 0.5 if gemma else 1.0,
        attn_scale=cfg["query_pre_attn_scalar"] ** -0.5 if gemma else None,
        final_softcap=cfg.get("final_logit_softcapping"), attn_softcap=cfg.get("attn_logit_softcapping"),
        tied=bool(cfg.get("tie_word_embeddings", gemma)), max_len=max_len,
    )


def _gguf_rope(meta: dict, arch: str, freq_factors: tuple[float, ...] | None) -> RopeScaling | None:
    if freq_factors is not None:  # llama.cpp stores Llama 3's scheme as a divisor per frequency
        return RopeScaling("factors", freq_factors=freq_factors)
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    if kind not in ("linear", "yarn"):
        raise BackendUnavailable(f"RoPE scaling {kind!r} is not supported by the native engine (linear, yarn are)")
    factor = float(meta.get(f"{arch}.rope.scaling.factor", 1.0))
    original = meta.get(f"{arch}.rope.scaling.original_context_length")
    if kind == "yarn" and not original:
        raise WeightsCorrupt(f"YaRN RoPE scaling needs {arch}.rope.scaling.original_context_length")
    betas = {k: float(meta[f"{arch}.rope.scaling.yarn_{k}"]) for k in ("beta_fast", "beta_slow")
             if f"{arch}.rope.scaling.yarn_{k}" in meta}
    return RopeScaling(kind, factor, int(original) if original else None, **betas)


def from_gguf(meta: dict, vocab_size: int, tied: bool, freq_factors: tuple[float, ...] | None = None) -> Config:
    """From GGUF metadata (``general.architecture`` and its ``<arch>.*`` keys), as llama.cpp reads it."""
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise BackendUnavailable(f"GGUF architecture {arch!r} is not one the native transformer runs ({', '.join(ARCHS)})")

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise WeightsCorrupt(f"the GGUF metadata has no {arch}.{key}")
        return value

    n_layers, dim, heads = int(get("block_count")), int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", dim // heads))
    window = meta.get(f"{arch}.attention.sliding_window")
    gemma = arch == "gemma3"
    if gemma:  # llama.cpp's own rule for Gemma 3: every sixth layer is global
        types = tuple("full" if (i + 1) % 6 == 0 else "sliding" for i in range(n_layers))
    else:
        types = ("sliding" if window else "full",) * n_layers
    return Config(
        arch=arch, vocab_size=vocab_size, dim=dim, n_layers=n_layers, n_heads=heads,
        n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)), head_dim=head_dim,
        ffn_dim=int(get("feed_forward_length")), norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(meta.get(f"{arch}.rope.freq_base", 10000.0)), rope_scaling=_gguf_rope(meta, arch, freq_factors),
        layer_types=types,
        sliding_window=int(window) if window else None, rope_local_base=10000.0 if gemma else None,
        act="gelu_tanh" if gemma else "silu", qkv_bias=arch == "qwen2", qk_norm=gemma, sandwich_norm=gemma,
        embed_scale=dim ** 0.5 if gemma else 1.0, attn_scale=head_dim ** -0.5 if gemma else None,
        final_softcap=meta.get(f"{arch}.final_logit_softcapping"), attn_softcap=meta.get(f"{arch}.attn_logit_softcapping"),
        tied=tied, max_len=int(meta.get(f"{arch}.context_length", 8192)),
    )
