"""What an EvoPrompt run leaves behind: every prompt it made (with its parents), the fitness
of each generation, and the final prompts with their dev and test scores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from conclave.local_models.errors import ConclaveError


class EvoError(ConclaveError):
    pass


@dataclass
class Node:
    id: int
    prompt: str
    op: str  # manual | paraphrase | ga | de
    parents: list[int]
    generation: int
    dev: float | None = None
    test: float | None = None
    parse_failed: bool = False  # the reply held no usable prompt (none, or the worked example copied); a copy of its parent


@dataclass
class Generation:
    index: int
    best: float
    mean: float
    worst: float
    children: int  # prompts the evolver was asked for in this generation
    parse_failures: int
    tokens: int  # evolver and task model, all generations so far
    wall_s: float  # all generations so far


@dataclass
class EvoResult:
    config: dict
    task: dict
    evolver: str
    task_model: str
    nodes: list[Node]
    population: list[int]  # the final population, best first
    generations: list[Generation]
    top: list[int]  # the final top prompts, scored on the test set
    initial_best: int  # the best prompt of generation 0, scored on the test set too
    stopped: str  # generations | patience | token_budget
    tokens_evolver: int
    tokens_task: int
    wall_s: float
    children: int
    parse_failures: int
    notes: list[str] = field(default_factory=list)

    def node(self, i: int) -> Node:
        return self.nodes[i]

    @property
    def best(self) -> Node:
        return self.nodes[self.top[0]]

    @property
    def parse_rate(self) -> float:
        return 1.0 - self.parse_failures / self.children if self.children else 1.0

    def lineage(self, i: int | None = None) -> list[Node]:
        """The prompt and every ancestor, nearest first."""
        seen, order, queue = set(), [], [self.top[0] if i is None else i]
        while queue:
            n = queue.pop(0)
            if n in seen:
                continue
            seen.add(n)
            order.append(self.nodes[n])
            queue.extend(self.nodes[n].parents)
        return order

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["parse_rate"] = self.parse_rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EvoResult:
        d = {k: v for k, v in d.items() if k != "parse_rate"}
        d["nodes"] = [Node(**n) for n in d["nodes"]]
        d["generations"] = [Generation(**g) for g in d["generations"]]
        return cls(**d)

    def report(self) -> str:
        c = self.config
        lines = [
            f"## EvoPrompt ({c['algorithm']}{', ' + c['de_variant'] if c['algorithm'] == 'de' else ''}) on {self.task['name']}",
            "",
            f"Task model {self.task_model}, evolver {self.evolver}; population {c['population']}, "
            f"{len(self.generations) - 1} generations (stopped: {self.stopped}); dev {self.task['dev']}, test {self.task['test']}.",
            f"{self.children} children asked for, {self.parse_failures} unparsable (parse rate {self.parse_rate:.2f}); "
            f"tokens: evolver {self.tokens_evolver:,}, task model {self.tokens_task:,}; {self.wall_s:.0f} s.",
            "",
            "| | prompt | dev | test |",
            "|---|---|---|---|",
        ]
        init = self.nodes[self.initial_best]
        for rank, i in enumerate(self.top, 1):
            n = self.nodes[i]
            lines.append(f"| top {rank} | {_cell(n.prompt)} | {_f(n.dev)} | {_f(n.test)} |")
        lines.append(f"| best initial | {_cell(init.prompt)} | {_f(init.dev)} | {_f(init.test)} |")
        lines += ["", "| generation | best dev | mean | worst | children | unparsable |", "|---|---|---|---|---|---|"]
        for g in self.generations:
            lines.append(f"| {g.index} | {g.best:.3f} | {g.mean:.3f} | {g.worst:.3f} | {g.children} | {g.parse_failures} |")
        lines += ["", "Lineage of the best prompt (nearest first):", ""]
        for n in self.lineage():
            parents = ", ".join(f"#{p}" for p in n.parents) or "-"
            lines.append(f"- #{n.id} gen {n.generation} {n.op} from {parents}, dev {_f(n.dev)}: {n.prompt}")
        for note in self.notes:
            lines += ["", f"_{note}_"]
        return "\n".join(lines)

    def plot(self, path: Path) -> Path:
        """Fitness per generation (best, mean and worst dev score), as a PNG."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        path = Path(path)
        fig.savefig(path)
        plt.close(fig)
        return path

    def figure(self):
        """The fitness plot as a matplotlib figure (the caller closes it)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        xs = [g.index for g in self.generations]
        ax.plot(xs, [g.best for g in self.generations], marker="o", label="best")
        ax.plot(xs, [g.mean for g in self.generations], marker=".", label="mean")
        ax.fill_between(xs, [g.worst for g in self.generations], [g.best for g in self.generations], alpha=0.15,
                        label="worst to best")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("generation")
        ax.set_ylabel("dev score")
        ax.set_title(f"EvoPrompt {self.config['algorithm']} on {self.task['name']} ({self.task_model})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return fig


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
