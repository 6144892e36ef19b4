"""The C kernel (panels.c): built with the system's C compiler the first time a process
needs it (a fraction of a second), loaded through ctypes, which lets go of the GIL while
it runs. Where no compiler works, ``available()`` is False and callers take torch's path."""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

PANEL = 32
SOURCE = Path(__file__).with_name("panels.c")


@functools.cache
def _library() -> ctypes.CDLL | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="conclave-gemv-") as tmp:  # a loaded library outlives its file
        out = Path(tmp) / "panels.so"
        try:
            subprocess.run([cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(out)],
                           check=True, capture_output=True, timeout=120)
            lib = ctypes.CDLL(str(out))
        except (OSError, subprocess.SubprocessError):
            return None
    lib.gemv_panels.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int]
    lib.gemv_panels.restype = None
    return lib


def available() -> bool:
    return _library() is not None


def pack(w: torch.Tensor) -> torch.Tensor:
    """W [in, out] (float32) as panels [ceil(out / 32), in, 32], the last one padded with zeros."""
    K, N = w.shape
    pad = -N % PANEL
    if pad:
        w = torch.cat([w, w.new_zeros(K, pad)], dim=1)
    return w.reshape(K, -1, PANEL).permute(1, 0, 2).contiguous()


def gemv_panels(x: torch.Tensor, panels: torch.Tensor, n_out: int) -> torch.Tensor:
    """x [M, in] (float32) @ the packed W -> [M, n_out]."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the gemv kernel could not be built here (no working C compiler)")
    if x.dtype != torch.float32 or panels.dtype != torch.float32 or x.shape[-1] != panels.shape[1]:
        raise ValueError(f"gemv: x {tuple(x.shape)} {x.dtype} does not fit panels {tuple(panels.shape)} {panels.dtype}")
    x = x.contiguous()
    M, K = x.shape
    N = panels.shape[0] * PANEL
    y = torch.empty(M, N, dtype=torch.float32)
    lib.gemv_panels(x.data_ptr(), panels.data_ptr(), y.data_ptr(), M, K, N, torch.get_num_threads())
    return y if N == n_out else y[:, :n_out]
