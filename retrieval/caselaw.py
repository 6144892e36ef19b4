"""A case table: the corpus's own citator (name, citation, year, author, holding, later
treatment), read from JSONL, and the documents a legal index is built from.

The schema is the one of ``agents/legal_audit/data/cases.jsonl``; a user's corpus folder
holds its own ``cases.jsonl`` (and, optionally, more documents to index beside it).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from conclave.retrieval.hits import RetrievalError
from conclave.retrieval.ingest import Record, table

CASES_FILE = "cases.jsonl"
# GNU miscfiles (Debian ``miscfiles``): the text of the US Constitution, where installed
CONSTITUTION = Path("/usr/share/state/us-constitution.gz")
_CITE = re.compile(r"^\d+ [A-Za-z. ]+?\d* ?[A-Za-z.]* \d+$")


class CaseTableError(RetrievalError):
    pass


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    citation: str  # "<volume> <reporter> <first page>", e.g. "347 U.S. 483"
    year: int
    majority_author: str | None = None  # a surname, or "per curiam"
    vote: str | None = None
    area: str | None = None
    holding: str = ""
    overruled_by: str | None = None  # the citation of the decision that expressly overruled it

    def document(self, names: dict[str, str] | None = None) -> str:
        """The case as one passage: what the index holds and what support is judged against.
        ``names`` (citation: "Name (year)") names the overruling case where the table has it."""
        parts = [f"{self.name}, {self.citation} ({self.year})."]
        if self.majority_author:
            who = "Per curiam opinion" if self.majority_author.lower() == "per curiam" else \
                f"Opinion of the Court by Justice {self.majority_author}"
            parts.append(f"{who}{', decided ' + self.vote if self.vote else ''}.")
        if self.area:
            parts.append(f"Area: {self.area}.")
        parts.append(f"Holding: {self.holding}")
        later = f"{names[self.overruled_by]}, {self.overruled_by}" if names and self.overruled_by in names \
            else self.overruled_by
        parts.append(f"Later treatment: overruled by {later}." if self.overruled_by else
                     "Later treatment: not expressly overruled.")
        return " ".join(parts)



def records(cases: list[Case]) -> list[Record]:
    """One record per case, for the index."""
    names = {c.citation: f"{c.name} ({c.year})" for c in cases}
    return [Record(c.document(names), f"case:{c.id}", {"case_id": c.id, "citation": c.citation, "name": c.name,
                                                        "year": c.year}) for c in cases]


def load_cases(path: Path) -> list[Case]:
    """The case table at ``path`` (a ``cases.jsonl`` file, or a folder holding one). Every bad
    line is reported with its number; nothing half-read is returned."""
    path = Path(path)
    if path.is_dir():
        path = path / CASES_FILE
    if not path.is_file():
        raise CaseTableError(f"no case table at {path}: a corpus folder needs a {CASES_FILE} "
                             "(id, name, citation, year, holding; see the sample corpus)")
    fields, seen = set(Case.__dataclass_fields__), {}

    def parse(obj: dict, n: int) -> Case:
        missing = [k for k in ("id", "name", "citation", "year") if obj.get(k) in (None, "")]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        case = Case(**{k: v for k, v in obj.items() if k in fields})
        if not isinstance(case.year, int) or not 1600 <= case.year <= 2200:
            raise ValueError(f"year must be a four-digit integer, not {case.year!r}")
        if not _CITE.match(case.citation):
            raise ValueError(f"citation {case.citation!r} is not '<volume> <reporter> <page>'")
        if case.id in seen:
            raise ValueError(f"duplicate id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = n
        return case

    return table(path, parse, CaseTableError, "case table")


def constitution() -> list[Record]:
    """The US Constitution from Debian's miscfiles, one record per section of an article and
    per amendment, each headed by where it stands; empty where the package is not installed."""
    if not CONSTITUTION.is_file():
        return []
    text = gzip.decompress(CONSTITUTION.read_bytes()).decode("utf-8", errors="replace")
    records, where, body = [], ["Preamble"], []

    def flush():
        if "".join(body).strip():
            head = "US Constitution, " + ", ".join(where)
            records.append(Record(f"{head}: " + " ".join(" ".join(body).split()), "us-constitution",
                                  {"part": ", ".join(where)}))
        body.clear()

    for line in text.splitlines()[1:]:
        heading = line.strip()
        if re.fullmatch(r"(Article|Amendment) [IVXLC]+", heading):
            flush()
            where = [heading]
        elif re.fullmatch(r"Section \d+", heading):
            flush()
            where = [where[0], heading]
        elif heading in ("Preamble", "Amendments"):
            flush()
            where = [heading]
        else:
            body.append(line)
    flush()
    return records
