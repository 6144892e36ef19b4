"""The matrix products of our native engines."""

from __future__ import annotations

import torch
from torch import nn


class Dense(nn.Module):
    """x @ W, with W stored [in, out].

    Decoding reads every weight once per step, so on a CPU its speed is the speed at which
    the matrix-vector products stream W from memory, and torch's runs on one core. For a
    few rows we split the inner dimension into one slice per thread, W viewed as
    [threads, in / threads, out] (no copy), and let ``bmm`` run the slices in parallel,
    then add the partial sums. Measured on 2 cores with cold caches: nn.Linear's layout
    12-17 GB/s, ``x @ W`` 15-24 GB/s, the split 26-39 GB/s. Prompts, bound by arithmetic,
    take the plain product."""

    SPLIT_ROWS = 16

    def __init__(self, n_in: int, n_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(n_out), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_in = x.shape[-1]
        rows = x.numel() // n_in
        split = torch.get_num_threads()
        if x.device.type != "cpu" or rows > self.SPLIT_ROWS or split < 2 or n_in % split:
            y = x @ self.weight
        else:
            xs = x.reshape(rows, split, n_in // split).transpose(0, 1)
            parts = torch.bmm(xs, self.weight.view(split, n_in // split, -1))
            y = parts.sum(0).reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias
