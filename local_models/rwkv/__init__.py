"""RWKV-4 (Peng et al. 2023) on our WKV kernels: model, weights, tokenizers and engine."""

from conclave.local_models import native


@native.register("rwkv")
def load(path, **options):
    from conclave.local_models.rwkv.engine import load as load_engine

    return load_engine(path, **options)
