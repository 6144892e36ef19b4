"""Query sets: read from JSONL in the four categories of Magesh et al. (2024), or generated
from a case table by templates (factual recall, time-specific, false premises)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conclave.agents.legal_audit.config import AuditError
from conclave.retrieval.caselaw import Case
from conclave.retrieval.ingest import table

CATEGORIES = ("general_research", "jurisdiction_time", "false_premise", "factual_recall")
SAMPLE = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Query:
    id: str
    category: str
    question: str
    gold_answer: str
    gold_case_ids: tuple[str, ...] = ()
    premise_is_false: bool = False
    notes: str = ""
    # what a templated question asks for: "citation" | "year" | "author" | "overruled_by" | "good_law",
    # with the gold value; JSONL queries may carry them too
    asks: str | None = None
    gold_value: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gold_case_ids"] = list(self.gold_case_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Query:
        return cls(**{**d, "gold_case_ids": tuple(d.get("gold_case_ids", ()))})


def load_queries(path: Path) -> list[Query]:
    """A query file (one JSON object per line, the schema of ``queries_dev.jsonl``); every bad
    line is reported with its number."""
    known, seen = set(Query.__dataclass_fields__) - {"extra"}, set()

    def parse(obj: dict, n: int) -> Query:
        missing = [k for k in ("id", "category", "question", "gold_answer")
                   if not isinstance(obj.get(k), str) or not obj[k].strip()]
        if missing:
            raise ValueError(f"needs string field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if obj["category"] not in CATEGORIES:
            raise ValueError(f"category {obj['category']!r} is not one of {', '.join(CATEGORIES)}")
        if obj["id"] in seen:
            raise ValueError(f"duplicate id {obj['id']!r}")
        ids = obj.get("gold_case_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("gold_case_ids must be a list of case ids")
        seen.add(obj["id"])
        return Query(**{k: v for k, v in obj.items() if k in known - {"gold_case_ids", "premise_is_false"}},
                     gold_case_ids=tuple(ids), premise_is_false=bool(obj.get("premise_is_false", False)),
                     extra={k: v for k, v in obj.items() if k not in known})

    return table(Path(path), parse, AuditError, "query file")


def check_cases(queries: list[Query], cases: list[Case]) -> None:
    """Every gold case id a query names is in the case table."""
    ids = {c.id for c in cases}
    bad = sorted({f"{q.id}: {i}" for q in queries for i in q.gold_case_ids if i not in ids})
    if bad:
        raise AuditError("queries name cases the case table does not hold:\n  " + "\n  ".join(bad[:10]))


# --- generated from a case table -------------------------------------------------------

_FAKE_FIRST = ["Hartley", "Okonkwo", "Brennan-Ruiz", "Whitcombe", "Delgado", "Ashworth", "Nakamura", "Pellham",
               "Castellane", "Marlowe", "Ferrante", "Lindqvist", "Obuya", "Strand", "Vasquez-Hale", "Corrigan"]
_FAKE_SECOND = ["Ohio", "Department of Labor", "City of Dayton", "Kansas", "United States", "Board of Regents",
                "Federal Trade Commission", "Nevada", "Commissioner of Revenue", "Port Authority"]


def generate(cases: list[Case], *, per_template: int = 3, seed: int = 0) -> list[Query]:
    """Queries from templates over the case table, ``per_template`` of each: factual recall
    (citation, year, author), time-specific (good law? overruled by?) and false premises (a
    fabricated case with a plausible citation, a wrong author, a false claim of overruling)."""
    rng = random.Random(seed)
    by_cite = {c.citation: c for c in cases}
    authors = sorted({c.majority_author for c in cases if c.majority_author and c.majority_author != "per curiam"})
    out: list[Query] = []

    def pick(pool: list[Case]) -> list[Case]:
        return rng.sample(pool, min(per_template, len(pool)))

    def add(kind: str, category: str, question: str, gold: str, case: Case | None, *, asks=None, value=None,
            false=False, notes=""):
        n = sum(q.id.startswith(f"gen-{kind}-") for q in out) + 1
        out.append(Query(f"gen-{kind}-{n:02d}", category, question, gold, (case.id,) if case else (), false, notes,
                         asks, value))

    signed = [c for c in cases if c.majority_author and c.majority_author != "per curiam"]
    for c in pick(cases):
        add("cite", "factual_recall", f"What is the official reporter citation for {c.name}?",
            f"{c.name} is reported at {c.citation} ({c.year}).", c, asks="citation", value=c.citation)
    for c in pick(cases):
        add("year", "factual_recall", f"In what year did the Court decide {c.name}?",
            f"{c.name}, {c.citation}, was decided in {c.year}.", c, asks="year", value=str(c.year))
    for c in pick(signed):
        add("author", "factual_recall", f"Who wrote the opinion of the Court in {c.name}?",
            f"Justice {c.majority_author} wrote the opinion of the Court in {c.name}, {c.citation}.", c,
            asks="author", value=c.majority_author)
    for c in pick(cases):
        later = by_cite.get(c.overruled_by) if c.overruled_by else None
        gold = (f"No. {c.name} was overruled by {later.name if later else c.overruled_by}"
                f"{f', {later.citation} ({later.year})' if later else ''}." if c.overruled_by
                else f"{c.name}, {c.citation}, has not been expressly overruled.")
        add("goodlaw", "jurisdiction_time", f"Is {c.name} still good law?", gold, c, asks="good_law",
            value=c.overruled_by or "")
    overruled = [c for c in cases if c.overruled_by]
    for c in pick(overruled):
        later = by_cite.get(c.overruled_by)
        add("overruled", "jurisdiction_time", f"Which decision overruled {c.name}?",
            f"{c.name} was overruled by {f'{later.name}, {later.citation} ({later.year})' if later else c.overruled_by}.",
            c, asks="overruled_by", value=c.overruled_by)
    for _ in range(per_template):
        name = f"{rng.choice(_FAKE_FIRST)} v. {rng.choice(_FAKE_SECOND)}"
        host = rng.choice(cases)  # a page inside a real volume: a plausible citation that starts no decision
        vol, rep, page = host.citation.split(" ")[0], host.citation.split(" ")[-2], int(host.citation.split(" ")[-1])
        fake = f"{vol} {rep} {page + rng.randint(3, 15)}"
        while fake in by_cite:
            fake = f"{vol} {rep} {page + rng.randint(3, 15)}"
        add("fabricated", "false_premise", f"What did the Supreme Court hold in {name}, {fake} ({host.year})?",
            f"The premise is false: there is no case {name} at {fake} ({host.year}).", None, false=True,
            notes=f"Fabricated case; the citation falls inside {host.name}, {host.citation}.")
    for c in pick(signed):
        wrong = rng.choice([a for a in authors if a != c.majority_author])
        add("wrongauthor", "false_premise", f"Summarize Justice {wrong}'s opinion for the Court in {c.name}.",
            f"The premise is false: Justice {c.majority_author}, not Justice {wrong}, wrote the opinion of the Court "
            f"in {c.name}, {c.citation}.", c, false=True, asks="author", value=c.majority_author)
    for c in pick([c for c in cases if not c.overruled_by]):
        add("notoverruled", "false_premise", f"Which case overruled {c.name}, and why?",
            f"The premise is false: {c.name}, {c.citation}, has not been expressly overruled.", c, false=True,
            asks="good_law", value="")
    return out
