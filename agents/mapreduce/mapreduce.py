"""Map-reduce over documents longer than any context: split, map, collapse, reduce.

split: the documents become parts that fit the map prompt, counted in the model's own tokens.
map: the model reads every part, at most ``max_concurrency`` calls at once; every answer is cached.
collapse: while the answers do not fit one merge prompt, consecutive ones are merged in
groups that do, round after round.
reduce: one last merge of what is left gives the answer.

Why it always ends (LangChain's token_max loop need not, langchain #16251): every item is
capped at half of what a merge may read, so any two fit together and each round at least
halves the number of items; a round that cannot, and every round after ``max_rounds``,
is replaced by cutting what is left to fit. A text merge that does not shrink its input
is cut to half of it, so rounds are not spent on a model that only repeats itself. Every
prompt is counted before it is sent, and never exceeds its budget.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from conclave.prompts import loader as prompts
from conclave.agents.aio import gather_all
from conclave.agents.llm import LLM, UnsupportedFeature
from conclave.agents.mapreduce.cache import Answer, Cache, key
from conclave.agents.mapreduce.config import MapReduceConfig
from conclave.agents.mapreduce.executors import Call, Executor, LocalExecutor
from conclave.agents.mapreduce.extract import parse
from conclave.agents.mapreduce.split import offsets, token_splitter, truncate
from conclave.agents.mapreduce.trace import MapAnswer, MapReduceError, MapReduceResult, Merge, Part
from conclave.prompts.loader import Rendered
from conclave.retrieval.ingest import Chunk, Record

PROMPTS = {  # task -> (map prompt, merge prompt); the merge prompt serves collapse and reduce alike
    "summarize": ("mapreduce_map_summarize", "mapreduce_reduce_summarize"),
    "ask": ("mapreduce_map_ask", "mapreduce_reduce_ask"),
    "extract": ("mapreduce_map_extract", "mapreduce_reduce_extract"),
}
REPAIR = "mapreduce_json_repair"
SENTINEL = "NO_RELEVANT_INFORMATION"  # what mapreduce_map_ask tells the model to say
MIN_PART_TOKENS = 16
PAIR_MARGIN = 4  # tokens lost where two texts meet inside a template

Event = Callable[[dict], None]


def run(config: MapReduceConfig, llm: LLM, documents: list[Record], *, cache: Cache | None = None,
        executor: Executor | None = None, on_event: Event | None = None) -> MapReduceResult:
    """``documents``: records (``read_documents`` makes them from files). ``cache``: where answers
    persist (default: memory, this run only). ``executor``: default local (asyncio)."""
    return asyncio.run(arun(config, llm, documents, cache=cache, executor=executor, on_event=on_event))


async def arun(config: MapReduceConfig, llm: LLM, documents: list[Record], *, cache: Cache | None = None,
               executor: Executor | None = None, on_event: Event | None = None) -> MapReduceResult:
    records = _check_documents(documents)
    r = _Run(config, llm, cache if cache is not None else Cache(), executor or LocalExecutor(), on_event)
    chunks, parts = r.split(records)
    maps, items = await r.map(chunks)
    items, rounds = await r.collapse(items)
    answer, data, final_inputs, answer_parts = await r.reduce(items)
    r.provenance["answer"] = answer_parts
    r.emit({"kind": "done", "calls": r.n_calls, "cached": r.n_cached, "tokens": r.tokens})
    return MapReduceResult(
        task=config.task, question=config.question, answer=answer, data=data, parts=parts, maps=maps, rounds=rounds,
        final_inputs=final_inputs, provenance=r.provenance, n_calls=r.n_calls, n_cached=r.n_cached,
        prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, warnings=r.warnings, budget=r.budget,
        config=config.model_dump(),
    )


def read_documents(paths: list[Path | str]) -> list[Record]:
    """Records from files and folders (.txt .md .jsonl .pdf), as retrieval ingests them."""
    from conclave.retrieval.ingest import files, read

    if not paths:
        raise MapReduceError("give at least one file or folder to read")
    found = files([Path(p) for p in paths])
    if not found:
        raise MapReduceError(f"no .txt, .md, .jsonl or .pdf files in {', '.join(map(str, paths))}")
    return [rec for f in found for rec in read(f)]


_NOTHING = re.compile(r"no[\W_]*relevant[\W_]*info(?:rmation)?", re.I)


def is_irrelevant(answer: str) -> bool:
    """The map answer says the part holds nothing relevant: it is empty, or it opens or ends
    with the sentinel, however the model dressed it up ("**No relevant information.**",
    "no_relevant_info", "The text does not say. NO_RELEVANT_INFORMATION")."""
    text = re.sub(r"^\W*(?:answer|response)\s*:", "", answer.strip(), flags=re.I)
    text = text.strip(" \t\n\"'`*_.:;!-()[]")
    if not text:
        return True
    found = list(_NOTHING.finditer(text))
    return bool(found) and (found[0].start() == 0 or found[-1].end() == len(text))


def _check_documents(documents) -> list[Record]:
    if isinstance(documents, (str, Path, Record)) or not isinstance(documents, (list, tuple)):
        raise MapReduceError("documents must be a list of records (read_documents(paths) makes them from files)")
    bad = [d for d in documents if not isinstance(d, Record)]
    if bad:
        raise MapReduceError(f"documents must be records, got {type(bad[0]).__name__} (use read_documents(paths))")
    records = [d for d in documents if d.text.strip()]
    if not records:
        raise MapReduceError("the documents hold no text")
    return records


@dataclass
class _Item:
    """Something to merge: a map answer, or a merge's output."""

    id: str
    text: str
    parts: list[str]
    tokens: int


