"""What a loss-discovery run leaves behind: the archive, every loss with its code, validity,
error and fitness, in the order it was tried (the built-ins first)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from conclave.local_models.errors import ConclaveError


class LossLabError(ConclaveError):
    pass


@dataclass
class Candidate:
    index: int
    origin: str  # builtin | proposed
    name: str
    code: str
    valid: bool
    stage: str  # where judging stopped: parse, load, gate, train, sandbox, done
    error: str | None = None
    fitness: float | None = None
    per_seed: list[float] = field(default_factory=list)
    trajectories: list[list[list[float]]] = field(default_factory=list)
    thought: str = ""
    reply: str = ""  # the proposer's raw answer; the conversation is rebuilt from it on resume
    seconds: float = 0.0


@dataclass
class LossLabResult:
    config: dict
    proposer: str
    candidates: list[Candidate]
    tokens: int
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def proposed(self) -> list[Candidate]:
        return [c for c in self.candidates if c.origin == "proposed"]

    @property
    def validity(self) -> float | None:
        """The share of proposals that passed the gate and trained."""
        p = self.proposed
        return sum(c.valid for c in p) / len(p) if p else None

    def builtin(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.origin == "builtin" and c.name == name), None)

    @property
    def best(self) -> Candidate | None:
        """The best valid proposal (None when none was valid)."""
        ok = [c for c in self.proposed if c.valid]
        return max(ok, key=lambda c: c.fitness) if ok else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"validity": self.validity}

    @classmethod
    def from_dict(cls, d: dict) -> LossLabResult:
        d = {k: v for k, v in d.items() if k != "validity"}
        return cls(**(d | {"candidates": [Candidate(**c) for c in d["candidates"]]}))

    def report(self) -> str:
        dpo, best = self.builtin("dpo"), self.best
        lines = [f"## Loss discovery ({len(self.proposed)} proposals by {self.proposer})", "", self.fitness_text()]
        if self.validity is not None:
            lines.append(f"Valid proposals: {sum(c.valid for c in self.proposed)} of {len(self.proposed)} "
                         f"({self.validity:.0%}); {self.tokens:,} proposer tokens; {self.wall_s:.0f} s.")
        if best and dpo and dpo.valid:
            lines.append(f"Best proposal: **{best.name}** at {best.fitness:.4f}, against DPO's {dpo.fitness:.4f} "
                         f"({best.fitness - dpo.fitness:+.4f}).")
        lines += ["", "| # | origin | name | fitness | ± sd | valid | stopped at | error |", "|---|---|---|---|---|---|---|---|"]
        for c in self.candidates:
            sd = _sd(c.per_seed)
            lines.append(f"| {c.index} | {c.origin} | {_cell(c.name)} | {_f(c.fitness)} | {_f(sd)} | "
                         f"{'yes' if c.valid else 'no'} | {c.stage} | {_cell((c.error or '').splitlines()[-1:][0] if c.error else '')} |")
        if best:
            lines += ["", f"### {best.name}", "", best.thought, "", "```python", best.code.strip(), "```"]
        for note in self.notes:
            lines += ["", f"_{note}_"]
        return "\n".join(lines)

    def fitness_text(self) -> str:
        if self.config.get("fitness") == "lm":
            m = self.config["lm"]
            return (f"Fitness: {m['model']} trained {m['steps']} steps on sampled review continuations (β = {m['beta']}), "
                    f"the gain in mean P(positive) with estimated KL ≤ {m['kl_budget']} nats.")
        s = self.config["synthetic"]
        return (f"Fitness: the synthetic preference task, reward gain at KL ≤ {s['kl_budget']} as a share of the possible "
                f"gain, mean of seeds {', '.join(map(str, s['seeds']))} (β = {s['beta']}, {s['steps']} steps).")

    def plot(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig = self.figure()
        fig.savefig(Path(path))
        plt.close(fig)
        return Path(path)

    def figure(self):
        """Fitness of every loss in the order tried (built-ins first, best proposal so far as a
        line), and the reward–KL paths of the built-ins and the best proposal (seed 0); the
        caller closes it."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, fr) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
        cs = self.candidates
        for origin, marker, colour in (("builtin", "s", "C7"), ("proposed", "o", "C0")):
            ok = [c for c in cs if c.origin == origin and c.valid]
            ax.scatter([c.index for c in ok], [c.fitness for c in ok], marker=marker, color=colour, zorder=3,
                       label=f"{'built-in' if origin == 'builtin' else 'proposal'}")
        bad = [c.index for c in cs if not c.valid]
        if bad:
            ax.scatter(bad, [0.0] * len(bad), marker="x", color="C3", zorder=3, label="invalid (drawn at 0)")
        xs, ys, run = [], [], None
        for c in self.proposed:
            if c.valid and (run is None or c.fitness > run):
                run = c.fitness
            if run is not None:
                xs.append(c.index)
                ys.append(run)
        if xs:
            ax.step(xs, ys, where="post", color="C0", alpha=0.6, label="best proposal so far")
        if (dpo := self.builtin("dpo")) and dpo.valid:
            ax.axhline(dpo.fitness, ls="--", lw=0.8, color="C7", label="dpo")
        if len(cs) <= 30:
            ax.set_xticks([c.index for c in cs], [c.name for c in cs], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("fitness")
        ax.set_title(f"{len(self.proposed)} proposals by {self.proposer}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        best = self.best
        for c in cs:
            if c.valid and c.trajectories and (c.origin == "builtin" or c is best):
                t = c.trajectories[0]
                fr.plot([x[1] for x in t], [x[2] for x in t], marker="." if c is best else None,
                        lw=2 if c is best else 1, alpha=1 if c is best else 0.7, label=c.name)
        fr.axvline(self.config[self.config.get("fitness", "synthetic")]["kl_budget"], ls=":", color="grey",
                   label="KL budget")
        fr.set_xlabel("KL(π‖π_ref)")
        fr.set_ylabel("expected reward")
        fr.set_title("reward–KL path during training, seed 0", fontsize=9)
        fr.grid(alpha=0.3)
        fr.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _sd(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:120]
