"""Case citations in model text: found with eyecite, checked against the corpus's citator
(does this citation exist, and is it the case the text names?) and for plausibility with
reporters-db (is the reporter real, and was it being published in the cited year?).

A citation the citator does not hold is ``unverified``: in a closed corpus that is what a
fabricated citation looks like, so the audit treats it as one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

from conclave.retrieval.caselaw import Case

STATUSES = ("verified", "misattributed", "unverified", "implausible")
# U.S. Reports volumes 1-90 are the early nominative reporters (Dallas to Wallace, 1790-1874)
# renumbered; reporters-db dates the "U.S." edition from 1875 and lists those apart
_NOMINATIVE_US_VOLUMES = 90
# each nominative reporter's volume 1 as a U.S. Reports volume: "1 Cranch 137" is 5 U.S. 137
_NOMINATIVE_FIRST_US = {"Dall.": 1, "Cranch": 5, "Wheat.": 14, "Pet.": 26, "How.": 42, "Black": 66, "Wall.": 68}
_YEAR = re.compile(r"\(([^()]*?)\b(1[6-9]\d\d|2[01]\d\d)\)")
_NAME_BEFORE = re.compile(
    r"((?:(?:[A-Z][\w.'&-]*|of|the|and|for|de|ex rel\.)(?:[ ,]+(?:[A-Z][\w.'&-]*|of|the|and|for|de|ex rel\.|Co\.|Inc\.|v\.))*?"
    r"\s+v\.\s+|(?:Ex parte|In re|ex parte|in re)\s+)[^,;()]+?(?:,\s*(?:Inc|Co|Corp|Ltd|LLC|L\.L\.C)\.?)?)\s*,?\s*\(?$")
_SIGNAL = re.compile(r"^(?:(?:[Ss]ee|[Aa]lso|[Cc]f\.|[Bb]ut|[Ii]n(?! re\b)|[Uu]nder|[Aa]s|[Pp]er|[Bb]y|[Aa]nd|[Ss]ince|[Aa]fter|[Bb]efore"
                     r"|[Ff]ollowing|[Cc]ompare|E\.g\.,?|[Aa]ccord|[Tt]he Court in|[Tt]hus|[Hh]owever,?)\s+)+")
_PARTY_STOP = {"v", "of", "the", "and", "for", "co", "inc", "ex", "rel", "united", "states", "state", "city", "county",
               "board", "department", "commission", "people", "in", "re", "corp", "company"}


@dataclass(frozen=True)
class Citation:
    text: str  # as found, e.g. "347 U.S. 483" or "410 U.S. at 153"
    volume: int
    reporter: str  # eyecite's normalised reporter, e.g. "U.S."
    page: int | None  # the first page; for a short form, the pin page
    span: tuple[int, int]
    year: int | None = None  # from the parenthetical after the citation, if any
    name: str | None = None  # the case name written just before it, if any
    short: bool = False  # "410 U.S. at 153": a pin cite into a case cited before

    @property
    def key(self) -> str:
        """The citation as the citator files it: nominative reporters as their U.S. volume."""
        if self.reporter in _NOMINATIVE_FIRST_US:
            return f"{self.volume + _NOMINATIVE_FIRST_US[self.reporter] - 1} U.S. {self.page}"
        return f"{self.volume} {self.reporter} {self.page}"


@dataclass
class CiteCheck:
    citation: Citation
    status: str  # one of STATUSES
    case_id: str | None = None  # the citator's case, for a citation it holds
    reasons: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.status in ("verified", "misattributed")


def extract(text: str) -> list[Citation]:
    """Full and short case citations in ``text``, in order (``Id.`` refers back and is not a
    new authority, so it is left out)."""
    from eyecite import get_citations
    from eyecite.models import FullCaseCitation, ShortCaseCitation

    logging.getLogger("eyecite").setLevel(logging.ERROR)  # it logs "Unknown overlap case" at warning level
    if not text.strip():
        return []  # eyecite raises on empty text
    out = []
    for c in get_citations(text):
        if not isinstance(c, (FullCaseCitation, ShortCaseCitation)):
            continue
        g = c.groups
        try:
            volume, page = int(g.get("volume", "")), int(g.get("page", "")) if g.get("page") else None
        except ValueError:
            continue  # "___ U.S. ___" and the like: no authority to check
        start, end = c.span()
        reporter = c.corrected_reporter() if hasattr(c, "corrected_reporter") else g.get("reporter", "")
        short = isinstance(c, ShortCaseCitation)
        # eyecite's own year can come from another citation's parenthetical; read the one that follows
        after = text[end:end + 80]
        m = re.match(r"\s*(?:,\s*\d+(?:[-–]\d+)?)?\s*" + _YEAR.pattern, after)
        year = int(m.group(2)) if m else None
        before = text[max(0, start - 120):start]
        named = _NAME_BEFORE.search(before)
        name = _SIGNAL.sub("", named.group(1)).strip(" ,") if named and not short else None
        if short:
            name = c.metadata.antecedent_guess or None
        out.append(Citation(text[start:end], volume, reporter, page, (start, end), year, name, short))
    return out


@lru_cache(maxsize=None)
def _edition_years() -> dict[str, list[tuple[int, int | None]]]:
    """Every reporter edition (and each of its variant spellings): its publication years."""
    from reporters_db import REPORTERS

    out: dict[str, list[tuple[int, int | None]]] = {}
    for reps in REPORTERS.values():
        for rep in reps:
            for ed_name, ed in rep["editions"].items():
                years = (ed["start"].year if ed["start"] else 1600, ed["end"].year if ed["end"] else None)
                names = {ed_name} | {v for v, canon in rep.get("variations", {}).items() if canon == ed_name}
                for n in names:
                    out.setdefault(n, []).append(years)
    return out


def _editions(reporter: str) -> list[tuple[int, int | None]]:
    return _edition_years().get(reporter, [])


@lru_cache(maxsize=None)
def _early_scotus_years() -> tuple[int, int]:
    from reporters_db import REPORTERS

    dallas = [ed["start"].year for r in REPORTERS["Dall."] if r.get("cite_type") == "scotus_early"
              for ed in r["editions"].values()]
    return min(dallas), 1874


def _parties(name: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", name.lower()) if w not in _PARTY_STOP and len(w) > 2}


class Citator:
    """The corpus's citation table: every case, plus the citations it records as overruling
    others (real decisions the table may not hold)."""

    def __init__(self, cases: list[Case]):
        self.cases = {c.id: c for c in cases}
        self.by_citation = {c.citation: c for c in cases}
        self.names = {c.citation: f"{c.name} ({c.year})" for c in cases}  # for Case.document
        self.overruling = {}  # citation of an overruling decision: the cases it overruled
        for c in cases:
            if c.overruled_by:
                self.overruling.setdefault(c.overruled_by, []).append(c)
        self._volumes: dict[str, list[tuple[int, int]]] = {}  # reporter: sorted (volume, year)
        for c in cases:
            vol, rep, _ = _split(c.citation)
            self._volumes.setdefault(rep, []).append((vol, c.year))
        for v in self._volumes.values():
            v.sort()

    def resolve(self, cit: Citation, earlier: list[Citation] = ()) -> str | None:
        """The citation (of the table, or of an earlier full citation) that ``cit`` points to."""
        if not cit.short:
            return cit.key
        for e in reversed(earlier):  # "410 U.S. at 153" after "410 U.S. 113"
            if not e.short and e.volume == cit.volume and e.reporter == cit.reporter and (e.page or 0) <= (cit.page or 0):
                return e.key
        pages = [c for c in self.by_citation.values() if c.citation.startswith(f"{cit.volume} {cit.reporter} ")
                 and _split(c.citation)[2] <= (cit.page or 0)]
        return max(pages, key=lambda c: _split(c.citation)[2]).citation if pages else None

    def check(self, cit: Citation, earlier: list[Citation] = ()) -> CiteCheck:
        reasons = self.implausible(cit)
        if reasons:
            return CiteCheck(cit, "implausible", reasons=reasons)
        key = self.resolve(cit, earlier)
        case = self.by_citation.get(key) if key else None
        if case is None:
            if key in self.overruling:
                return CiteCheck(cit, "verified", reasons=[f"known as the decision that overruled "
                                                           f"{', '.join(c.name for c in self.overruling[key])}"])
            return CiteCheck(cit, "unverified", reasons=[f"{cit.text} is not in the citator"])
        notes = []
        if cit.name and not (_parties(cit.name) & _parties(case.name)):
            return CiteCheck(cit, "misattributed", case.id,
                             [f"{cit.text} is {case.name}, not {cit.name}"])
        if cit.year and cit.year != case.year:
            notes.append(f"cited as {cit.year}; {case.name} was decided in {case.year}")
        return CiteCheck(cit, "verified", case.id, notes)

    def implausible(self, cit: Citation) -> list[str]:
        """Why this citation cannot be real whatever the table holds: its reporter was not
        published in the cited year, or the year is out of step with the volume."""
        editions = _editions(cit.reporter)
        if not editions:
            return [f"{cit.reporter!r} is not a known reporter"]
        if cit.year is None:
            return []
        if cit.reporter == "U.S." and cit.volume <= _NOMINATIVE_US_VOLUMES:
            editions = [_early_scotus_years()]
        if not any(lo <= cit.year and (hi is None or cit.year <= hi) for lo, hi in editions):
            spans = ", ".join(f"{lo}-{hi or 'today'}" for lo, hi in editions)
            return [f"{cit.reporter} volume {cit.volume} cannot be from {cit.year} (published {spans})"]
        # volumes rise with time: a volume cited with a year that its nearest known neighbours contradict
        clash = [(abs(vol - cit.volume), vol, year) for vol, year in self._volumes.get(cit.reporter, [])
                 if (vol < cit.volume and year > cit.year + 1) or (vol > cit.volume and year < cit.year - 1)]
        if clash:
            _, vol, year = min(clash)
            return [f"{cit.reporter} volume {vol} is from {year}, so volume {cit.volume} cannot be from {cit.year}"]
        return []


def _split(citation: str) -> tuple[int, str, int]:
    vol, rest = citation.split(" ", 1)
    rep, page = rest.rsplit(" ", 1)
    return int(vol), rep, int(page)
