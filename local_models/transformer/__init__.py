"""The native Mistral-style transformer (Llama, Mistral, Qwen2, Gemma 3): model, weights, engine."""

from conclave.local_models import native
from conclave.local_models.transformer.config import ARCHS


@native.register(*ARCHS)
def load(path, **options):
    from conclave.local_models.transformer.engine import load as load_engine

    return load_engine(path, **options)
