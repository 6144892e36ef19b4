"""A ``TokenEngine`` over llama.cpp (llama-cpp-python's low-level model and context).

We drive ``llama_decode`` ourselves instead of ``Llama.generate``/``create_completion``:
their log-prob path needs the logits of every position (``logits_all``) and recomputes a softmax over every row
of the sequence on each step (about 2 tok/s against 70). Here only the logits that a
step needs are read, straight from llama.cpp's buffer.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from conclave.local_models.engine import reuse_prefix
from conclave.local_models.errors import ContextOverflow, WeightsCorrupt


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " amx_int8" in f.read(1 << 16)
    except OSError:
        return False


def without_amx_buffers(params):
    """llama.cpp model parameters with one workaround.

    On CPUs that advertise AMX, llama.cpp (0.3.36's vendored build) moves weights into
    its AMX buffer type and its AMX matmul segfaults on the first multi-token batch
    (seen with SmolLM2 Q4_1 on a Xeon with amx_int8). Turning the extra buffer types
    off keeps the ordinary AVX-512 kernels, and costs nothing on this model.
    """
    params.use_extra_bufts = not cpu_has_amx()
    return params


_backend_ready = False


def _llama_cpp():
    global _backend_ready
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp otherwise prints hundreds of lines per context
    if not _backend_ready:
        llama_cpp.llama_backend_init()
        _backend_ready = True
    return llama_cpp


class GGUFText:
    """Text to tokens, and chat prompts in the GGUF's own template: shared by the engine
    and by ``LlamaCppVocab``, which loads only this part."""

    _lib: object
    _model: object  # llama_cpp._internals.LlamaModel
    metadata: dict
    name: str
    _formatter = None

    @property
    def add_bos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self._model.vocab))

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_bos, True)

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:  # a buffer per miss: the server calls this from two threads
            buf = ctypes.create_string_buffer(256)
            n = self._lib.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._model.vocab, token))

    def chat_prompt(self, messages: list[dict]) -> str:
        if self._formatter is None:
            template = self.metadata.get("tokenizer.chat_template")
            if not template:
                raise ValueError(f"{self.name} has no chat template in its GGUF metadata; use plain completion")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self._model
            eos, bos = model.token_eos(), model.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        return self._formatter(messages=messages).prompt


class LlamaCppEngine(GGUFText):
    def __init__(
        self, path: Path, *, name: str | None = None, n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512, n_slots: int = 1
    ):
        llama_cpp = _llama_cpp()
        from llama_cpp import _internals

        self._lib = llama_cpp
        threads = n_threads or os.cpu_count() or 1
        try:
            params = without_amx_buffers(llama_cpp.llama_model_default_params())
            self._model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as e:
            raise WeightsCorrupt(f"llama.cpp could not load {path}: {e}") from e
        n_ctx = min(n_ctx, self._model.n_ctx_train()) if n_ctx else self._model.n_ctx_train()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * n_slots  # each slot (sequence) gets n_ctx cells of its own
        cparams.n_seq_max = n_slots
        cparams.kv_unified = False
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_threads = cparams.n_threads_batch = threads
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._n_batch = n_batch
        self._pieces: dict[int, bytes] = {}
        self.metadata = self._model.metadata() or {}
        self.name = name or Path(path).name
        self.arch = self.metadata.get("general.architecture", "unknown")
        self.n_ctx = n_ctx
        self.n_slots = n_slots
        self.n_batch = n_batch
        self.n_vocab = self._model.n_vocab()
        self._slots: list[list[int]] = [[] for _ in range(n_slots)]  # what each slot's cache holds

    # --- evaluation --------------------------------------------------------------------
    # Slot s is KV-cache sequence s. Slot 0 serves the single-sequence calls (prefill,
    # append); the batching scheduler drives every slot at once through decode().

    def cached(self, slot: int = 0) -> list[int]:
        """The tokens a slot's cache holds, in order."""
        return self._slots[slot]

    def truncate(self, slot: int, n: int) -> None:
        """Keep the first ``n`` cached tokens of a slot."""
        toks = self._slots[slot]
        n = max(n, 0)
        if n < len(toks):
            if not self._ctx.kv_cache_seq_rm(slot, n, -1):
                self._ctx.kv_cache_seq_rm(slot, 0, -1)
                n = 0
            del toks[n:]

    def decode(self, work: list[tuple[int, list[int], bool]]) -> list[np.ndarray]:
        """One ``llama_decode`` over several slots. ``work`` holds (slot, tokens, all_logits),
        at most ``n_batch`` tokens in all. Returns, per entry, the logits after its last
        token, or one row per token if ``all_logits``."""
        batch = self._batch.batch
        i = 0
        for slot, tokens, all_logits in work:
            start = len(self._slots[slot])
            if start + len(tokens) > self.n_ctx:
                raise ContextOverflow(f"{start + len(tokens)} tokens exceed the context of {self.n_ctx}")
            for j, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = start + j
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = slot
                batch.logits[i] = all_logits or j == len(tokens) - 1
                i += 1
        if i > self._n_batch:
            raise ValueError(f"{i} tokens in one decode; the batch holds {self._n_batch}")
        batch.n_tokens = i
        try:
            self._ctx.decode(self._batch)
        except RuntimeError:
            for slot, _, _ in work:  # what reached the cache is unknown: forget these slots
                self.truncate(slot, 0)
            raise
        out, i = [], 0
        for slot, tokens, all_logits in work:
            self._slots[slot].extend(tokens)
            if all_logits:
                out.append(np.stack([self._logits(i + j) for j in range(len(tokens))]))
            else:
                out.append(self._logits(i + len(tokens) - 1))
            i += len(tokens)
        return out

    def _logits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ctx.get_logits_ith(i), shape=(self.n_vocab,)).copy()

    def prefill(self, tokens: list[int]) -> np.ndarray:
        return reuse_prefix(self, tokens)

    def append(self, tokens: list[int], *, all_logits: bool = False) -> np.ndarray:
        rows = [self.decode([(0, tokens[i : i + self._n_batch], all_logits)])[0] for i in range(0, len(tokens), self._n_batch)]
        return np.concatenate(rows) if all_logits else rows[-1]


class LlamaCppVocab(GGUFText):
    """A GGUF's tokenizer and chat template without its weights (llama.cpp ``vocab_only``):
    lets a backend that has no tokenizer of its own, such as an OpenAI-compatible
    endpoint, count tokens exactly as the served model does. Loads in about a second."""

    def __init__(self, path: Path, *, name: str | None = None):
        llama_cpp = _llama_cpp()
        from llama_cpp import _internals

        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as e:
            raise WeightsCorrupt(f"llama.cpp could not read the vocabulary of {path}: {e}") from e
        self.metadata = self._model.metadata() or {}
        self.name = name or Path(path).name
        self._pieces: dict[int, bytes] = {}


def stock_llama(path: Path, **kwargs):
    """llama-cpp-python's own ``Llama`` on the same weights, with the same workaround:
    the reference in tests and the anchor in benchmarks."""
    import llama_cpp
    import llama_cpp.llama as high_level

    lib = high_level.llama_cpp
    original = lib.llama_model_default_params
    lib.llama_model_default_params = lambda: without_amx_buffers(original())
    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)
    finally:
        lib.llama_model_default_params = original
