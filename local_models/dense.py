"""The matrix products of our native engines."""

from __future__ import annotations

import torch
from torch import nn


class Dense(nn.Module):
    """x @ W, with W stored [in, out].

    Decoding reads every weight once per step, so on a CPU its speed is the speed at which
    the products stream W from memory. Measured on 2 cores with cold caches (SmolLM2's
    shapes, fp32):

    - one row: torch's matrix-vector product runs on one core (``x @ W`` 15-24 GB/s). We
      split the inner dimension into one slice per thread, W viewed as [threads, in /
      threads, out] (no copy), let ``bmm`` run the slices in parallel and add the partial
      sums: 26-43 GB/s;
    - 2 to 16 rows (a batch of decoding slots): MKL's products fall to 7-11 GB/s, because
      each call repacks W. oneDNN's product on a weight packed once ahead of time holds
      17-30 GB/s. The packed copy is made on the first such call, so only an engine that
      batches pays its memory;
    - more rows (prompts) are bound by arithmetic and take the plain product.
    """

    SPLIT_ROWS = 16

    def __init__(self, n_in: int, n_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(n_out), requires_grad=False) if bias else None
        self._packed: tuple[tuple, torch.Tensor] | None = None  # (which weight it packs, oneDNN's layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_in = x.shape[-1]
        rows = x.numel() // n_in
        threads = torch.get_num_threads()
        if x.device.type != "cpu" or rows > self.SPLIT_ROWS:
            y = x @ self.weight
        elif rows > 1 and x.dtype == torch.float32 and (packed := self._pack()) is not None:
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, n_in), packed, None, "none", [], "")
            y = y.reshape(*x.shape[:-1], -1)
        elif threads >= 2 and n_in % threads == 0:
            xs = x.reshape(rows, threads, n_in // threads).transpose(0, 1)
            parts = torch.bmm(xs, self.weight.view(threads, n_in // threads, -1))
            y = parts.sum(0).reshape(*x.shape[:-1], -1)
        else:
            y = x @ self.weight
        return y if self.bias is None else y + self.bias

    def _pack(self) -> torch.Tensor | None:
        """oneDNN's packed copy of W, remade when the weight changes (loading writes it after
        construction); None where this torch has no oneDNN."""
        w = self.weight
        key = (w.data_ptr(), w._version)  # a new tensor, or the same one written in place
        if self._packed is None or self._packed[0] != key:
            if not torch.backends.mkldnn.is_available():
                return None
            self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach().t().contiguous(), self.SPLIT_ROWS // 2))
        return self._packed[1]
