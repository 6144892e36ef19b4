"""The fitness of a prompt: its mean score over a set of examples.

Classification compares the log-probabilities of the label words after the prompt
(one scoring call per example, no generation); generation tasks generate and take
ROUGE-L F1 against the reference. Each (prompt, example, model) is scored once: the
score is kept in a ``Memo`` (SQLite on disk, so a resumed run pays nothing twice).
"""

from __future__ import annotations

import asyncio

import prompts
from agents.aio import gather_all
from agents.evoprompt.config import EvoConfig
from agents.evoprompt.tasks import Example, Task
from agents.llm import LLM
from agents.memo import Memo, digest


class Fitness:
    def __init__(self, task: Task, llm: LLM, config: EvoConfig, cache: Memo | None = None,
                 slots: asyncio.Semaphore | None = None):
        self.task, self.llm, self.config = task, llm, config
        self.cache = cache if cache is not None else Memo()
        self.slots = slots or asyncio.Semaphore(config.max_concurrency)
        self.tokens = 0  # spent by the task model in this process (cache hits cost nothing)
        self.calls = 0
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
        scores = await gather_all([self.one(instruction, ex) for ex in examples])
        return sum(scores) / len(scores)

    async def one(self, instruction: str, ex: Example) -> float:
        k = digest(self._model, instruction, ex.text, ex.label)
        hit = self.cache.get(k)
        if hit is not None:
            return hit
        if k in self._inflight:  # the same prompt on the same example, asked for twice at once
            return await asyncio.shield(self._inflight[k])
        self._inflight[k] = done = asyncio.get_running_loop().create_future()
        try:
            async with self.slots:
                value = await (self._classify(instruction, ex) if self.task.kind == "classification"
                               else self._generate(instruction, ex))
            self.cache.put(k, value)
            done.set_result(value)
            return value
        except asyncio.CancelledError:
            done.cancel()
            raise
        except Exception as e:
            done.set_exception(e)
            done.exception()  # retrieved here, so that no one waiting is no warning
            raise
        finally:
            del self._inflight[k]

    async def _classify(self, instruction: str, ex: Example) -> float:
        rendered = prompts.render("evoprompt_classify", instruction=instruction, text=ex.text)
        scores = await self.llm.ascore(rendered, self.words)
        self.calls += 1
        self.tokens += max(s.n_context for s in scores) + sum(s.n_tokens for s in scores)
        best = max(range(len(scores)), key=lambda i: scores[i].logprob)
        return float(self.labels[best] == ex.label)

    async def _generate(self, instruction: str, ex: Example) -> float:
        rendered = prompts.render("evoprompt_generate", instruction=instruction, text=ex.text)
        out = await self.llm.acomplete(rendered, max_tokens=self.config.generation_max_tokens, temperature=0.0, seed=0,
                                       stop=("\n\n",))
        self.calls += 1
        self.tokens += out.usage.total_tokens
        return self._rouge.score(ex.label, out.text.strip())["rougeL"].fmeasure

    def predict(self, instruction: str, text: str) -> str:
        """The label the prompt gives one text (classification), for inspecting a prompt by hand."""
        scores = self.llm.score(prompts.render("evoprompt_classify", instruction=instruction, text=text), self.words)
        return self.labels[max(range(len(scores)), key=lambda i: scores[i].logprob)]
