"""Random-weight RWKV-4 checkpoints in the official .pth key layout, for tests and
benchmarks (real RWKV weights are not available offline). The values are spread the way
trained models spread them: decays from slow to fast, mixes in [0, 1], LayerNorm gains
near 1, so that the state and the logits exercise the same ranges."""

from pathlib import Path

import torch


def official_state_dict(n_layer: int, n_embd: int, vocab: int, *, n_ffn: int | None = None, seed: int = 0,
                        dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_ffn = n_ffn or 4 * n_embd
    rnd = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g) * scale).to(dtype)  # noqa: E731
    uni = lambda *shape: torch.rand(*shape, generator=g).to(dtype)  # noqa: E731
    sd = {
        "emb.weight": rnd(vocab, n_embd, scale=0.5),
        "blocks.0.ln0.weight": 1 + rnd(n_embd, scale=0.1), "blocks.0.ln0.bias": rnd(n_embd, scale=0.1),
        "ln_out.weight": 1 + rnd(n_embd, scale=0.1), "ln_out.bias": rnd(n_embd, scale=0.1),
        "head.weight": rnd(vocab, n_embd, scale=n_embd ** -0.5),
    }
    for i in range(n_layer):
        b = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            sd[f"{b}{ln}.weight"] = 1 + rnd(n_embd, scale=0.1)
            sd[f"{b}{ln}.bias"] = rnd(n_embd, scale=0.1)
        sd[b + "att.time_decay"] = (torch.linspace(-5, 3, n_embd) + torch.randn(n_embd, generator=g) * 0.3).to(dtype)
        sd[b + "att.time_first"] = (torch.full((n_embd,), 0.3 * 1.0) + rnd(n_embd, scale=0.5)).to(dtype)
        for n in "kvr":
            sd[f"{b}att.time_mix_{n}"] = uni(1, 1, n_embd)
        for n in ("key", "value", "receptance"):
            sd[f"{b}att.{n}.weight"] = rnd(n_embd, n_embd, scale=n_embd ** -0.5)
        sd[b + "att.output.weight"] = rnd(n_embd, n_embd, scale=n_embd ** -0.5)
        for n in "kr":
            sd[f"{b}ffn.time_mix_{n}"] = uni(1, 1, n_embd)
        sd[b + "ffn.key.weight"] = rnd(n_ffn, n_embd, scale=n_embd ** -0.5)
        sd[b + "ffn.receptance.weight"] = rnd(n_embd, n_embd, scale=n_embd ** -0.5)
        sd[b + "ffn.value.weight"] = rnd(n_embd, n_ffn, scale=n_ffn ** -0.5)
    return sd


def save_checkpoint(path: Path, n_layer: int, n_embd: int, vocab: int, **kw) -> Path:
    torch.save(official_state_dict(n_layer, n_embd, vocab, **kw), path)
    return path


def random_model(c, *, dtype=torch.bfloat16, device="cuda", seed: int = 0):
    """An RWKV-4 model of config ``c`` with random weights made where it will run: for
    shapes (7B) whose checkpoint would take longer to write and read than to benchmark."""
    from conclave.local_models.rwkv.model import Rwkv4

    torch.manual_seed(seed)
    with torch.device(device):
        model = Rwkv4(c).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mix_k") or name.endswith("mix_v") or name.endswith("mix_r"):
                p.uniform_(0, 1)
            elif ".ln" in name or name.startswith("ln_out"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
            else:
                p.normal_(0, p.shape[0] ** -0.5)
        for block in model.blocks:
            block.att.w.copy_(-torch.exp(torch.linspace(-5, 3, c.n_att, device=device)))
            block.att.u.normal_(0.3, 0.5)
    return model.eval()
