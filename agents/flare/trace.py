"""What a FLARE run leaves behind: every step, its queries and passages, and the answer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from conclave.local_models.errors import ConclaveError


class FlareError(ConclaveError):
    pass


@dataclass
class LowToken:
    token: str
    prob: float


@dataclass
class Step:
    index: int
    kind: str  # "sentence" (direct) | "search" (instruct) | "window" (interval) | "answer" (none, single)
    draft: str = ""  # what the model wrote before any retrieval of this step
    low_confidence: list[LowToken] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    retrieved_ids: list[str] = field(default_factory=list)
    regenerated: str | None = None  # the draft rewritten with the new passages (direct only)
    text: str = ""  # what went into the answer
    note: str | None = None  # e.g. malformed model output and how it was handled

    @property
    def retrieved(self) -> bool:
        return bool(self.queries)


@dataclass
class FlareResult:
    method: str
    question: str
    answer: str
    steps: list[Step]
    n_calls: int
    n_retrievals: int
    retrieved_ids: list[str]  # every passage id any retrieval returned, first-seen order
    stopped: str  # "end" | "max_steps" | "max_answer_tokens"
    initial_query: str | None = None  # direct retrieves once with the question before the first step
    initial_ids: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def trigger_rate(self) -> float:
        """Fraction of generation steps that retrieved (the initial retrieval of direct is not a step)."""
        return sum(s.retrieved for s in self.steps) / len(self.steps) if self.steps else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["trigger_rate"] = self.trigger_rate
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FlareResult:
        d = {k: v for k, v in d.items() if k != "trigger_rate"}
        steps = [Step(**{**s, "low_confidence": [LowToken(**t) for t in s["low_confidence"]]}) for s in d["steps"]]
        return cls(**{**d, "steps": steps})

    def report(self) -> str:
        lines = [
            f"## FLARE ({self.method})",
            "",
            f"**Question:** {self.question}",
            "",
            f"**Answer:** {self.answer or '(empty)'}",
            "",
            f"{len(self.steps)} steps, {self.n_calls} model calls, {self.n_retrievals} retrievals, "
            f"trigger rate {self.trigger_rate:.2f}, stopped: {self.stopped}.",
        ]
        if self.initial_query is not None:
            lines += ["", f"Initial retrieval with `{_cell(self.initial_query)}`: {', '.join(self.initial_ids) or 'nothing'}"]
        lines += ["", "| step | kind | low-confidence tokens | queries | retrieved | draft | accepted |",
                  "|---|---|---|---|---|---|---|"]
        for s in self.steps:
            low = ", ".join(f"`{_cell(t.token)}` {t.prob:.2f}" for t in s.low_confidence)
            accepted = _cell(s.text) + (f" _({_cell(s.note)})_" if s.note else "")
            lines.append(f"| {s.index} | {s.kind} | {low} | {'; '.join(_cell(q) for q in s.queries)} | "
                         f"{', '.join(s.retrieved_ids)} | {_cell(s.draft)} | {accepted} |")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()
