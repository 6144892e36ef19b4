"""Is the answer grounded, misgrounded or ungrounded? Its citations are found (eyecite),
checked against the citator and reporters-db, and each real one is checked for support:
does the cited case's text support the sentence that cites it?"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from conclave.agents.legal_audit.text import content_words, sentence_spans
from conclave.agents.llm import LLM
from conclave.prompts.loader import render
from conclave.retrieval.citations import Citator, extract

SUPPORT_THRESHOLD = 0.5  # lexical: the share of the claim's content words found in the cited case


@dataclass
class CitedAuthority:
    text: str
    status: str  # verified | misattributed | unverified | implausible
    case_id: str | None
    reasons: list[str] = field(default_factory=list)
    claim: str = ""
    supports: bool | None = None  # None: not checked (the authority is not real)
    support_by: str | None = None  # "judge" | "lexical"
    support_why: str = ""

    @property
    def good(self) -> bool:
        return self.status == "verified" and bool(self.supports)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Grounding:
    label: str  # one of trace.GROUNDEDNESS
    cited: list[CitedAuthority]
    why: str


def claims_for(text: str, span: tuple[int, int]) -> list[str]:
    """What a citation may be offered for, narrowest first: its clause, its sentence, and its
    sentence with the next (a holding is often spelled out after the citation). Citations and
    year parentheticals are taken out."""
    spans = sentence_spans(text)
    if not spans:
        return []
    chosen = next((i for i, (a, b) in enumerate(spans) if a <= span[0] < b), len(spans) - 1)
    a, b = spans[chosen]
    sentence = text[a:b]
    if len(content_words(_strip(sentence))) < 3 and chosen > 0:
        sentence = text[spans[chosen - 1][0]:b]  # "See 347 U.S. 483." stands for the sentence before
    clause = next((c for c, lo, hi in _clauses(text[a:b]) if lo <= span[0] - a < hi), text[a:b])
    out = [_strip(clause), _strip(sentence)]
    if chosen + 1 < len(spans):
        out.append(_strip(sentence + " " + text[slice(*spans[chosen + 1])]))
    return [c for i, c in enumerate(out) if c and c not in out[:i]]


def _clauses(sentence: str) -> list[tuple[str, int, int]]:
    out, start = [], 0
    for m in re.finditer(r";|,? but |,? while |,? whereas |, and |, then ", sentence):
        out.append((sentence[start:m.start()], start, m.end()))
        start = m.end()
    out.append((sentence[start:], start, len(sentence) + 1))
    return out


def _strip(sentence: str) -> str:
    s = sentence
    for c in extract(sentence):
        s = s.replace(c.text, " ")
    s = re.sub(r"\(\s*(?:\d{4}|[^()]*\d{4})\s*\)", " ", s)
    return " ".join(s.split())


def support_lexical(claim: str, document: str) -> tuple[bool, str]:
    want = content_words(claim)
    if not want:
        return True, "the citing sentence makes no claim of its own"
    have = content_words(document)
    share = len(want & have) / len(want)
    return share >= SUPPORT_THRESHOLD, f"{share:.0%} of the claim's content words are in the case"


def support_judge(llm: LLM, claim: str, document: str) -> tuple[bool, str] | None:
    reply = llm.chat(render("legal_audit_support", passage=document, claim=claim), max_tokens=4, temperature=0.0).text
    m = re.search(r"\b(yes|no)\b", reply.lower())
    if not m:
        return None
    return m.group(1) == "yes", f"the judge said {reply.strip()[:20]!r}"


def ground(text: str, citator: Citator, *, llm: LLM | None = None) -> Grounding:
    """The answer's groundedness: ungrounded without a reporter citation; misgrounded when a
    citation is not real, names another case, or its case does not support what it is cited
    for; grounded otherwise."""
    found = extract(text)
    if not found:
        return Grounding("ungrounded", [], "no case citation")
    cited = []
    for i, cit in enumerate(found):
        check = citator.check(cit, found[:i])
        claims = claims_for(text, cit.span)
        a = CitedAuthority(cit.text, check.status, check.case_id, check.reasons, claims[-1] if claims else "")
        if check.status == "verified":
            docs = _documents(citator, check.case_id, citator.resolve(cit, found[:i]))
            for claim in claims:  # supported if what it is cited for, read narrowly or broadly, is supported
                a.claim = claim
                a.supports, a.support_by, a.support_why = _supports(claim, docs, llm)
                if a.supports:
                    break
        cited.append(a)
    bad = [a for a in cited if not a.good]
    if bad:
        a = bad[0]
        why = a.reasons[0] if a.status != "verified" else f"{a.text} does not support: {a.claim[:80]}"
        return Grounding("misgrounded", cited, why)
    return Grounding("grounded", cited, f"{len(cited)} citation{'s' * (len(cited) > 1)} checked")


def _documents(citator: Citator, case_id: str | None, key: str | None) -> list[str]:
    if case_id:
        return [citator.cases[case_id].document(citator.names)]
    # a decision the table knows only as overruling others: what it overruled
    return [c.document(citator.names) for c in citator.overruling.get(key, [])]


def _supports(claim: str, docs: list[str], llm: LLM | None) -> tuple[bool, str, str]:
    document = "\n".join(docs)
    if llm is not None:
        said = support_judge(llm, claim, document)
        if said is not None:
            return said[0], "judge", said[1]
    ok, why = support_lexical(claim, document)
    return ok, "lexical", why
