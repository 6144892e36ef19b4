"""EvoPrompt (Guo et al. 2023): prompts evolve through model-performed crossover and mutation,
are scored on a dev set, and the best survive. The task model is a black box scored
through the seam; the evolver is any other (or the same) model.

ga: N children a generation, each from two parents (roulette, tournament or random),
crossed over and mutated by the evolver; the best N of parents and children survive.
de: for each member, the evolver mutates the difference of two others, combines it with
the best prompt (v1; v2 leaves the best out, v3 the difference step) and crosses the
result with the member, which the child replaces only if strictly better.
paraphrase: N paraphrases of members a generation, the best N kept (the APE-like baseline).

Each finished generation is a checkpoint: ``run(..., resume=state)`` continues from it. A
checkpoint records what it was made for (the task: its name, kind, examples, starting prompts
and verbalizer; and the configuration), and only a run of that same task and configuration
resumes from it: scores kept from another task or configuration would be wrong for this one.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable

from conclave.agents.aio import gather_all
from conclave.agents.evoprompt.config import EvoConfig
from conclave.agents.evoprompt.fitness import Fitness
from conclave.agents.evoprompt.operators import Offspring, ask, de_template, de_values, select_parents
from conclave.agents.evoprompt.tasks import Task
from conclave.agents.evoprompt.trace import EvoError, EvoResult, Generation, Node
from conclave.agents.llm import LLM
from conclave.agents.memo import Memo, digest

Event = Callable[[dict], None]
Checkpoint = Callable[[int, dict], None]


def run(config: EvoConfig, evolver: LLM, task_llm: LLM, task: Task, *, cache: Memo | None = None,
        on_event: Event | None = None, checkpoint: Checkpoint | None = None, resume: dict | None = None) -> EvoResult:
    """``cache``: where scores persist (default: memory, this run only). ``checkpoint(generation,
    state)`` is called after each generation; ``resume`` is such a state."""
    return asyncio.run(arun(config, evolver, task_llm, task, cache=cache, on_event=on_event, checkpoint=checkpoint,
                            resume=resume))


async def arun(config: EvoConfig, evolver: LLM, task_llm: LLM, task: Task, *, cache: Memo | None = None,
               on_event: Event | None = None, checkpoint: Checkpoint | None = None, resume: dict | None = None) -> EvoResult:
    if not task.dev:
        raise EvoError("the task has no dev examples to score prompts on")
    if not task.manual_prompts:
        raise EvoError("EvoPrompt needs at least one starting prompt")
    r = _Run(config, evolver, task_llm, task, cache, on_event, resume)
    if not r.nodes:
        children, failures = await r.initialise()  # the paraphrases asked for
        r.close_generation(0, children, failures)
        r.check_stop()
        r.save(checkpoint)
    step = {"ga": r.ga, "de": r.de, "paraphrase": r.paraphrase}[config.algorithm]
    while r.stopped is None:
        if len(r.generations) > config.generations:
            r.stopped = "generations"
            break
        g = len(r.generations)
        children, failures = await step(g)
        r.close_generation(g, children, failures)
        r.check_stop()
        r.save(checkpoint)
    return await r.finish()


def task_record(task: Task) -> dict:
    """What a checkpoint records of the task it was made for: enough to tell any change that
    moves a score (the examples by digest, so that a large task makes no large checkpoint)."""
    return {
        "name": task.name, "kind": task.kind, "verbalizer": dict(task.verbalizer),
        "dev": [len(task.dev), digest([[e.id, e.text, e.label] for e in task.dev])],
        "test": [len(task.test), digest([[e.id, e.text, e.label] for e in task.test])],
        "manual_prompts": [len(task.manual_prompts), digest(list(task.manual_prompts))],
    }


def _task_differences(saved: dict, now: dict) -> list[str]:
    out = []
    for key in ("name", "kind", "verbalizer"):
        if saved.get(key) != now[key]:
            out.append(f"{key} {saved.get(key)!r} (this run's: {now[key]!r})")
    for key, what in (("dev", "dev examples"), ("test", "test examples"), ("manual_prompts", "starting prompts")):
        old = saved.get(key) or [None, None]
        if old != now[key]:
            same_size = old[0] == now[key][0]
            out.append(f"its {what} ({'the same number, other ones' if same_size else f'{old[0]}; this run has {now[key][0]}'})")
    return out


def _config_differences(saved: dict, now: dict) -> list[str]:
    # every knob counts, max_concurrency too: a batching server's scores move with the batch
    return [f"{k} {saved.get(k, '(unset)')!r} (this run's: {now.get(k, '(unset)')!r})"
            for k in sorted(set(saved) | set(now)) if saved.get(k, ...) != now.get(k, ...)]


class _Run:
    def __init__(self, config: EvoConfig, evolver: LLM, task_llm: LLM, task: Task, cache: Memo | None,
                 on_event: Event | None, resume: dict | None):
        self.c, self.evolver, self.task = config, evolver, task
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.fitness = Fitness(task, task_llm, config, cache, self.slots)
        self.on_event = on_event
        self.rng = random.Random(config.seed)
        self.nodes: list[Node] = []
        self.population: list[int] = []
        self.generations: list[Generation] = []
        self.tokens_evolver = self.tokens_task_before = 0
        self.wall_before = 0.0
        self.no_better = 0
        self.stopped: str | None = None
        self.notes: list[str] = []
        self.t0 = time.perf_counter()
        if resume:
            self._restore(resume)

    # --- state ----------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        return self.tokens_evolver + self.tokens_task_before + self.fitness.tokens

    @property
    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {
            "config": self.c.model_dump(), "task": task_record(self.task),
            "nodes": [vars(n) for n in self.nodes], "population": self.population,
            "generations": [vars(g) for g in self.generations], "rng": [version, list(internal), gauss],
            "tokens_evolver": self.tokens_evolver, "tokens_task": self.tokens_task_before + self.fitness.tokens,
            "wall_s": self.wall, "no_better": self.no_better,
            "stopped": self.stopped, "notes": self.notes,
        }

    def _restore(self, s: dict) -> None:
        """Continue from checkpoint ``s``: only one made for this task and configuration."""
        if "task" not in s or "config" not in s:
            raise EvoError("the checkpoint does not record the task and configuration it was made for "
                           "(an older checkpoint); start the run again")
        config = _config_differences(s["config"], self.c.model_dump())
        if config:
            raise EvoError(f"the checkpoint was made with another configuration: {'; '.join(config)}; "
                           "resume with the run's own")
        task = _task_differences(s["task"], task_record(self.task))
        if task:
            raise EvoError(f"the checkpoint was made for another task: {'; '.join(task)}; "
                           "resume with the task it was made for")
        self.nodes = [Node(**n) for n in s["nodes"]]
        self.population = list(s["population"])
        self.generations = [Generation(**g) for g in s["generations"]]
        version, internal, gauss = s["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.tokens_evolver, self.tokens_task_before = s["tokens_evolver"], s["tokens_task"]
        self.wall_before = s["wall_s"]
        self.no_better = s["no_better"]
        self.stopped, self.notes = s["stopped"], list(s["notes"])

    def save(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            checkpoint(len(self.generations) - 1, self.state())

    def emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def add(self, prompt: str, op: str, parents: list[int], generation: int, parse_failed: bool = False) -> Node:
        node = Node(len(self.nodes), prompt, op, parents, generation, parse_failed=parse_failed)
        self.nodes.append(node)
        return node

    async def score(self, nodes: list[Node]) -> None:
        devs = await gather_all([self.fitness.mean(n.prompt, self.task.dev) for n in nodes])
        for n, d in zip(nodes, devs):
            n.dev = d

    def ranked(self, ids: list[int], *, unique: bool = True) -> list[int]:
        """Best dev first; among equals the older prompt; each prompt text once (if ``unique``)."""
        out, seen = [], set()
        for i in sorted(ids, key=lambda i: (-self.nodes[i].dev, i)):
            if not unique or self.nodes[i].prompt not in seen:
                seen.add(self.nodes[i].prompt)
                out.append(i)
        return out

    async def evolve(self, pid: str, values: list[dict]) -> list[Offspring]:
        """One evolver call per entry of ``values``, at once; seeds are drawn first, so a run
        is the same whatever order the calls finish in."""
        seeds = [self.rng.randrange(2**31) for _ in values]

        async def one(v: dict, seed: int) -> Offspring:
            async with self.slots:
                child = await ask(self.evolver, pid, temperature=self.c.evolver_temperature,
                                  max_tokens=self.c.evolver_max_tokens, seed=seed, **v)
            self.tokens_evolver += child.tokens
            return child

        return await gather_all([one(v, seed) for v, seed in zip(values, seeds)])

    # --- generation 0 ---------------------------------------------------------------------

    async def initialise(self) -> tuple[int, int]:
        """The manual prompts, then paraphrases of them until the population is full;
        (paraphrases asked for, paraphrases that did not parse)."""
        for p in dict.fromkeys(" ".join(p.split()) for p in self.task.manual_prompts if p.strip()):
            self.add(p, "manual", [], 0)
        manual = list(range(len(self.nodes)))
        tries = failures = 0
        while len(self.nodes) < self.c.population and tries < 3 * self.c.population:
            wanted = self.c.population - len(self.nodes)
            picks = [self.rng.choice(manual) for _ in range(wanted)]
            tries += wanted
            replies = await self.evolve("evoprompt_paraphrase", [{"prompt": self.nodes[i].prompt} for i in picks])
            have = {n.prompt for n in self.nodes}
            for i, child in zip(picks, replies):
                if child.prompt is None:
                    failures += 1
                elif child.prompt not in have and len(self.nodes) < self.c.population:
                    have.add(child.prompt)
                    self.add(child.prompt, "paraphrase", [i], 0)
        if len(self.nodes) < 2:
            raise EvoError(f"could not build a population of two prompts: the evolver ({self.evolver.model}) wrote no new "
                           f"parsable <prompt>…</prompt> in {tries} tries; give more starting prompts or another evolver")
        if len(self.nodes) < self.c.population:
            self.notes.append(f"the population started with {len(self.nodes)} prompts, not {self.c.population}: "
                              f"the evolver's paraphrases did not parse or repeated others")
        await self.score(self.nodes)
        self.population = self.ranked(list(range(len(self.nodes))))[: self.c.population]  # more manual prompts than room
        return tries, failures

    # --- one generation of each algorithm ---------------------------------------------------

    async def ga(self, g: int) -> tuple[int, int]:
        pop = self.population
        texts, fit = [self.nodes[i].prompt for i in pop], [self.nodes[i].dev for i in pop]
        pairs = [select_parents(self.rng, texts, fit, self.c.selection, self.c.tournament_size) for _ in pop]
        replies = await self.evolve("evoprompt_ga", [{"prompt_1": texts[a], "prompt_2": texts[b]} for a, b in pairs])
        children = [self._child(reply, "ga", [pop[a], pop[b]], g) for (a, b), reply in zip(pairs, replies)]
        await self.score(children)
        self.population = self.ranked(pop + [c.id for c in children])[: self.c.population]
        return len(children), sum(c.parse_failed for c in children)

    async def de(self, g: int) -> tuple[int, int]:
        pop = self.population
        best = max(pop, key=lambda i: (self.nodes[i].dev, -i))
        p = lambda i: self.nodes[i].prompt  # noqa: E731
        plans = []
        for member in pop:
            others = [i for i in pop if i != member]
            a = self.rng.choice(others)
            # the difference of two alike prompts is nothing: b differs from a whenever the population allows
            b = self.rng.choice([i for i in others if p(i) != p(a)] or [i for i in others if i != a] or [member])
            plans.append((member, a, b))
        v = self.c.de_variant
        replies = await self.evolve(de_template(v), [de_values(v, p(a), p(b), p(best), p(m)) for m, a, b in plans])
        # the member is the child's parent it falls back to: listed first
        children = [self._child(reply, "de", [m, a, b] + ([best] if v != "v2" else []), g)
                    for (m, a, b), reply in zip(plans, replies)]
        await self.score(children)
        kept = [c.id if c.dev > self.nodes[m].dev else m for (m, _, _), c in zip(plans, children)]
        self.population = self.ranked(kept, unique=False)  # each member holds its place, even if two became alike
        return len(children), sum(c.parse_failed for c in children)

    async def paraphrase(self, g: int) -> tuple[int, int]:
        pop = self.population
        picks = [self.rng.choice(pop) for _ in pop]
        replies = await self.evolve("evoprompt_paraphrase", [{"prompt": self.nodes[i].prompt} for i in picks])
        children = [self._child(reply, "paraphrase", [i], g) for i, reply in zip(picks, replies)]
        await self.score(children)
        self.population = self.ranked(pop + [c.id for c in children])[: self.c.population]
        return len(children), sum(c.parse_failed for c in children)

    def _child(self, reply: Offspring, op: str, parents: list[int], g: int) -> Node:
        if reply.prompt is None:  # counted by the generation, and the child is its first parent again
            return self.add(self.nodes[parents[0]].prompt, op, parents, g, parse_failed=True)
        return self.add(reply.prompt, op, parents, g)

    # --- bookkeeping --------------------------------------------------------------------------

    def close_generation(self, g: int, children: int, failures: int) -> None:
        devs = [self.nodes[i].dev for i in self.population]
        before = self.generations[-1].best if self.generations else None
        gen = Generation(g, max(devs), sum(devs) / len(devs), min(devs), children, failures, self.tokens, self.wall)
        self.generations.append(gen)
        self.no_better = 0 if before is None or gen.best > before else self.no_better + 1
        self.emit({"kind": "generation", "generation": g, "best": gen.best, "mean": gen.mean, "tokens": gen.tokens,
                   "of": self.c.generations})

    def check_stop(self) -> None:
        if self.c.patience is not None and self.no_better >= self.c.patience:
            self.stopped = "patience"
        elif self.c.token_budget is not None and self.tokens >= self.c.token_budget:
            self.stopped = "token_budget"
        elif len(self.generations) > self.c.generations:
            self.stopped = "generations"

    async def finish(self) -> EvoResult:
        top = self.population[: self.c.top_k_test]
        gen0 = [n.id for n in self.nodes if n.generation == 0]
        initial = self.ranked(gen0)[0]
        scored = list(dict.fromkeys(top + [initial]))
        self.emit({"kind": "test", "prompts": len(scored), "examples": len(self.task.test)})
        tests = await gather_all([self.fitness.mean(self.nodes[i].prompt, self.task.test) for i in scored])
        for i, t in zip(scored, tests):
            self.nodes[i].test = t if self.task.test else None
        return EvoResult(
            config=self.c.model_dump(), task=self.task.describe(), evolver=f"{self.evolver.backend}:{self.evolver.model}",
            task_model=f"{self.fitness.llm.backend}:{self.fitness.llm.model}", nodes=self.nodes,
            population=self.population, generations=self.generations, top=top, initial_best=initial,
            stopped=self.stopped or "generations", tokens_evolver=self.tokens_evolver,
            tokens_task=self.tokens_task_before + self.fitness.tokens, wall_s=self.wall,
            children=sum(g.children for g in self.generations), parse_failures=sum(g.parse_failures for g in self.generations),
            notes=self.notes,
        )
