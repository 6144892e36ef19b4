"""What a map-reduce run leaves behind: the parts, every map answer, every merge, and where each came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from conclave.local_models.errors import ConclaveError


class MapReduceError(ConclaveError):
    pass


@dataclass
class Part:
    """One piece of the input, as the map step read it."""

    id: str  # stable: a hash of source, text and occurrence (retrieval's chunk ids)
    index: int
    source: str
    start: int  # character offsets in its source's text (a source's records joined by newlines)
    end: int
    tokens: int


@dataclass
class MapAnswer:
    id: str  # "m<index>": the item this answer became
    part: str  # the part's id
    text: str
    kept: bool  # False: dropped before reduce (no relevant information, empty, or unusable JSON)
    cached: bool
    tokens: int  # of the answer, in the model's tokens
    note: str | None = None


@dataclass
class Merge:
    """One model call of a collapse round: consecutive items in, one item out."""

    id: str  # "r<round>.<n>"
    inputs: list[str]  # item ids
    parts: list[str]  # part ids under it, in document order
    text: str  # what it gave (cut, if truncated)
    tokens_in: int
    tokens_out: int
    cached: bool
    truncated: bool = False  # it did not shrink its input, so its output was cut


@dataclass
class MapReduceResult:
    task: str
    question: str | None
    answer: str  # extract: the merged object as JSON
    data: dict | None  # extract: the merged object
    parts: list[Part]
    maps: list[MapAnswer]
    rounds: list[list[Merge]]
    final_inputs: list[str]  # the items the answer was made from (one: it is the answer, no reduce call)
    provenance: dict[str, list[str]]  # every item id (and "answer") -> the part ids it came from
    n_calls: int  # model calls made in this run
    n_cached: int  # calls answered from the cache
    prompt_tokens: int
    completion_tokens: int
    warnings: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)  # the sizes the run used
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MapReduceResult:
        return cls(**{**d, "parts": [Part(**p) for p in d["parts"]], "maps": [MapAnswer(**m) for m in d["maps"]],
                      "rounds": [[Merge(**g) for g in r] for r in d["rounds"]]})

    def sources(self, item: str = "answer") -> list[Part]:
        """The parts an item (default: the answer) came from."""
        by_id = {p.id: p for p in self.parts}
        return [by_id[i] for i in self.provenance[item]]

    def report(self) -> str:
        kept = sum(m.kept for m in self.maps)
        lines = [f"## Map-reduce ({self.task})", ""]
        if self.question:
            lines += [f"**Question:** {self.question}", ""]
        lines += ["**Answer:**", "", (f"```json\n{self.answer}\n```" if self.data is not None else self.answer) or "_(none)_", ""]
        lines.append(
            f"{len(self.parts)} parts of up to {self.budget.get('chunk_tokens')} tokens; {kept} map answers kept; "
            f"{len(self.rounds)} collapse rounds ({sum(len(r) for r in self.rounds)} merges); "
            f"{self.n_calls} model calls ({self.n_cached} more from the cache), "
            f"{self.prompt_tokens + self.completion_tokens} tokens."
        )
        for w in self.warnings:
            lines.append(f"- warning: {w}")
        lines += ["", "| item | from parts | tokens | kept | text |", "|---|---|---|---|---|"]
        index = {p.id: p.index for p in self.parts}
        for m in self.maps:
            lines.append(f"| {m.id} | {index[m.part]} | {m.tokens} | {'yes' if m.kept else 'no'} | "
                         f"{_cell(m.note or m.text)[:120]} |")
        for r, merges in enumerate(self.rounds, start=1):
            for g in merges:
                spans = _spans([index[p] for p in g.parts])
                note = " (truncated)" if g.truncated else ""
                lines.append(f"| {g.id} | {spans} | {g.tokens_in} → {g.tokens_out}{note} | round {r} | {', '.join(g.inputs)} |")
        lines += ["", f"The answer comes from {', '.join(self.final_inputs) or 'nothing'}: "
                      f"parts {_spans([index[p] for p in self.provenance.get('answer', [])]) or 'none'}."]
        return "\n".join(lines) + "\n"


def _spans(indexes: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, run = [], []
    for i in sorted(set(indexes)):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()
