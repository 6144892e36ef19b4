"""The C kernel (panels.c): built with the system's C compiler the first time a process
needs it (a fraction of a second), loaded through ctypes, which lets go of the GIL while
it runs. Where no C compiler is on PATH, ``available()`` is False and callers take torch's
path; where one is but the build fails, it raises with the compiler's stderr, so that a
broken build is never taken for a missing compiler (and torch's figures for the kernel's)."""

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
COMPILERS = ("cc", "gcc")  # tried in this order on PATH


def compiler() -> str | None:
    """The C compiler the kernel is built with, None where there is none on PATH."""
    return next(filter(None, map(shutil.which, COMPILERS)), None)


@functools.cache
def _library() -> ctypes.CDLL | None:
    cc = compiler()
    if cc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="conclave-gemv-") as tmp:  # a loaded library outlives its file
        out = Path(tmp) / "panels.so"
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(out)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"the gemv kernel failed to build (exit {e.returncode}): {' '.join(cmd)}\n{e.stderr}") from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"the gemv kernel failed to build: {' '.join(cmd)}: {e}") from e
        try:
            lib = ctypes.CDLL(str(out))
        except OSError as e:
            raise RuntimeError(f"the gemv kernel was built by {cc} but does not load: {e}") from e
    lib.gemv_panels.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int]
    lib.gemv_panels.restype = None
    return lib


def available() -> bool:
    """False only where no C compiler is on PATH; a compiler whose build fails raises."""
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
        raise RuntimeError(f"the gemv kernel needs a C compiler ({' or '.join(COMPILERS)}) on PATH")
    if x.dtype != torch.float32 or panels.dtype != torch.float32 or x.shape[-1] != panels.shape[1]:
        raise ValueError(f"gemv: x {tuple(x.shape)} {x.dtype} does not fit panels {tuple(panels.shape)} {panels.dtype}")
    x = x.contiguous()
    M, K = x.shape
    N = panels.shape[0] * PANEL
    y = torch.empty(M, N, dtype=torch.float32)
    lib.gemv_panels(x.data_ptr(), panels.data_ptr(), y.data_ptr(), M, K, N, torch.get_num_threads())
    return y if N == n_out else y[:, :n_out]
