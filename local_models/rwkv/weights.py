"""Reading RWKV checkpoints: the official ``.pth`` layout (BlinkDL's RWKV-LM and ChatRWKV)
and the HF ``RwkvForCausalLM`` layout (a folder with config.json, or one weights file).

Both become the official key names first; ``build`` then applies the official
conventions (w = -exp(time_decay); ln0 folded into the embedding) and fills the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from conclave.local_models.errors import BackendUnavailable, WeightsCorrupt
from conclave.local_models.rwkv.model import Rwkv4, RwkvConfig

# HF names -> official names, applied to the part after "rwkv."
_HF_RENAMES = (
    ("embeddings.", "emb."),
    ("pre_ln.", "ln0."),
    (".attention.", ".att."),
    (".feed_forward.", ".ffn."),
    ("time_mix_key", "time_mix_k"),
    ("time_mix_value", "time_mix_v"),
    ("time_mix_receptance", "time_mix_r"),
)


def block_keys(i: int) -> list[str]:
    b = f"blocks.{i}."
    keys = [b + n for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")]
    keys += [b + "att." + n for n in ("time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r",
                                      "key.weight", "value.weight", "receptance.weight", "output.weight")]
    keys += [b + "ffn." + n for n in ("time_mix_k", "time_mix_r", "key.weight", "receptance.weight", "value.weight")]
    return keys


def expected_keys(n_layer: int) -> list[str]:
    keys = ["emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "ln_out.bias", "head.weight"]
    for i in range(n_layer):
        keys += block_keys(i)
    return keys


def from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in sd.items():
        if key.startswith("rwkv."):
            key = key[len("rwkv."):]
            for old, new in _HF_RENAMES:
                key = key.replace(old, new)
        out[key] = t
    return out


def version_of(keys) -> str:
    """The RWKV generation a checkpoint belongs to, from the keys only its layout has."""
    text = " ".join(keys)
    if "att.x_r" in text or "att.w0" in text:
        return "7"
    if "time_maa" in text:
        return "6"
    if "ln_x" in text or "att.gate" in text:
        return "5"
    return "4"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise WeightsCorrupt(f"no RWKV checkpoint at {path}")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise WeightsCorrupt(f"{path} holds no *.safetensors or pytorch_model*.bin weights")
        sd = {}
        for f in files:
            sd.update(read_state_dict(f))
        return sd
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # files in the legacy (pre-zip) format cannot be mapped
            if "mmap" not in str(e):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and header errors all mean the same to the user
        raise WeightsCorrupt(f"{path} could not be read as an RWKV checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsCorrupt(f"{path} is not a state dict of tensors (a training checkpoint? save model.state_dict())")
    return sd


def config_of(sd: dict[str, torch.Tensor], path: Path | str = "checkpoint", layer_norm_eps: float = 1e-5) -> RwkvConfig:
    version = version_of(sd)
    if version != "4":
        raise BackendUnavailable(f"{path} is an RWKV-{version} checkpoint; the native engine runs RWKV-4 so far")
    for key in ("emb.weight", "blocks.0.att.key.weight", "blocks.0.ffn.key.weight"):
        if key not in sd:
            raise WeightsCorrupt(f"{path} is not an RWKV-4 checkpoint: it has no {key!r}")
    try:
        n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        vocab, n_embd = sd["emb.weight"].shape
        c = RwkvConfig(n_layer=n_layer, n_embd=n_embd, n_att=sd["blocks.0.att.key.weight"].shape[0],
                       n_ffn=sd["blocks.0.ffn.key.weight"].shape[0], vocab_size=vocab, layer_norm_eps=layer_norm_eps)
    except (ValueError, IndexError) as e:  # a block key that is not blocks.<n>, a tensor of the wrong rank
        raise WeightsCorrupt(f"{path} is not a well-formed RWKV-4 checkpoint: {e}") from e
    missing = [k for k in expected_keys(n_layer) if k not in sd]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise WeightsCorrupt(f"{path} is missing {len(missing)} RWKV-4 weights: {shown}")
    return c


def build(sd: dict[str, torch.Tensor], c: RwkvConfig, *, dtype=torch.float32, device="cpu", path="checkpoint") -> Rwkv4:
    """An RWKV-4 model holding the official-layout weights ``sd``."""
    with torch.device("meta"):
        model = Rwkv4(c)
    emb = F.layer_norm(sd["emb.weight"].float(), (c.n_embd,), sd["blocks.0.ln0.weight"].float(),
                       sd["blocks.0.ln0.bias"].float(), eps=c.layer_norm_eps)
    # checkpoints hold matrices as [out, in] (nn.Linear); Dense keeps them [in, out]
    ours = {"emb.weight": emb, "ln_out.weight": sd["ln_out.weight"], "ln_out.bias": sd["ln_out.bias"],
            "head.weight": sd["head.weight"].t()}
    for i in range(c.n_layer):
        b = f"blocks.{i}."
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
            ours[b + n] = sd[b + n]
        for n in ("att.key", "att.value", "att.receptance", "att.output", "ffn.key", "ffn.receptance", "ffn.value"):
            ours[f"{b}{n}.weight"] = sd[f"{b}{n}.weight"].t()
        for part, names in (("att", "kvr"), ("ffn", "kr")):
            for n in names:
                ours[f"{b}{part}.mix_{n}"] = sd[f"{b}{part}.time_mix_{n}"].reshape(-1)
        ours[b + "att.w"] = -torch.exp(sd[b + "att.time_decay"].float().reshape(-1))
        ours[b + "att.u"] = sd[b + "att.time_first"].float().reshape(-1)
    for key, t in model.state_dict().items():
        if tuple(ours[key].shape) != tuple(t.shape):
            found, want = tuple(ours[key].shape), tuple(t.shape)
            if key.endswith("weight") and len(want) == 2 and key not in ("emb.weight",):
                found, want = found[::-1], want[::-1]  # report in the checkpoint's [out, in] order
            raise WeightsCorrupt(f"{path}: {key} has shape {found}, expected {want}")
    keep_fp32 = {k for k in ours if k.endswith((".w", ".u"))}
    ours = {k: (v.to(device, torch.float32) if k in keep_fp32 else v.to(device, dtype)).contiguous() for k, v in ours.items()}
    model.load_state_dict(ours, assign=True)
    return model.eval()


def hf_layer_norm_eps(path: Path) -> float:
    cfg = Path(path) / "config.json" if Path(path).is_dir() else None
    if cfg and cfg.exists():
        return float(json.loads(cfg.read_text()).get("layer_norm_epsilon", 1e-5))
    return 1e-5


def load(path: Path, *, dtype=torch.float32, device="cpu") -> Rwkv4:
    """An RWKV-4 model from an official .pth, a .safetensors file, or an HF folder."""
    sd = from_hf(read_state_dict(path))
    c = config_of(sd, path, hf_layer_norm_eps(path))
    return build(sd, c, dtype=dtype, device=device, path=path)
