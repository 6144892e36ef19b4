"""Our own engines (RWKV, Mistral-style transformers) on our Triton kernels.

Each engine registers a loader for the GGUF architectures it can run; a loader
takes the weights path and returns a ``TokenEngine``. The ``native`` backend of the
model seam looks the architecture up here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from conclave.local_models.engine import TokenEngine
from conclave.local_models.errors import BackendUnavailable

Loader = Callable[..., TokenEngine]
ENGINES: dict[str, Loader] = {}


def register(*archs: str):
    def deco(loader: Loader) -> Loader:
        for arch in archs:
            ENGINES[arch] = loader
        return loader

    return deco


def load(path: Path, arch: str, **options) -> TokenEngine:
    import conclave.local_models.rwkv  # noqa: F401  (these register their loaders)
    import conclave.local_models.transformer  # noqa: F401

    loader = ENGINES.get(arch)
    if loader is None:
        have = ", ".join(sorted(ENGINES)) or "none yet"
        raise BackendUnavailable(
            f"the native backend has no engine for architecture {arch!r} (native engines: {have}); use --backend llamacpp"
        )
    return loader(path, **options)
