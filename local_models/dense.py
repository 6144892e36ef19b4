"""The matrix products of our native engines."""

from __future__ import annotations

import torch
from torch import nn

from conclave.kernels import gemv


class Dense(nn.Module):
    """x @ W, with W stored [in, out].

    Decoding reads every weight once per step, so on a CPU its speed is the speed at which
    the products stream W from memory. For up to 16 rows (a decoding batch) the product is
    our C kernel (kernels/gemv) on a copy of W packed as panels, made on the first such
    call: an engine that decodes on the CPU holds its weights twice, for 2-4x the speed of
    torch's own products at 8 rows. Measured on 2 cores with cold caches (SmolLM2's shapes):
    MKL 9-11 GB/s at 8 rows, oneDNN on a packed weight 15-24, the panels 32-45.

    Without a C compiler, a single row splits the inner dimension into one slice per thread
    (W viewed [threads, in / threads, out], no copy) for ``bmm`` to run in parallel, as
    torch's matrix-vector product runs on one core. More rows (prompts) are bound by
    arithmetic and take the plain product.
    """

    SMALL_ROWS = 16

    def __init__(self, n_in: int, n_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(n_out), requires_grad=False) if bias else None
        self._panels: tuple[tuple, torch.Tensor] | None = None  # (which weight it packs, the panels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_in = x.shape[-1]
        rows = x.numel() // n_in
        small = x.device.type == "cpu" and rows <= self.SMALL_ROWS
        threads = torch.get_num_threads()
        if small and x.dtype == torch.float32 and gemv.available():
            y = gemv.gemv_panels(x.reshape(rows, n_in), self._packed(), self.weight.shape[1])
            y = y.reshape(*x.shape[:-1], -1)
        elif small and rows == 1 and threads >= 2 and n_in % threads == 0:
            xs = x.reshape(rows, threads, n_in // threads).transpose(0, 1)
            parts = torch.bmm(xs, self.weight.view(threads, n_in // threads, -1))
            y = parts.sum(0).reshape(*x.shape[:-1], -1)
        else:
            y = x @ self.weight
        return y if self.bias is None else y + self.bias

    def _packed(self) -> torch.Tensor:
        """The panels of W, remade when the weight changes (loading writes it after construction)."""
        w = self.weight
        key = (w.data_ptr(), w._version)  # a new tensor, or the same one written in place
        if self._panels is None or self._panels[0] != key:
            self._panels = (key, gemv.pack(w.detach()))
        return self._panels[1]
