"""The native transformer behind the ``TokenEngine`` interface.

Text goes through the GGUF's own vocabulary and chat template (llama.cpp's vocabulary-only
loader, no weights), or a folder's ``tokenizer.json``. Prompts are read in chunks of
``n_batch`` tokens; decoding steps of several slots run as one batch.

On a GPU each decoding step replays a CUDA graph captured for the smallest of a few
batch sizes (1, 2, 4, ... n_slots) that holds the step; rows past the step's own point
at a scratch slot of the cache that no sequence uses.

Going back in a slot keeps its first n tokens while every ring still holds the keys
those need: always with global layers only, and with sliding-window layers as long as
the slot has not passed W tokens. Past that, the slot starts over.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conclave.local_models.errors import ModelNotFound, WeightsCorrupt
from conclave.local_models.hf_text import HFText
from conclave.local_models.slots import SlotEngine
from conclave.local_models.transformer import weights
from conclave.local_models.transformer.model import GraphedDecode, Transformer


class TransformerEngine(SlotEngine):
    def __init__(self, model: Transformer, text, *, name: str, n_ctx: int = 4096, n_slots: int = 1, n_batch: int = 512,
                 graphs: bool | None = None):
        n_ctx = min(n_ctx, model.config.max_len)
        super().__init__(n_ctx=n_ctx, n_slots=n_slots, n_batch=n_batch)
        self.model, self.text, self.name = model, text, name
        self.arch = model.config.arch
        self.n_vocab = model.config.vocab_size
        self.graphs = model.device.type == "cuda" if graphs is None else graphs
        self.cache = model.new_cache(n_slots + 1 if self.graphs else n_slots, n_ctx)  # + the graphs' scratch slot
        self._graphs: dict[int, GraphedDecode] = {}

    # --- text: the vocabulary's own ----------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self.text.tokenize(text, add_bos=add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.text.token_bytes(token)

    def is_eog(self, token: int) -> bool:
        return self.text.is_eog(token)

    @property
    def add_bos(self) -> bool:
        return self.text.add_bos

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.text.chat_prompt(messages)

    # --- slots -----------------------------------------------------------------------

    def truncate(self, slot: int, n: int) -> None:
        toks = self._tokens[slot]
        n = max(0, min(n, len(toks)))
        window = self.model.config.sliding_window
        if n < len(toks) and window and len(toks) > window:
            n = 0  # the ring has overwritten keys that position n still needs
        del toks[n:]
        self.cache.length[slot] = n

    def _step(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        if self.graphs:
            logits = self._replay(slots, tokens)
        else:
            logits = self.model(torch.tensor([[t] for t in tokens], device=self.model.device), self.cache, slots)
        for slot, tok in zip(slots, tokens):
            self._tokens[slot].append(tok)
        return logits

    def _replay(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        B, scratch = len(slots), self.n_slots
        size = min(1 << (B - 1).bit_length(), self.n_slots)
        if size not in self._graphs:
            self._graphs[size] = GraphedDecode(self.model, self.cache, size, scratch)
        pad = size - B
        rows = torch.tensor([tokens + [0] * pad, slots + [scratch] * pad,
                             [self.cache.length[s] for s in slots] + [0] * pad]).to(self.model.device)
        logits = self._graphs[size](rows[0, :, None], rows[1], rows[2, :, None])[:B]
        for s in slots:
            self.cache.length[s] += 1
        return logits

    def _read(self, slot: int, tokens: list[int], all_logits: bool) -> torch.Tensor:
        rows = []
        for i in range(0, len(tokens), self.n_batch):
            piece = tokens[i : i + self.n_batch]
            logits = self.model(torch.tensor([piece], device=self.model.device), self.cache, [slot], all_logits=all_logits)
            self._tokens[slot].extend(piece)
            rows.append(logits[0])
        return torch.cat(rows) if all_logits else rows[-1]


def load(path: Path, *, n_ctx: int = 4096, n_slots: int = 1, dtype: torch.dtype | None = None,
         device: str | None = None, name: str | None = None, graphs: bool | None = None,
         kv_share: int = 1) -> TransformerEngine:
    """An engine on a GGUF file (its vocabulary read by llama.cpp) or an HF folder (its
    tokenizer.json and configs); ``kv_share``: see ``weights.load_hf``."""
    path = Path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if not path.exists():
        raise ModelNotFound(f"model not found: {path}")
    if path.is_dir():
        model = weights.load_hf(path, dtype=dtype, device=device, kv_share=kv_share)
        text = HFText(path, name=name)
        if text.n_vocab > model.config.vocab_size:
            raise WeightsCorrupt(f"{path}/tokenizer.json has {text.n_vocab} tokens but the model embeds only "
                                 f"{model.config.vocab_size}: it is not this model's tokenizer")
    else:
        from conclave.local_models.llamacpp import LlamaCppVocab

        model = weights.load_gguf(path, dtype=dtype, device=device, kv_share=kv_share)
        text = LlamaCppVocab(path, name=name or path.name)
    return TransformerEngine(model, text, name=name or path.name, n_ctx=n_ctx, n_slots=n_slots, graphs=graphs)

