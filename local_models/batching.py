"""Continuous batching: many requests share one engine, one decode step at a time.

Each request gets a KV slot. Every step decodes one token for each running sequence
and spends what is left of the step's token budget on prompt chunks of newly admitted
ones, so a long prompt joins without stalling the others (chunked prefill). A request
that finishes or is cancelled frees its slot at once; its cached tokens stay, so a
follow-up that shares the prefix (the next turn of a chat) skips re-reading it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from conclave.local_models.errors import ConclaveError
from conclave.local_models.generate import Chunk, Decoder, GenParams, TokenLogprob, check_fits, token_logprob
from conclave.local_models.engine import common_prefix


class Overloaded(ConclaveError):
    pass


@dataclass
class PromptLogprobs:
    """Log-probs of the prompt's own tokens (``echo``); the first token has none."""

    tokens: list[TokenLogprob | None]


@dataclass
class Job:
    tokens: list[int]
    params: GenParams
    on_event: Callable[[object], None]  # gets Chunks (the last has finish_reason), PromptLogprobs, or an Exception
    echo: bool = False  # report the prompt's log-probs (with params.top_logprobs alternatives)
    generate: bool = True  # False: read the prompt only (scoring with echo)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Seq:
    job: Job
    slot: int
    pending: list[int]  # prompt tokens not yet in the cache
    decoder: Decoder
    next_token: int | None = None
    echoed: list[TokenLogprob | None] = field(default_factory=list)


class Scheduler:
    def __init__(self, engine, *, max_queue: int = 64):
        self.engine = engine
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._free = list(range(engine.n_slots))
        self._active: list[_Seq] = []
        self._cv = threading.Condition()
        self._closing = False
        self._generated = 0  # tokens sampled for jobs, since start
        self._cancelled = 0  # jobs dropped because they were cancelled (running or still queued)
        self._thread = threading.Thread(target=self._run, name="conclave-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; raises ValueError, ContextOverflow or Overloaded at once rather than later."""
        if not job.tokens:
            raise ValueError("the prompt is empty: there is nothing to continue from")
        check_fits(self.engine, len(job.tokens))
        with self._cv:
            if self._closing:
                raise Overloaded("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting; try again shortly")
            self._waiting.append(job)
            self._cv.notify()

    def stats(self) -> dict:
        with self._cv:
            return {"slots": self.engine.n_slots, "active": len(self._active), "queued": len(self._waiting)}

    def totals(self) -> dict:
        """Counts since the scheduler started: tokens generated for all jobs together, and jobs
        dropped because they were cancelled (a cancelled job's tokens stop counting at once)."""
        with self._cv:
            return {"generated_tokens": self._generated, "cancelled": self._cancelled}

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=30)

    # --- the loop ---------------------------------------------------------------------

    def _admit(self) -> None:
        while self._waiting and self._free:
            job = self._waiting.popleft()
            if job.cancelled.is_set():
                self._cancelled += 1
                continue
            cached = self.engine.cached
            slot = max(self._free, key=lambda s: common_prefix(cached(s), job.tokens))
            # re-read at least one token for its logits; echo needs every position's logits
            keep = 0 if job.echo else min(common_prefix(cached(slot), job.tokens), len(job.tokens) - 1)
            try:
                decoder = Decoder(self.engine, job.params, len(job.tokens))
                self.engine.truncate(slot, keep)
            except Exception as e:  # this job cannot run; the others can
                job.on_event(e)
                continue
            self._free.remove(slot)
            seq = _Seq(job, slot, job.tokens[len(cached(slot)) :], decoder)
            if job.echo:
                seq.echoed.append(None)
            self._active.append(seq)

    def _release(self, seq: _Seq) -> None:
        self._active.remove(seq)
        self._free.append(seq.slot)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._admit()
                while not self._active and not self._closing:
                    self._cv.wait()
                    self._admit()
                if self._closing:
                    for seq in list(self._active):
                        seq.job.on_event(Overloaded("the server is shutting down"))
                    for job in self._waiting:
                        job.on_event(Overloaded("the server is shutting down"))
                    return
                for seq in [s for s in self._active if s.job.cancelled.is_set()]:
                    self._release(seq)
                    self._cancelled += 1
                work, owners = self._plan()
            if not work:
                continue
            try:
                outputs = self.engine.decode(work)
            except Exception as e:  # the step failed for everyone in it
                with self._cv:
                    for seq in owners:
                        seq.job.on_event(e)
                        self._release(seq)
                continue
            done = []
            for seq, (_, tokens, all_rows), logits in zip(owners, work, outputs):
                try:
                    if self._advance(seq, tokens, all_rows, logits):
                        done.append(seq)
                except Exception as e:
                    seq.job.on_event(e)
                    done.append(seq)
            if done:
                with self._cv:
                    for seq in done:
                        self._release(seq)

    def _plan(self) -> tuple[list, list[_Seq]]:
        """This step's work: one token for each decoding sequence, then prompt chunks."""
        budget = self.engine.n_batch
        work, owners = [], []
        for seq in self._active:
            if seq.next_token is not None:
                work.append((seq.slot, [seq.next_token], False))
                owners.append(seq)
                budget -= 1
        for seq in self._active:
            if seq.pending and budget > 0:
                chunk, seq.pending = seq.pending[:budget], seq.pending[budget:]
                work.append((seq.slot, chunk, seq.job.echo))
                owners.append(seq)
                budget -= len(chunk)
        return work, owners

    def _advance(self, seq: _Seq, fed: list[int], all_rows: bool, logits: np.ndarray) -> bool:
        """Use one step's logits for a sequence; True when it has finished."""
        job = seq.job
        if all_rows:  # an echo prefill chunk: row j predicts the token after fed[j]
            start = len(self.engine.cached(seq.slot)) - len(fed)
            for j in range(len(fed)):
                nxt = start + j + 1
                if nxt < len(job.tokens):
                    seq.echoed.append(token_logprob(self.engine, logits[j], job.tokens[nxt], job.params.top_logprobs))
            logits = logits[-1]
        if seq.pending:
            return False
        if seq.next_token is None and job.echo:
            job.on_event(PromptLogprobs(seq.echoed))
        if not job.generate:
            job.on_event(Chunk("", [], "length", len(job.tokens), 0))
            return True
        token, chunks = seq.decoder.step(logits)
        self._generated += 1  # only this thread writes it
        for chunk in chunks:
            job.on_event(chunk)
        seq.next_token = token
        return token is None
