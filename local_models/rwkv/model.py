"""RWKV-4 (Peng et al. 2023) in one file: the blocks, the recurrent state, and a forward
that runs a whole prompt in parallel or one token per sequence, with the same results.

Each block is LayerNorm -> time mixing -> residual, LayerNorm -> channel mixing ->
residual. Both mixers blend each token with the one before it (token shift); time mixing
then runs WKV (kernels/wkv4) and gates it with sigmoid(r); channel mixing is a squared
ReLU MLP gated the same way. The first block's extra LayerNorm (ln0) is folded into the
embedding when the weights are loaded, as the official code does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from conclave.kernels.wkv4 import EMPTY_P, wkv4
from conclave.local_models.dense import Dense


@dataclass(frozen=True)
class RwkvConfig:
    n_layer: int
    n_embd: int
    n_att: int
    n_ffn: int
    vocab_size: int
    layer_norm_eps: float = 1e-5


@dataclass
class State:
    """Everything a sequence carries between tokens, per layer and per sequence in the batch:
    the last LayerNorm outputs that feed the token shifts (att_x, ffn_x), and the WKV state
    (aa, bb, pp), which stays float32 whatever the model's dtype. Shapes are [layers, batch, C]."""

    att_x: torch.Tensor
    aa: torch.Tensor
    bb: torch.Tensor
    pp: torch.Tensor
    ffn_x: torch.Tensor

    @classmethod
    def zeros(cls, c: RwkvConfig, batch: int, *, dtype=torch.float32, device=None) -> State:
        x = torch.zeros(c.n_layer, batch, c.n_embd, dtype=dtype, device=device)
        a = torch.zeros(c.n_layer, batch, c.n_att, dtype=torch.float32, device=device)
        return cls(x, a, a.clone(), torch.full_like(a, EMPTY_P), x.clone())

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    def copy(self) -> State:
        return State(*(t.clone() for t in self.tensors()))

    @property
    def batch(self) -> int:
        return self.aa.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def rows(self, index) -> State:
        """Some sequences of the batch (a copy)."""
        return State(*(t[:, index].clone() for t in self.tensors()))

    def put(self, index, other: State) -> None:
        """Overwrite some sequences of this batch with ``other``'s."""
        for mine, theirs in zip(self.tensors(), other.tensors()):
            mine[:, index] = theirs


def shifted(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Each token's predecessor: ``last`` (from the state) for the first, then x itself."""
    if x.shape[1] == 1:
        return last[:, None]
    return torch.cat([last[:, None], x[:, :-1]], dim=1)


class TimeMix(nn.Module):
    def __init__(self, c: RwkvConfig):
        super().__init__()
        self.mix_k = nn.Parameter(torch.zeros(c.n_embd))
        self.mix_v = nn.Parameter(torch.zeros(c.n_embd))
        self.mix_r = nn.Parameter(torch.zeros(c.n_embd))
        # w = -exp(time_decay) and u = time_first, kept in float32 like the state
        self.register_buffer("w", torch.zeros(c.n_att, dtype=torch.float32))
        self.register_buffer("u", torch.zeros(c.n_att, dtype=torch.float32))
        self.key = Dense(c.n_embd, c.n_att)
        self.value = Dense(c.n_embd, c.n_att)
        self.receptance = Dense(c.n_embd, c.n_att)
        self.output = Dense(c.n_att, c.n_embd)

    def forward(self, x: torch.Tensor, s: State, i: int) -> torch.Tensor:
        prev = shifted(x, s.att_x[i])  # a view of the state at T = 1: use it before overwriting
        k = self.key(torch.lerp(prev, x, self.mix_k))
        v = self.value(torch.lerp(prev, x, self.mix_v))
        r = self.receptance(torch.lerp(prev, x, self.mix_r))
        s.att_x[i] = x[:, -1]
        y, (s.aa[i], s.bb[i], s.pp[i]) = wkv4(self.w, self.u, k, v, (s.aa[i], s.bb[i], s.pp[i]), r)
        return self.output(y.to(x.dtype))


class ChannelMix(nn.Module):
    def __init__(self, c: RwkvConfig):
        super().__init__()
        self.mix_k = nn.Parameter(torch.zeros(c.n_embd))
        self.mix_r = nn.Parameter(torch.zeros(c.n_embd))
        self.key = Dense(c.n_embd, c.n_ffn)
        self.receptance = Dense(c.n_embd, c.n_embd)
        self.value = Dense(c.n_ffn, c.n_embd)

    def forward(self, x: torch.Tensor, s: State, i: int) -> torch.Tensor:
        prev = shifted(x, s.ffn_x[i])
        k = torch.relu_(self.key(torch.lerp(prev, x, self.mix_k)))
        k = k * k  # squared ReLU; torch.square (pow) is several times slower on the CPU
        r = torch.sigmoid(self.receptance(torch.lerp(prev, x, self.mix_r)))
        s.ffn_x[i] = x[:, -1]
        return r * self.value(k)


class Block(nn.Module):
    def __init__(self, c: RwkvConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.ln2 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.att = TimeMix(c)
        self.ffn = ChannelMix(c)

    def forward(self, x: torch.Tensor, s: State, i: int) -> torch.Tensor:
        x = x + self.att(self.ln1(x), s, i)
        return x + self.ffn(self.ln2(x), s, i)


class Rwkv4(nn.Module):
    def __init__(self, c: RwkvConfig):
        super().__init__()
        self.config = c
        self.emb = nn.Embedding(c.vocab_size, c.n_embd)  # ln0 already applied
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_out = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.head = Dense(c.n_embd, c.vocab_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def new_state(self, batch: int) -> State:
        return State.zeros(self.config, batch, dtype=self.dtype, device=self.head.weight.device)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, state: State | None = None, *, all_logits: bool = False):
        """tokens [B, T] -> (float32 logits [B, V] after the last token, or [B, T, V] with
        ``all_logits``; the state after the last token). ``state`` is updated in place."""
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be [batch, time] with time >= 1, got {tuple(tokens.shape)}")
        s = state if state is not None else self.new_state(tokens.shape[0])
        x = self.emb(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, s, i)
        if not all_logits:
            x = x[:, -1]
        return self.head(self.ln_out(x)).float(), s


class GraphedStep:
    """One decoding step for a fixed batch, captured once as a CUDA graph and replayed.

    At batch 1 a 7B-shaped step is some 1,300 small kernels; launched one by one from
    Python, their overhead alone would hold decoding near 150 tok/s. The graph owns its
    inputs (``tokens``, ``state``): callers copy a batch's state in, replay, copy it out."""

    def __init__(self, model: Rwkv4, batch: int):
        self.device = dev = model.head.weight.device
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.state = model.new_state(batch)
        with torch.cuda.device(dev):  # graphs capture on the current device
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # compile the Triton kernels and let cuBLAS pick its algorithms
                for _ in range(2):
                    model(self.tokens, self.state)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits, _ = model(self.tokens, self.state)

    def __call__(self, tokens: torch.Tensor, state: State) -> torch.Tensor:
        """Logits after ``tokens`` [batch, 1]; ``state`` advances in place. The returned
        tensor is overwritten by the next call."""
        self.tokens.copy_(tokens)
        self.state.put(slice(None), state)
        with torch.cuda.device(self.device):
            self.graph.replay()
        state.put(slice(None), self.state)
        return self.logits
