"""Is the answer correct, incorrect or a refusal? Rules decide where the gold answer is a
fact (a citation, a year, an author, a later treatment) or the premise is false; a judge
model, where one is set, decides the rest against the gold answer, and the lexical overlap
with the gold answer decides without one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conclave.agents.legal_audit.queries import Query
from conclave.agents.legal_audit.text import content_words, sentences
from conclave.agents.llm import LLM
from conclave.prompts.loader import render
from conclave.retrieval.caselaw import Case
from conclave.retrieval.citations import extract

_REFUSAL = re.compile(
    r"\b(i (?:do not|don't|cannot|can't|could not|couldn't|am unable to|am not able to|was unable to|would not|won't)"
    r" (?:have|know|find|locate|answer|determine|say|provide|help|confirm|verify|give|want to (?:risk|give|guess))"
    r"|i'?m (?:not (?:sure|certain|able)|unable|sorry)|i am (?:not (?:sure|certain|able)|unable|sorry)"
    r"|(?:cannot|can't|unable to) (?:assist|help|address|discuss)"
    r"|(?:suggest|recommend) (?:checking|reading|consulting|that you)|(?:please )?(?:consult|check) (?:a|the|an)\b"
    r"|(?:no|not enough|insufficient) (?:reliable |relevant )?information|unable to (?:answer|find|locate|determine|verify)"
    r"|cannot (?:answer|determine)|the (?:passages|sources|documents|context) (?:do not|don't|does not)"
    r"|(?:not|isn't|is not) (?:mentioned|covered|addressed) in)", re.I)
_NO_SUCH = re.compile(
    r"\b(no (?:such|record of|supreme court)|(?:does|did) ?n[o']t exist|not a real|fictitious|fabricated|made[- ]up"
    r"|(?:could|can|was unable to|am unable to|cannot|can't|couldn't)(?: not)? (?:find|locate|identify)"
    r"|not aware of any|no (?:case|decision|opinion) (?:by|named|called|titled|with)|unable to (?:find|locate))", re.I)
_CORRECTS = re.compile(
    r"\b(premise|mistaken|incorrect(?:ly)?|misattribut\w*|misstat\w*|actually|in fact|contrary to|not true|is false"
    r"|inaccurate|the opposite)\b", re.I)
# a denial ("Brown did not reaffirm …") corrects the premise where an answer opens with it; further
# down it is as likely part of an answer that went along
_DENIES = re.compile(r"\b(?:did|does|was|is) ?n[o']t (?:hold|reaffirm|uphold|write|author|establish|overrule|say|rule"
                     r"|decide|adopt|apply|strike|allow|permit|the author|written)|\bnever (?:held|said|overruled|wrote)",
                     re.I)
_NO_LEAD = re.compile(r"^\s*(?:no\b|not so\b|that(?:'s| is) not\b|this is not\b|that is incorrect)", re.I)
_OVERRULED = re.compile(r"\b(overrul\w*|no longer (?:good|binding|valid)|abandon\w*|repudiat\w*|not good law"
                        r"|superseded|displaced)\b", re.I)
_NOT_OVERRULED = re.compile(r"\b(?:not|never)\s+(?:been\s+|formally\s+|expressly\s+|explicitly\s+)*overrul\w*"
                            r"|still good law|remains? good law|remains? (?:binding|valid|in force)", re.I)
# every justice's surname (the case table's authors are added): a named justice other than
# the gold author makes an authorship answer wrong
JUSTICES = frozenset("""jay rutledge cushing wilson blair iredell johnson paterson chase ellsworth washington moore
marshall livingston todd duvall story thompson trimble mclean baldwin wayne taney barbour catron mckinley daniel nelson
woodbury grier curtis campbell clifford swayne miller davis field strong bradley hunt waite harlan woods matthews gray
blatchford lamar fuller brewer brown shiras jackson white peckham mckenna holmes day moody lurton hughes pitney
mcreynolds brandeis clarke taft sutherland butler sanford stone roberts cardozo reed frankfurter douglas murphy byrnes
burton vinson minton warren whittaker stewart goldberg fortas burger blackmun powell rehnquist stevens o'connor scalia
kennedy souter thomas ginsburg breyer alito sotomayor kagan gorsuch kavanaugh barrett black clark""".split())
_YEAR = re.compile(r"\b(1[6-9]\d\d|20[0-4]\d)\b")


@dataclass
class Verdict:
    label: str  # one of trace.CORRECTNESS
    by: str  # "rules" | "judge" | "overlap"
    why: str


def asks(query: Query, cases: dict[str, Case]) -> tuple[str | None, str | None]:
    """What a question asks for, with the gold value, when it asks for a fact."""
    if query.asks:
        return query.asks, query.gold_value
    named = [cases[i] for i in query.gold_case_ids if i in cases and _party(cases[i].name).lower() in query.question.lower()]
    if len(named) != 1:
        return None, None
    case, q = named[0], query.question.lower()
    if query.premise_is_false:
        if re.search(r"justice \w+'s|chief justice \w+, writing|justice \w+, writing", q):
            return "author", case.majority_author
        return None, None
    if re.search(r"\bcitation\b|\bcited\b|reported at", q):
        return "citation", case.citation
    if re.search(r"\bwho wrote\b|\bwhich justice\b|\bauthored\b|\bauthor\b", q):
        return "author", case.majority_author
    if re.search(r"\bwhich (?:case|decision)\b.*\boverrul", q):
        return "overruled_by", case.overruled_by
    if re.search(r"\bstill (?:good law|the rule|the governing|governing)\b", q):
        return "good_law", case.overruled_by or ""
    if re.match(r"^in what year\b", q) and " and " not in q:
        return "year", str(case.year)
    return None, None


def refuses(text: str, topic: str = "") -> bool:
    """The answer declines: every substantive sentence declines ('I cannot find …', 'the
    passages do not say …'), or it opens by declining and says nothing more on ``topic`` (the
    question and its gold answer): "I'm unable to address political questions. My primary
    function is …"."""
    said = [s for s in sentences(text) if len(s.split()) >= 3]  # a terse "1989." is an answer
    if not said or not _REFUSAL.search(said[0]):
        return False
    rest = [s for s in said[1:] if not _REFUSAL.search(s)]
    return not rest or (bool(topic) and len(content_words(" ".join(rest)) & content_words(topic)) < 2)


