"""What an audit leaves behind: every answer with its grade, and the report: rates per
system and category with 95% confidence intervals, the correctness × groundedness table,
worked examples of each failure type, and a chart across systems."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from conclave.agents.legal_audit.queries import CATEGORIES

CORRECTNESS = ("correct", "incorrect", "refusal")
GROUNDEDNESS = ("grounded", "misgrounded", "ungrounded")
FAILURES = {  # the paper's failure types, and what picks an example of each
    "incorrect and misgrounded": lambda i: i.correctness == "incorrect" and i.groundedness == "misgrounded",
    "incorrect, cited properly": lambda i: i.correctness == "incorrect" and i.groundedness == "grounded",
    "incorrect, no citation": lambda i: i.correctness == "incorrect" and i.groundedness == "ungrounded",
    "correct but misgrounded": lambda i: i.correctness == "correct" and i.groundedness == "misgrounded",
    "accepted a false premise": lambda i: i.premise_is_false and i.correctness == "incorrect",
    "refusal": lambda i: i.correctness == "refusal",
}


@dataclass
class AuditItem:
    system: str
    query_id: str
    category: str
    question: str
    premise_is_false: bool
    answer: str
    correctness: str
    correctness_by: str  # rules | judge | overlap
    correctness_why: str
    groundedness: str
    groundedness_why: str
    cited: list[dict] = field(default_factory=list)  # grounding.CitedAuthority.to_dict()
    passages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None

    @property
    def hallucinated(self) -> bool:
        """Magesh et al.: incorrect, or correct but misgrounded."""
        return self.correctness == "incorrect" or (self.correctness == "correct" and self.groundedness == "misgrounded")

    @property
    def outcome(self) -> str:
        """The paper's three outcomes: accurate (correct and grounded), hallucinated, or
        incomplete (a refusal, or correct but ungrounded)."""
        if self.hallucinated:
            return "hallucinated"
        return "accurate" if self.correctness == "correct" and self.groundedness == "grounded" else "incomplete"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials (95% by default): sound at the
    small n and the rates near 0 or 1 an audit has, where the normal interval is not."""
    if n == 0:
        return 0.0, 1.0
    if k in (0, n):  # exact at the ends (the formula leaves rounding dust around 0 and 1)
        lo = n / (n + z * z)
        return (0.0, 1.0 - lo) if k == 0 else (lo, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def __str__(self) -> str:
        lo, hi = self.ci
        return f"{self.p:.0%} [{lo:.0%}, {hi:.0%}] ({self.k}/{self.n})" if self.n else "-"


@dataclass
class AuditResult:
    config: dict
    systems: dict[str, dict]  # name: {"kind", "model"}
    items: list[AuditItem]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def of(self, system: str, category: str | None = None) -> list[AuditItem]:
        return [i for i in self.items if i.system == system and (category is None or i.category == category)]

    def rate(self, system: str, what: str = "hallucinated", category: str | None = None) -> Rate:
        items = self.of(system, category)
        hit = {"hallucinated": lambda i: i.hallucinated, "accurate": lambda i: i.outcome == "accurate",
               "incomplete": lambda i: i.outcome == "incomplete", "refusal": lambda i: i.correctness == "refusal",
               "incorrect": lambda i: i.correctness == "incorrect", "correct": lambda i: i.correctness == "correct",
               "misgrounded": lambda i: i.groundedness == "misgrounded"}[what]
        return Rate(sum(map(hit, items)), len(items))

    def cells(self, system: str) -> Counter:
        return Counter((i.correctness, i.groundedness) for i in self.of(system))

    def citation_counts(self, system: str) -> Counter:
        return Counter(c["status"] for i in self.of(system) for c in i.cited)

    def to_dict(self) -> dict:
        return {"config": self.config, "systems": self.systems, "items": [dataclasses.asdict(i) for i in self.items],
                "wall_s": self.wall_s, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict) -> AuditResult:
        return cls(d["config"], d["systems"], [AuditItem(**i) for i in d["items"]], d.get("wall_s", 0.0),
                   d.get("notes", []))

    # --- the report ----------------------------------------------------------------------

    def report(self, examples: int = 1) -> str:
        names = list(self.systems)
        cats = [c for c in CATEGORIES if any(i.category == c for i in self.items)]
        lines = ["## Legal-RAG hallucination audit", "",
                 f"{len(self.items)} graded answers from {len(names)} system{'s' * (len(names) > 1)} in "
                 f"{self.wall_s:.0f} s. Hallucinated = incorrect, or correct but misgrounded (Magesh et al. 2024); "
                 "rates with Wilson 95% intervals.", "",
                 "| system | model | hallucinated | incorrect | refusal | accurate (correct + grounded) |",
                 "|---|---|---|---|---|---|"]
        for s in names:
            lines.append(f"| {s} ({self.systems[s].get('kind')}) | {self.systems[s].get('model')} | "
                         f"{self.rate(s)} | {self.rate(s, 'incorrect')} | {self.rate(s, 'refusal')} | "
                         f"{self.rate(s, 'accurate')} |")
        lines += ["", "### Hallucination rate by category", "",
                  "| category | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for c in cats:
            lines.append(f"| {c} | " + " | ".join(str(self.rate(s, category=c)) for s in names) + " |")
        for s in names:
            cells = self.cells(s)
            lines += ["", f"### {s}: correctness × groundedness", "",
                      "| | " + " | ".join(GROUNDEDNESS) + " |", "|---|---|---|---|"]
            for c in CORRECTNESS:
                lines.append(f"| {c} | " + " | ".join(str(cells[(c, g)]) for g in GROUNDEDNESS) + " |")
            counts = self.citation_counts(s)
            if counts:
                lines += ["", "Citations: " + ", ".join(f"{n} {k}" for k, n in counts.most_common()) + "."]
            by = Counter(i.correctness_by for i in self.of(s))
            lines += [f"Correctness decided by: {', '.join(f'{k} {n}' for k, n in by.most_common())}."]
        lines += ["", "### Worked examples"]
        shown: set[tuple[str, str]] = set()
        for kind, pick in FAILURES.items():
            found = [i for i in self.items if pick(i) and (i.system, i.query_id) not in shown][:examples]
            for i in found:
                shown.add((i.system, i.query_id))
                cites = "; ".join(f"`{c['text']}` {c['status']}" + (f", {'supports' if c['supports'] else 'does not support'}"
                                                                     if c.get("supports") is not None else "")
                                  + (f" ({c['reasons'][0]})" if c.get("reasons") else "") for c in i.cited)
                lines += ["", f"**{kind}** ({i.system}, {i.query_id}, {i.category})", "",
                          f"> Q: {_line(i.question)}", ">", f"> A: {_line(i.answer, 600) or '(empty)'}", "",
                          f"Correctness: {i.correctness} ({i.correctness_by}: {i.correctness_why}). "
                          f"Groundedness: {i.groundedness} ({i.groundedness_why})." + (f" Citations: {cites}." if cites else "")]
        if self.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def figure(self):
        """Hallucination rate per category and system (with 95% intervals), and each system's
        outcomes (accurate, incomplete, hallucinated); the caller closes it."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.systems)
        cats = [c for c in CATEGORIES if any(i.category == c for i in self.items)] + ["all"]
        fig, (ax, ox) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=120, gridspec_kw={"width_ratios": [2.2, 1]})
        width = 0.8 / max(len(names), 1)
        for j, s in enumerate(names):
            rates = [self.rate(s, category=None if c == "all" else c) for c in cats]
            xs = [x + (j - (len(names) - 1) / 2) * width for x in range(len(cats))]
            err = [[max(0.0, r.p - r.ci[0]) for r in rates], [max(0.0, r.ci[1] - r.p) for r in rates]]
            ax.bar(xs, [r.p for r in rates], width, yerr=err, capsize=3, label=s, color=f"C{j}")
        ax.set_xticks(range(len(cats)), [c.replace("_", " ") for c in cats])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("hallucination rate (95% CI)")
        ax.set_title("Hallucination rate by query category")
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(names))
        bottom = [0.0] * len(names)
        for outcome, colour in (("accurate", "#4c9f70"), ("incomplete", "#c9c9c9"), ("hallucinated", "#d1495b")):
            vals = [self.rate(s, outcome).p for s in names]
            ox.bar(names, vals, bottom=bottom, color=colour, label=outcome)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ox.set_ylim(0, 1.05)
        ox.set_title("Outcomes per system")
        ox.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
        fig.tight_layout()
        return fig

    def plot(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig = self.figure()
        fig.savefig(Path(path))
        plt.close(fig)
        return Path(path)


def _line(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