class _Run:
    def __init__(self, config: MapReduceConfig, llm: LLM, cache: Cache, executor: Executor, on_event: Event | None):
        self.c, self.llm, self.cache, self.executor, self.on_event = config, llm, cache, executor, on_event
        self.map_id, self.merge_id = PROMPTS[config.task]
        self.extras = {"question": config.question.strip()} if config.task == "ask" else {}
        if config.task == "extract":
            self.extras = {"schema": json.dumps(config.json_schema, ensure_ascii=False)}
        self.json = config.task == "extract"
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.n_calls = self.n_cached = self.prompt_tokens = self.completion_tokens = 0
        self.warnings: list[str] = []
        self.provenance: dict[str, list[str]] = {}
        self._budgets()

    # --- sizes ----------------------------------------------------------------------------

    def count(self, what) -> int:
        return self.llm.count_tokens(what)

    def _budgets(self) -> None:
        c = self.c
        try:
            self.count("probe")
        except UnsupportedFeature as e:
            raise MapReduceError(f"map-reduce sizes everything in the model's own tokens, and {e}") from None
        try:
            ctx = c.context_tokens or self.llm.context_length
        except UnsupportedFeature as e:
            raise MapReduceError(f"{e}; give context_tokens in the config") from None
        self.ctx = ctx
        self.map_max = c.map_max_tokens or min(256, ctx // 8)
        self.reduce_max = c.reduce_max_tokens or min(512, ctx // 4)
        # the repair turn of extraction is sent with the original prompt: keep room for it
        self.reserve = self._repair_overhead() if self.json and c.json_retries else 0
        self.map_limit = ctx - self.map_max  # most tokens a map prompt may take
        overhead = self.count(self.map_prompt("").messages)
        room = self.map_limit - overhead - self.reserve
        if room < MIN_PART_TOKENS:
            raise MapReduceError(
                f"the map prompt ({overhead} tokens) and map_max_tokens ({self.map_max}) leave no room for text "
                f"in a context of {ctx}; lower map_max_tokens or use a model with a longer context"
            )
        chunk = c.chunk_tokens or room - max(8, room // 50)  # a little slack: parts are counted piece by piece
        if chunk > room:
            raise MapReduceError(
                f"chunk_tokens {chunk} does not fit: a context of {ctx} holds the map prompt ({overhead}), its output "
                f"(map_max_tokens {self.map_max}) and at most {room} tokens of text"
            )
        overlap = c.overlap_tokens if c.overlap_tokens is not None else chunk // 10
        if overlap >= chunk:
            raise MapReduceError(f"overlap_tokens ({overlap}) must be smaller than the part size ({chunk})")
        if self.reduce_max >= ctx:
            raise MapReduceError(f"reduce_max_tokens ({self.reduce_max}) leaves no room for a prompt in a context of {ctx}")
        if c.reduce_tokens is not None and c.reduce_tokens > ctx - self.reduce_max:
            raise MapReduceError(
                f"reduce_tokens ({c.reduce_tokens}) and reduce_max_tokens ({self.reduce_max}) exceed the context ({ctx})"
            )
        self.merge_limit = c.reduce_tokens or ctx - self.reduce_max  # most tokens a merge prompt may take
        pair = self.count(self.merge_prompt(["", ""]).messages)
        self.item_cap = (self.merge_limit - self.reserve - pair) // 2 - PAIR_MARGIN
        if self.item_cap < MIN_PART_TOKENS:
            raise MapReduceError(
                f"a merge may read {self.merge_limit} tokens, too few for two answers beside its prompt ({pair} tokens); "
                "raise reduce_tokens or lower reduce_max_tokens"
            )
        self.chunk_tokens, self.overlap_tokens = chunk, overlap
        self.budget = {"context": ctx, "chunk_tokens": chunk, "overlap_tokens": overlap, "map_max_tokens": self.map_max,
                       "reduce_max_tokens": self.reduce_max, "map_prompt": self.map_limit,
                       "merge_prompt": self.merge_limit, "item_cap": self.item_cap}

    def _repair_overhead(self) -> int:
        base = self.map_prompt("").messages
        follow = base + [{"role": "assistant", "content": ""}] + prompts.render(REPAIR, problem="x" * 200).messages
        return self.count(follow) - self.count(base)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.emit({"kind": "warning", "message": message})

    def map_prompt(self, text: str) -> Rendered:
        return prompts.render(self.map_id, text=text, **self.extras)

    def merge_prompt(self, texts: list[str]) -> Rendered:
        return prompts.render(self.merge_id, parts=texts, **self.extras)

    # --- one model call -----------------------------------------------------------------

    async def ask(self, messages: list[dict], ref: str, max_tokens: int, limit: int) -> tuple[Answer, bool]:
        n = self.count(messages)
        if n > limit:  # every caller sized its prompt; this is the guarantee, not the plan
            raise MapReduceError(f"a {ref} prompt of {n} tokens exceeds its budget of {limit} (a bug: please report it)")
        params = {"max_tokens": max_tokens, "temperature": self.c.temperature, "seed": self.c.seed}
        k = key(backend=self.llm.backend, model=self.llm.model, prompt_ref=ref, messages=messages, params=params)
        hit = self.cache.get(k)
        if hit is not None:
            self.n_cached += 1
            return hit, True
        async with self.slots:
            self.n_calls += 1  # before the call: a failed call is still a call
            answer = await self.executor.call(self.llm, Call(messages, ref, params))
        self.cache.put(k, answer)
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        return answer, False

    async def ask_json(self, rendered: Rendered, max_tokens: int, limit: int) -> tuple[dict | None, str, bool]:
        """The object, or None and what was wrong with the last reply; and whether all came from the cache.
        ``rendered`` was sized to leave ``self.reserve`` of ``limit`` for the repair turn."""
        messages, ref, all_cached = rendered.messages, rendered.ref, True
        for attempt in range(self.c.json_retries + 1):
            answer, cached = await self.ask(messages, ref, max_tokens, limit)
            all_cached = all_cached and cached
            obj, problem = parse(answer.text, self.c.json_schema)
            if obj is not None:
                return obj, "", all_cached
            if attempt == self.c.json_retries:
                break
            repair = prompts.render(REPAIR, problem=problem[:200])
            room = limit - self.count(rendered.messages + [{"role": "assistant", "content": ""}] + repair.messages)
            while True:  # the bad reply, cut until the follow-up fits
                said = truncate(answer.text, room, self.count)
                messages = rendered.messages + [{"role": "assistant", "content": said}] + repair.messages
                if self.count(messages) <= limit or not said:
                    break
                room -= PAIR_MARGIN
            ref = repair.ref
        return None, problem, all_cached

    # --- split ----------------------------------------------------------------------------

    def split(self, records: list[Record]) -> tuple[list[Chunk], list[Part]]:
        count = self.count
        chunks = token_splitter(count, self.chunk_tokens, self.overlap_tokens).chunks(records)
        fitted, seen = [], set()
        for chunk in chunks:
            for piece in self._fit(chunk, self.chunk_tokens):
                if piece.id in seen:  # a piece re-split out of a part can repeat another's text
                    piece = Chunk(f"{piece.id}-{len(fitted)}", piece.text, piece.source, piece.meta)
                seen.add(piece.id)
                fitted.append(piece)
        if not fitted:
            raise MapReduceError("the documents hold no text")
        spans = offsets(records, fitted)
        parts = [Part(c.id, i, c.source, s, e, count(c.text)) for i, (c, (s, e)) in enumerate(zip(fitted, spans))]
        self.emit({"kind": "split", "parts": len(parts), "chunk_tokens": self.chunk_tokens,
                   "overlap_tokens": self.overlap_tokens})
        return fitted, parts

    def _fit(self, chunk: Chunk, size: int) -> list[Chunk]:
        """The chunk, or pieces of it, each of whose map prompt fits (a part counted piece by
        piece can come out a few tokens longer as a whole)."""
        excess = self.count(self.map_prompt(chunk.text).messages) + self.reserve - self.map_limit
        if excess <= 0:
            return [chunk]
        smaller = max(MIN_PART_TOKENS, size - excess - PAIR_MARGIN)
        if smaller == size:
            raise MapReduceError(f"cannot cut {chunk.source} into parts that fit the map prompt")
        pieces = token_splitter(self.count, smaller, min(self.overlap_tokens, smaller // 10)).chunks(
            [Record(chunk.text, chunk.source, chunk.meta)]
        )
        return [p for piece in pieces for p in self._fit(piece, smaller)]

    # --- map ------------------------------------------------------------------------------

    async def map(self, chunks: list[Chunk]) -> tuple[list[MapAnswer], list[_Item]]:
        done = 0

        async def one(i: int, chunk: Chunk) -> MapAnswer:
            nonlocal done
            rendered = self.map_prompt(chunk.text)
            note = None
            if self.json:
                obj, problem, cached = await self.ask_json(rendered, self.map_max, self.map_limit)
                text = json.dumps(obj, ensure_ascii=False) if obj is not None else ""
                if obj is None:
                    note = f"no usable JSON after {self.c.json_retries + 1} tries: {problem}"
                    self.warn(f"part {i} ({chunk.id[:12]}): {note}")
            else:
                answer, cached = await self.ask(rendered.messages, rendered.ref, self.map_max, self.map_limit)
                text = answer.text.strip()
                if self.c.task == "ask" and is_irrelevant(text):
                    note = "no relevant information"
                elif not text:
                    note = "empty answer"
            done += 1
            self.emit({"kind": "map", "done": done, "total": len(chunks), "cached": cached, "tokens": self.tokens})
            return MapAnswer(f"m{i}", chunk.id, text, note is None, cached, self.count(text) if text else 0, note)

        maps = await gather_all([one(i, c) for i, c in enumerate(chunks)])
        items = [_Item(m.id, m.text, [m.part], m.tokens) for m in maps if m.kept]
        for it in items:
            self.provenance[it.id] = list(it.parts)
        if self.json and not items:
            raise MapReduceError(f"no part gave a usable JSON object; the first problem: {maps[0].note}")
        return maps, items

    # --- collapse -------------------------------------------------------------------------

    def fits(self, items: list[_Item]) -> bool:
        return self.count(self.merge_prompt([it.text for it in items]).messages) <= self.merge_limit - self.reserve

    async def collapse(self, items: list[_Item]) -> tuple[list[_Item], list[list[Merge]]]:
        rounds: list[list[Merge]] = []
        items = [self.cap(it, self.item_cap) for it in items]
        while len(items) > 1 and not self.fits(items):
            groups = self.group(items)
            if len(rounds) == self.c.max_rounds or len(groups) == len(items):
                why = (f"after {self.c.max_rounds} collapse rounds" if len(rounds) == self.c.max_rounds
                       else "and no two of them fit one merge")
                self.warn(f"{len(items)} answers still exceed one merge ({self.merge_limit} tokens) {why}; "
                          "each was truncated to fit")
                return self.squeeze(items), rounds
            n_round = len(rounds) + 1
            self.emit({"kind": "round", "round": n_round, "items": len(items), "merges": sum(len(g) > 1 for g in groups)})
            done = 0

            async def merge(n: int, group: list[_Item]) -> tuple[_Item, Merge | None]:
                nonlocal done
                if len(group) == 1:  # nothing beside it fits: it waits for the next round as it is
                    return group[0], None
                item, m = await self.merge(f"r{n_round}.{n}", group)
                done += 1
                self.emit({"kind": "merge", "round": n_round, "done": done, "total": len(groups), "tokens": self.tokens})
                return item, m

            out = await gather_all([merge(n, g) for n, g in enumerate(groups)])
            rounds.append([m for _, m in out if m is not None])
            items = [self.cap(it, self.item_cap) for it, _ in out]
        return items, rounds

    def group(self, items: list[_Item]) -> list[list[_Item]]:
        """Consecutive items, as many to a group as fit one merge (every two fit: they are capped)."""
        groups, current = [], []
        for it in items:
            if current and not self.fits(current + [it]):
                groups.append(current)
                current = []
            current.append(it)
        groups.append(current)
        return groups

    async def merge(self, mid: str, group: list[_Item]) -> tuple[_Item, Merge]:
        text, cached = await self.merge_call(self.merge_prompt([it.text for it in group]), [it.id for it in group])
        tokens_in = sum(it.tokens for it in group)
        tokens = self.count(text)
        truncated = False
        if tokens >= tokens_in and not self.json:  # (merged JSON is the union of its inputs: it need not shrink)
            cut = truncate(text, tokens_in // 2, self.count)
            self.warn(f"merge {mid} did not shrink its input ({tokens_in} -> {tokens} tokens); cut to {self.count(cut)}")
            text, tokens, truncated = cut, self.count(cut), True
        parts = _unique(p for it in group for p in it.parts)
        self.provenance[mid] = parts
        return _Item(mid, text, parts, tokens), Merge(mid, [it.id for it in group], parts, text, tokens_in, tokens, cached, truncated)

    async def merge_call(self, rendered: Rendered, inputs: list[str]) -> tuple[str, bool]:
        if not self.json:
            answer, cached = await self.ask(rendered.messages, rendered.ref, self.reduce_max, self.merge_limit)
            return answer.text.strip(), cached
        obj, problem, cached = await self.ask_json(rendered, self.reduce_max, self.merge_limit)
        if obj is None:
            raise MapReduceError(
                f"merging {', '.join(inputs)}: the model gave no usable JSON after {self.c.json_retries + 1} tries "
                f"({problem}); raise json_retries or reduce_max_tokens, or try another model"
            )
        return json.dumps(obj, ensure_ascii=False), cached

    def cap(self, item: _Item, limit: int) -> _Item:
        if item.tokens <= limit:
            return item
        text = self.cut(item.text, limit)
        self.warn(f"{item.id} ({item.tokens} tokens) is longer than half a merge; cut to {limit}")
        return _Item(item.id, text, item.parts, self.count(text))

    def cut(self, text: str, limit: int) -> str:
        if not self.json:
            return truncate(text, limit, self.count)
        return json.dumps(shrink_json(json.loads(text), limit, self.count), ensure_ascii=False)

    def squeeze(self, items: list[_Item]) -> list[_Item]:
        """Cut every item to an equal share of one merge, dropping the last ones if even their
        labels do not fit."""
        limit = self.merge_limit - self.reserve
        n = len(items)
        while n > 1 and self.count(self.merge_prompt([""] * n).messages) > limit:
            n -= 1
        if n < len(items):
            self.warn(f"dropped {', '.join(it.id for it in items[n:])}: no room left in the last merge")
        items = items[:n]
        share = (limit - self.count(self.merge_prompt([""] * n).messages)) // n
        while True:
            out = [_Item(it.id, self.cut(it.text, share), it.parts, 0) for it in items]
            if self.fits(out) or share <= 0:
                break
            share -= max(1, share // 10)
        for it in out:
            it.tokens = self.count(it.text)
        return out

    # --- reduce ---------------------------------------------------------------------------

    async def reduce(self, items: list[_Item]):
        """(answer, data, final inputs, their parts)."""
        if not items:
            if self.c.task == "ask":
                self.warn("no part of the documents holds information relevant to the question")
            return "", None, [], []
        if len(items) == 1:  # it is the answer already; a merge of one would only rephrase it
            text = items[0].text
        else:
            self.emit({"kind": "reduce", "items": len(items), "tokens": self.tokens})
            text, _ = await self.merge_call(self.merge_prompt([it.text for it in items]), [it.id for it in items])
        parts = _unique(p for it in items for p in it.parts)
        data = json.loads(text) if self.json else None
        answer = json.dumps(data, ensure_ascii=False, indent=2) if self.json else text
        return answer, data, [it.id for it in items], parts


def shrink_json(obj, max_tokens: int, count: Callable[[str], int]):
    """Cut a JSON value until it takes at most ``max_tokens``: the last element of its
    longest list, or the second half of its longest string, goes first."""
    obj = copy.deepcopy(obj)
    while count(json.dumps(obj, ensure_ascii=False)) > max_tokens:
        holder, where, size = None, None, 0
        stack = [(None, None, obj)]
        while stack:  # the biggest non-empty list or string, by its JSON length
            parent, k, v = stack.pop()
            if isinstance(v, (list, str)) and v and len(json.dumps(v, ensure_ascii=False)) > size and parent is not None:
                holder, where, size = parent, k, len(json.dumps(v, ensure_ascii=False))
            if isinstance(v, dict):
                stack += [(v, kk, vv) for kk, vv in v.items()]
            elif isinstance(v, list):
                stack += [(v, i, vv) for i, vv in enumerate(v)]
        if holder is None:
            return {} if isinstance(obj, dict) else obj
        v = holder[where]
        holder[where] = v[:-1] if isinstance(v, list) else v[: len(v) // 2]
    return obj


def _unique(ids) -> list[str]:
    return list(dict.fromkeys(ids))

