"""What a figure-team run leaves behind: every iteration's code, PNG, critique and checklist
score, the transcript, and which figure the commander chose."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from conclave.agents.figure.checklist import ITEMS, score


@dataclass
class Iteration:
    index: int  # 0 = the first draft
    code: str | None  # None: the coder's reply held no code
    status: str  # figure | no_figure | error | timeout | no_code
    checks: dict[str, bool]
    error: str | None = None
    report: dict | None = None  # the harness's description of the figure
    png: bytes | None = None
    critique: dict | None = None  # verdict, issues, parsed; None when the critic was not asked
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return score(self.checks)

    @property
    def approved(self) -> bool:
        return bool(self.critique and self.critique["verdict"] == "NO_ISSUES")


@dataclass
class FigureResult:
    config: dict
    coder: str
    critic: str
    iterations: list[Iteration]
    final: int | None  # the chosen iteration; None when no iteration wrote a figure
    stopped: str  # approved | limit
    answer: str  # the commander's final message
    transcript: list[dict] = field(default_factory=list)  # {source, text}, in order
    tokens: int = 0
    wall_s: float = 0.0

    @property
    def figure(self) -> bytes | None:
        return self.iterations[self.final].png if self.final is not None else None

    def save_png(self, path: Path) -> None:
        if self.figure is None:
            raise ValueError("no iteration wrote a figure")
        Path(path).write_bytes(self.figure)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for it, raw in zip(d["iterations"], self.iterations):
            it["png"] = base64.b64encode(raw.png).decode() if raw.png else None
            it["score"] = raw.score
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FigureResult:
        its = [Iteration(**({k: v for k, v in it.items() if k != "score"}
                            | {"png": base64.b64decode(it["png"]) if it["png"] else None}))
               for it in d["iterations"]]
        return cls(**(d | {"iterations": its}))

    def report(self) -> str:
        c = self.config
        lines = [f"## Figure team: {c['request']}", "",
                 f"Coder {self.coder}, critic {self.critic} (sees the {c['critic_sees']}); {len(self.iterations)} of "
                 f"{c['max_iterations']} iterations, stopped: {self.stopped}; {self.tokens:,} tokens; {self.wall_s:.0f} s.",
                 "", self.answer, "",
                 "| iteration | status | score | " + " | ".join(ITEMS) + " | critic |",
                 "|---|---|---|" + "---|" * len(ITEMS) + "---|"]
        for it in self.iterations:
            crit = "-" if it.critique is None else it.critique["verdict"] + (
                "" if it.critique["parsed"] else " (free text)")
            lines.append(f"| {it.index} | {it.status} | {it.score:.2f} | "
                         + " | ".join("✓" if it.checks[k] else "✗" for k in ITEMS) + f" | {crit} |")
        for it in self.iterations:
            if it.critique and it.critique["issues"]:
                lines += ["", f"Critique of iteration {it.index}:", *[f"- {i}" for i in it.critique["issues"]]]
            if it.error:
                lines += ["", f"Iteration {it.index} failed:", "```", it.error.strip()[-1200:], "```"]
        final = self.iterations[self.final] if self.final is not None else None
        if final is not None and final.code:
            lines += ["", f"Code of the chosen figure (iteration {final.index}):", "```python", final.code, "```"]
        return "\n".join(lines)
