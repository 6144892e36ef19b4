"""RWKV behind the ``TokenEngine`` interface: generation, scoring and serving.

An RNN cannot drop tokens from its state the way a KV cache drops cells, so each slot
keeps checkpoints: copies of its state within every prompt (after each chunk, and just
before and after its last token) and every ``checkpoint_every`` generated tokens. Going
back to position n restores the last checkpoint at or before n, and the caller reads on
from there. A chat that resumes therefore re-reads at most the tail of its last answer,
never its history, and a prompt read again re-reads one token. Several decoding slots
advance together as one batch of single-token steps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conclave.local_models.errors import ModelNotFound, WeightsCorrupt
from conclave.local_models.rwkv import weights
from conclave.local_models.rwkv.model import GraphedStep, Rwkv4, State
from conclave.local_models.hf_text import HFTokenizer
from conclave.local_models.rwkv.tokenizer import WorldTokenizer
from conclave.local_models.slots import SlotEngine

TOKENIZER_FILES = ("tokenizer.json", "20B_tokenizer.json")


def find_tokenizer(path: Path, n_vocab: int, tokenizer: str | Path | None):
    """The checkpoint's tokenizer: the one given, a tokenizer.json beside the weights, or
    the World vocabulary for a 65,536-token model."""
    if tokenizer:
        return HFTokenizer(Path(tokenizer))
    folder = path if path.is_dir() else path.parent
    for name in (f"{path.stem}.tokenizer.json", *TOKENIZER_FILES):
        if (folder / name).is_file():
            return HFTokenizer(folder / name)
    if n_vocab == 65536:
        return WorldTokenizer()
    raise ModelNotFound(
        f"{path} has a {n_vocab}-token vocabulary, which is not the RWKV World one: put its tokenizer.json "
        f"(20B_tokenizer.json for the Pile models) beside the weights"
    )


class RwkvEngine(SlotEngine):
    arch = "rwkv"

    def __init__(self, model: Rwkv4, tokenizer, *, name: str, n_ctx: int = 4096, n_slots: int = 1,
                 n_batch: int = 512, checkpoint_every: int = 64, max_checkpoints: int = 32):
        super().__init__(n_ctx=n_ctx, n_slots=n_slots, n_batch=n_batch)
        self.model, self.tok, self.name = model, tokenizer, name
        self.n_vocab = model.config.vocab_size
        self.checkpoint_every, self.max_checkpoints = checkpoint_every, max_checkpoints
        self.device = model.head.weight.device
        self.state = model.new_state(n_slots)
        # per slot: position -> (state there, whether it is within a prompt)
        self._checkpoints: list[dict[int, tuple[State, bool]]] = [{0: (self.state.rows([s]), True)} for s in range(n_slots)]
        self._graphs: dict[int, GraphedStep] = {}  # decode steps by batch size, on a GPU

    # --- text <-> tokens ----------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self.tok.encode(text)

    def token_bytes(self, token: int) -> bytes:
        return self.tok.token_bytes(token)

    def is_eog(self, token: int) -> bool:
        return self.tok.is_eog(token)

    @property
    def add_bos(self) -> bool:
        return False  # RWKV models are trained without one

    def chat_prompt(self, messages: list[dict]) -> str:
        """The format RWKV's chat models were tuned on: "User: ...\\n\\nAssistant: ..."."""
        roles = {"system": "System", "user": "User", "assistant": "Assistant"}
        turns = []
        for m in messages:
            role = roles.get(m.get("role"))
            if role is None:
                raise ValueError(f"unknown chat role {m.get('role')!r}; use system, user or assistant")
            # a blank line ends a turn, so one inside a message would end it early
            text = "\n".join(line for line in str(m.get("content", "")).strip().split("\n") if line.strip())
            turns.append(f"{role}: {text}")
        return "\n\n".join(turns) + "\n\nAssistant:"

    # --- the sequence in each slot ------------------------------------------------------

    def truncate(self, slot: int, n: int) -> None:
        """Keep at most the first ``n`` tokens of a slot. An RNN state cannot drop tokens, so
        this goes back to the last checkpoint at or before n; callers read on from
        ``cached(slot)``, so what lies between goes through the usual chunked prefill rather
        than being re-read here."""
        toks = self._tokens[slot]
        n = max(0, min(n, len(toks)))
        if n == len(toks):
            return
        marks = self._checkpoints[slot]
        at = max(m for m in marks if m <= n)
        self.state.put([slot], marks[at][0])
        for m in [m for m in marks if m > at]:
            del marks[m]
        del toks[at:]

    def _checkpoint(self, slot: int, *, prompt: bool = False) -> None:
        """Keep a copy of the slot's state here: always within prompts (where a chat resumes
        or a prompt is read again), every ``checkpoint_every`` tokens while generating."""
        n = len(self._tokens[slot])
        marks = self._checkpoints[slot]
        if n in marks or not (prompt or n - max(marks) >= self.checkpoint_every):
            return
        marks[n] = (self.state.rows([slot]), prompt)
        while len(marks) > self.max_checkpoints:  # drop the oldest, generation marks first; keep 0
            old = [m for m in marks if m > 0 and not marks[m][1]] or [m for m in marks if m > 0]
            del marks[min(old)]

    def _read(self, slot: int, tokens: list[int], all_logits: bool) -> torch.Tensor:
        """Read prompt tokens into one slot, a chunk of ``n_batch`` at a time. The last token
        goes alone, so that there is a checkpoint just before it: reading a prompt again
        re-reads its last token for the logits, and resumes there."""
        head = tokens[:-1]
        pieces = [head[i : i + self.n_batch] for i in range(0, len(head), self.n_batch)] + [tokens[-1:]]
        rows = []
        for piece in pieces:
            s = self.state.rows([slot])
            logits, s = self.model(torch.tensor([piece], device=self.device), s, all_logits=all_logits)
            self.state.put([slot], s)
            self._tokens[slot].extend(piece)
            self._checkpoint(slot, prompt=True)
            rows.append(logits[0] if all_logits else logits[0][None])
        return torch.cat(rows) if all_logits else rows[-1][0]

    def _step(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One token for each slot; through a CUDA graph on a GPU."""
        s = self.state.rows(slots)
        toks = torch.tensor([[t] for t in tokens], device=self.device)
        if self.device.type == "cuda":
            graph = self._graphs.get(len(slots))
            if graph is None:
                graph = self._graphs[len(slots)] = GraphedStep(self.model, len(slots))
            logits = graph(toks, s)
        else:
            logits = self.model(toks, s)[0]
        self.state.put(slots, s)
        for slot, tok in zip(slots, tokens):
            self._tokens[slot].append(tok)
            self._checkpoint(slot)
        return logits

def load(path: Path, *, n_ctx: int = 4096, n_slots: int = 1, tokenizer: str | Path | None = None,
         dtype: torch.dtype | None = None, device: str | None = None, name: str | None = None) -> RwkvEngine:
    """An engine on an RWKV-4 checkpoint: float32 on the CPU, bfloat16 on a GPU."""
    path = Path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = weights.load(path, dtype=dtype, device=device)
    tok = find_tokenizer(path, model.config.vocab_size, tokenizer)
    if tok.n_vocab > model.config.vocab_size:
        raise WeightsCorrupt(f"the tokenizer has {tok.n_vocab} tokens but {path} embeds only {model.config.vocab_size}: "
                             f"it is not this model's tokenizer")
    return RwkvEngine(model, tok, name=name or path.name, n_ctx=n_ctx, n_slots=n_slots)
