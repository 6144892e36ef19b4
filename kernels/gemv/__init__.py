"""Products of a few rows with a weight matrix on the CPU, the heart of decoding there.

- ``naive.py``: the specification (x @ W in float64);
- ``cpu.py`` + ``panels.c``: W packed once as panels of 32 columns, streamed front to back
  by a C kernel built at first use.

Measured on 2 cores (AMD EPYC, cold weights): 25-45 GB/s for 1 to 8 rows, where torch's
own products give 9-11 GB/s for 8 rows (MKL) and oneDNN's on a packed weight 15-24.
"""

from conclave.kernels.gemv.cpu import available, gemv_panels, pack
from conclave.kernels.gemv.naive import gemv_naive

__all__ = ["available", "gemv_naive", "gemv_panels", "pack"]
