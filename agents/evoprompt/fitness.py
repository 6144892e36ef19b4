"""The fitness of a prompt: its mean score over a set of examples.

Classification compares the log-probabilities of the label words after the prompt
(one scoring call per example, no generation); generation tasks generate and take
ROUGE-L F1 against the reference. Each (prompt, example, model) is scored once: the
score is kept in a ``Memo`` (SQLite on disk, so a resumed run pays nothing twice).
"""

from __future__ import annotations

import asyncio

from conclave.prompts import loader as prompts
from conclave.agents.aio import gather_all
from conclave.agents.evoprompt.config import EvoConfig
from conclave.agents.evoprompt.tasks import Example, Task
from conclave.agents.llm import LLM
from conclave.agents.memo import Memo, digest


class Fitness:
    def __init__(self, task: Task, llm: LLM, config: EvoConfig, cache: Memo | None = None,
                 slots: asyncio.Semaphore | None = None):
        self.task, self.llm, self.config = task, llm, config
        self.cache = cache if cache is not None else Memo()
        self.slots = slots or asyncio.Semaphore(config.max_concurrency)
        self.tokens = 0  # spent by the task model in this process (cache hits cost nothing)
        self._inflight: dict[str, asyncio.Future] = {}
        if task.kind == "classification":
            self.labels = sorted(task.verbalizer)
            self.words = [" " + task.verbalizer[lab] for lab in self.labels]  # scored right after "Answer:"
        else:
            from rouge_score import rouge_scorer

            self._rouge = rouge_scorer.RougeScorer(["rougeL"])
        self._model = [llm.backend, llm.model, task.kind, task.verbalizer,
                       config.generation_max_tokens if task.kind == "generation" else None]

    async def mean(self, instruction: str, examples: tuple[Example, ...]) -> float:
        if not examples:
            return 0.0
        keys = [digest(self._model, instruction, ex.text, ex.label) for ex in examples]
        mine: dict[str, Example] = {}  # neither cached nor already asked for by a concurrent call
        for k, ex in zip(keys, examples):
            if k not in mine and k not in self._inflight and self.cache.get(k) is None:
                mine[k] = ex
        loop = asyncio.get_running_loop()
        for k in mine:
            self._inflight[k] = loop.create_future()
        todo = list(mine.items())
        size = self.config.score_batch if self.task.kind == "classification" else 1
        try:
            await gather_all([self._batch(instruction, todo[i : i + size]) for i in range(0, len(todo), size)])
        finally:
            for k in mine:
                f = self._inflight.pop(k)
                if not f.done():
                    f.cancel()
        values = []
        for k, ex in zip(keys, examples):
            v = self.cache.get(k)
            if v is None:  # asked for by a concurrent call: wait for it (or, if that call failed, ask again)
                f = self._inflight.get(k)
                v = await asyncio.shield(f) if f is not None else await self.mean(instruction, (ex,))
            values.append(v)
        return sum(values) / len(values)

    async def _batch(self, instruction: str, batch: list[tuple[str, Example]]) -> None:
        futures = [self._inflight[k] for k, _ in batch]
        try:
            async with self.slots:
                if self.task.kind == "classification":
                    values = await self._classify(instruction, [ex for _, ex in batch])
                else:
                    values = [await self._generate(instruction, ex) for _, ex in batch]
            for (k, _), f, v in zip(batch, futures, values):
                self.cache.put(k, v)
                f.set_result(v)
        except Exception as e:
            for f in futures:
                if not f.done():
                    f.set_exception(e)
                    f.exception()  # retrieved here: a future nobody waits for is no warning
            raise

    async def _classify(self, instruction: str, examples: list[Example]) -> list[float]:
        items = [(prompts.render("evoprompt_classify", instruction=instruction, text=ex.text), self.words) for ex in examples]
        results = await self.llm.ascore_many(items)
        out = []
        for ex, scores in zip(examples, results):
            self.tokens += max(s.n_context for s in scores) + sum(s.n_tokens for s in scores)
            best = max(range(len(scores)), key=lambda i: scores[i].logprob)
            out.append(float(self.labels[best] == ex.label))
        return out

    async def _generate(self, instruction: str, ex: Example) -> float:
        rendered = prompts.render("evoprompt_generate", instruction=instruction, text=ex.text)
        out = await self.llm.acomplete(rendered, max_tokens=self.config.generation_max_tokens, temperature=0.0, seed=0,
                                       stop=("\n\n",))
        self.tokens += out.usage.total_tokens
        return self._rouge.score(ex.label, out.text.strip())["rougeL"].fmeasure

    def predict(self, instruction: str, texts: list[str]) -> list[str]:
        """The label the prompt gives each text (classification), in one ``score_many`` call:
        for inspecting a prompt by hand, and for benchmarks."""
        items = [(prompts.render("evoprompt_classify", instruction=instruction, text=t), self.words) for t in texts]
        return [self.labels[max(range(len(sc)), key=lambda i: sc[i].logprob)] for sc in self.llm.score_many(items)]
