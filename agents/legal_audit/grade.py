"""One answer graded on the paper's two axes: correctness, then groundedness."""

from __future__ import annotations

from dataclasses import dataclass

from conclave.agents.legal_audit import correctness, grounding
from conclave.agents.legal_audit.queries import Query
from conclave.agents.llm import LLM
from conclave.retrieval.caselaw import Case
from conclave.retrieval.citations import Citator, extract


@dataclass
class Grade:
    correctness: correctness.Verdict
    grounding: grounding.Grounding


class Grader:
    """Grades answers against a case table. ``judge``: a model for what the rules leave open
    (correctness) and, with ``support_by_judge``, for whether a cited case supports its claim."""

    def __init__(self, cases: list[Case], *, judge: LLM | None = None, support_by_judge: bool = False):
        self.cases = {c.id: c for c in cases}
        self.citator = Citator(cases)
        self.authors = set(correctness.JUSTICES) | {c.majority_author.lower() for c in cases
                                                    if c.majority_author and c.majority_author.lower() != "per curiam"}
        self.judge = judge
        self.support_llm = judge if support_by_judge else None

    def grade(self, query: Query, answer: str) -> Grade:
        verdict = correctness.grade(query, answer, self.cases, self.authors, self.judge)
        text = answer
        if query.premise_is_false and verdict.label == "correct":
            # a rejected premise's own citation, repeated to reject it, is not an authority relied on
            for c in extract(query.question):
                text = text.replace(c.text, " ")
        return Grade(verdict, grounding.ground(text, self.citator, llm=self.support_llm))
