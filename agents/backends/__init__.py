"""Opening a model by name: a catalog name, a GGUF path, or ``openai:<model>``."""

from __future__ import annotations

from pathlib import Path

from conclave.agents.llm import LLM, CallSink
from conclave.local_models import catalog, native

BACKENDS = ("llamacpp", "native", "openai")


def open_llm(
    model: str,
    *,
    backend: str | None = None,
    data_dir: Path,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 3,
    tokenizer: str | None = None,
    sink: CallSink | None = None,
) -> LLM:
    """``tokenizer``: for openai, a catalog name or .gguf whose vocabulary the endpoint's
    model uses, so that the backend counts tokens locally (vocab only, no weights loaded);
    for an RWKV checkpoint, its tokenizer.json where it is not beside the weights."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if model.startswith("openai:") or backend == "openai":
        from conclave.agents.backends.openai_api import OpenAILLM

        name = model.removeprefix("openai:")
        if not base_url:
            raise ValueError("the openai backend needs a base URL (CONCLAVE_OPENAI_BASE_URL)")
        vocab = None
        if tokenizer:
            from conclave.local_models.llamacpp import LlamaCppVocab

            spec = catalog.resolve(tokenizer)
            vocab = LlamaCppVocab(catalog.ensure_weights(spec, data_dir), name=spec.name)
        return OpenAILLM(name, base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries, sink=sink,
                         tokenizer=vocab)

    from conclave.agents.backends.local import LocalLLM

    spec = catalog.resolve(model)
    path = catalog.ensure_weights(spec, data_dir)
    if backend == "native" or (backend is None and spec.backend == "native"):
        options = {"tokenizer": tokenizer} if tokenizer and tokenizer.endswith(".json") else {}
        engine = native.load(path, spec.arch, n_ctx=n_ctx, **options)
        return LocalLLM(engine, backend="native", model=spec.name, sink=sink)
    if spec.backend == "native":
        raise catalog.native_only(spec)
    from conclave.local_models.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(path, name=spec.name, n_ctx=n_ctx, n_threads=n_threads)
    return LocalLLM(engine, backend="llamacpp", model=spec.name, sink=sink)