def rules(query: Query, text: str, cases: dict[str, Case], authors: set[str]) -> Verdict | None:
    text = text.strip()
    if not text:
        return Verdict("refusal", "rules", "the answer is empty")
    what, gold = asks(query, cases)
    if query.premise_is_false:
        return _false_premise(query, text, what, gold, cases)
    if refuses(text, f"{query.question} {query.gold_answer}"):
        return Verdict("refusal", "rules", "the answer declines")
    if what == "citation":
        given = {c.key if not c.short else f"{c.volume} {c.reporter} {c.page}" for c in extract(text)}
        if gold in given or gold in text:
            return Verdict("correct", "rules", f"gives {gold}")
        if given:
            return Verdict("incorrect", "rules", f"gives {', '.join(sorted(given))}, not {gold}")
    elif what == "year":
        years = set(_YEAR.findall(text))
        if gold in years:
            return Verdict("correct", "rules", f"says {gold}")
        if years:
            return Verdict("incorrect", "rules", f"says {', '.join(sorted(years))}, not {gold}")
    elif what == "author" and gold:
        named = _justices(text, authors)
        if gold.lower() == "per curiam":
            return Verdict("correct", "rules", "says per curiam") if "per curiam" in text.lower() else \
                (Verdict("incorrect", "rules", f"names {', '.join(sorted(named))}, not per curiam") if named else None)
        if gold.lower() in named:
            return Verdict("correct", "rules", f"names {gold}")
        if named:
            return Verdict("incorrect", "rules", f"names {', '.join(sorted(named))}, not {gold}")
    elif what == "overruled_by" and gold:
        later = next((c for c in cases.values() if c.citation == gold), None)
        marks = [gold] + ([_party(later.name)] if later else [])
        if any(m and m.lower() in text.lower() for m in marks):
            return Verdict("correct", "rules", f"names {later.name if later else gold}")
        if _NOT_OVERRULED.search(text):
            return Verdict("incorrect", "rules", "says it was not overruled")
    elif what == "good_law":
        said_not = bool(_NOT_OVERRULED.search(text))
        said_over = bool(_OVERRULED.search(_NOT_OVERRULED.sub(" ", text)))
        if said_over != said_not:
            right = said_over == bool(gold)
            return Verdict("correct" if right else "incorrect", "rules",
                           f"says it {'was' if said_over else 'was not'} overruled")
    return None


def _false_premise(query, text, what, gold, cases) -> Verdict:
    declines = refuses(text, f"{query.question} {query.gold_answer}")
    if not query.gold_case_ids:  # a fabricated case: only saying it cannot be found rejects the premise
        if _NO_SUCH.search(text):
            return Verdict("correct", "rules", "says the case cannot be found")
        if declines:
            return Verdict("refusal", "rules", "the answer declines")
        return Verdict("incorrect", "rules", "treats the fabricated case as real")
    if what == "author" and gold and gold.lower() in text.lower():
        return Verdict("correct", "rules", f"names the real author, {gold}")
    if declines:
        return Verdict("refusal", "rules", "the answer declines")
    first = (sentences(text) or [""])[0]
    if _NO_SUCH.search(text) or _CORRECTS.search(text) or _NO_LEAD.search(text) or _DENIES.search(first):
        return Verdict("correct", "rules", "rejects or corrects the premise")
    return Verdict("incorrect", "rules", "goes along with the false premise")


def judge(llm: LLM, query: Query, text: str) -> Verdict | None:
    """The judge model's label for what the rules left open; None when its reply names none."""
    prompt = render("legal_audit_correctness", question=query.question, gold=query.gold_answer,
                    notes=query.notes or "", answer=text.strip() or "(empty)", premise_is_false=query.premise_is_false)
    reply = llm.chat(prompt, max_tokens=8, temperature=0.0).text
    m = re.search(r"\b(correct|incorrect|refusal|refuses|refused)\b", reply.lower())
    if not m:
        return None
    label = "refusal" if m.group(1).startswith("refus") else m.group(1)
    return Verdict(label, "judge", f"{prompt.ref} said {reply.strip()[:40]!r}")


def overlap(query: Query, text: str, threshold: float = 0.4) -> Verdict:
    """Without a judge: the share of the gold answer's content words the answer contains."""
    gold = content_words(query.gold_answer)
    got = content_words(text)
    share = len(gold & got) / len(gold) if gold else 0.0
    return Verdict("correct" if share >= threshold else "incorrect", "overlap",
                   f"{share:.0%} of the gold answer's content words")


def grade(query: Query, text: str, cases: dict[str, Case], authors: set[str], llm: LLM | None = None) -> Verdict:
    decided = rules(query, text, cases, authors)
    if decided is not None:
        return decided
    if llm is not None:
        said = judge(llm, query, text)
        if said is not None:
            return said
    return overlap(query, text)


def _justices(text: str, authors: set[str]) -> set[str]:
    """The justices the text names as such: "Justice Black", "Black, J.", "written by Black"
    (a bare "Black" or "Brown" may be a party or a word)."""
    low = text.lower()
    return {a for a in authors if re.search(
        rf"justice\s+{re.escape(a)}\b|\b{re.escape(a)},?\s+(?:c\.\s*)?j\.|\b{re.escape(a)}\s+(?:wrote|authored|delivered)"
        rf"|(?:written|authored|delivered|opinion) by (?:chief )?(?:justice )?{re.escape(a)}\b", low)}


def _party(name: str) -> str:
    first = name.split(" v. ")[0]
    return first.replace("United States", "").strip(" ,") or name
