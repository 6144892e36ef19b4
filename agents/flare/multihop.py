"""A small multi-hop QA set we own: invented entities, so no model can answer from pretraining.

40 entities (people, towns, companies, rivers), each with 2 to 4 facts, one passage per
entity (one sentence per fact). 1-hop questions ask a fact of one entity; 2-hop
questions go through a bridge entity (the founder of a company, the home town of a
person, the river of a town). Answers are a single name or number, so containment EM works.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

N_PEOPLE, N_TOWNS, N_COMPANIES, N_RIVERS = 14, 12, 8, 6
SOURCE = "multihop"

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "sk", "t", "th", "v", "vr", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "x", "sk", "th", "m"]
_TOWN_ENDS = ["holm", "wick", "stead", "mere", "thorpe", "gard"]
_COMPANY_ENDS = ["Works", "Foundry", "Mills", "Instruments", "Looms"]
_PROFESSIONS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "ferryman", "luthier", "astronomer", "tanner"]
_PRODUCTS = ["copper kettles", "brass compasses", "wool blankets", "paper lanterns", "oak barrels", "tin whistles"]
_SEAS = ["Sea of Quelm", "Varn Sea", "Bay of Istrel", "Gulf of Thorne"]


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answer: str
    gold_ids: tuple[str, ...]  # in hop order: the last one holds the answer
    hops: int
    bridge: str | None = None  # the entity the first hop leads to


@dataclass
class MultiHop:
    passages: list[tuple[str, str, str, dict]]  # (id, text, source, meta), what BM25 and Index take
    questions: list[Question]
    facts: dict[str, dict] = field(default_factory=dict)  # entity id -> its facts, for checks


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


class _Names:
    """Unique invented names; none is a part of another, so containment EM cannot confuse them."""

    def __init__(self, rng: random.Random):
        self.rng, self.taken = rng, []

    def make(self, build) -> str:
        for _ in range(1000):
            name = build(self.rng)
            low = name.lower()
            if all(low not in t and t not in low for t in self.taken):
                self.taken.append(low)
                return name
        raise RuntimeError("could not invent a unique name; the syllable lists are too small")


def _word(rng: random.Random, n: int) -> str:
    return "".join(_syllable(rng) for _ in range(n)).capitalize()


def build(seed: int = 0) -> MultiHop:
    rng = random.Random(seed)
    names = _Names(rng)
    rivers = [{"id": f"river-{i:02d}", "name": names.make(lambda r: _word(r, 2))} for i in range(N_RIVERS)]
    towns = [{"id": f"town-{i:02d}", "name": names.make(lambda r: _word(r, 1) + r.choice(_TOWN_ENDS))} for i in range(N_TOWNS)]
    people = [{"id": f"person-{i:02d}", "name": names.make(lambda r: f"{_word(r, 2)} {_word(r, 2)}")} for i in range(N_PEOPLE)]
    companies = [{"id": f"company-{i:02d}", "name": names.make(lambda r: f"{_word(r, 2)} {r.choice(_COMPANY_ENDS)}")}
                 for i in range(N_COMPANIES)]
    years = rng.sample(range(1801, 1990), N_PEOPLE + N_TOWNS + N_COMPANIES)  # distinct, so no year answers two questions

    for r in rivers:
        r["length_km"] = rng.randrange(40, 900)
        r["sea"] = rng.choice(_SEAS)
        r["source_town"] = rng.choice(towns)["name"] if rng.random() < 0.5 else None
    for t in towns:
        t["river"] = rng.choice(rivers)["name"]
        t["population"] = rng.randrange(1200, 90000)
        t["founded"] = years.pop() if rng.random() < 0.5 else None
        t["twin"] = rng.choice([x for x in towns if x is not t])["name"] if rng.random() < 0.4 else None
    for p in people:
        p["born_in"] = rng.choice(towns)["name"]
        p["born"] = years.pop()
        p["profession"] = rng.choice(_PROFESSIONS) if rng.random() < 0.6 else None
    founders = rng.sample(people, N_COMPANIES)
    for c, f in zip(companies, founders):
        c["founder"] = f["name"]
        c["hq"] = rng.choice(towns)["name"]
        c["founded"] = years.pop() if rng.random() < 0.5 else None
        c["product"] = rng.choice(_PRODUCTS) if rng.random() < 0.5 else None

    passages = (
        [_passage(r, "river", _river_sentences(r)) for r in rivers]
        + [_passage(t, "town", _town_sentences(t)) for t in towns]
        + [_passage(p, "person", _person_sentences(p)) for p in people]
        + [_passage(c, "company", _company_sentences(c)) for c in companies]
    )
    by_name = {e["name"]: e for e in rivers + towns + people + companies}
    questions = _one_hop(rivers, towns, people, companies) + _two_hop(towns, people, companies, by_name)
    rng.shuffle(questions)  # so that --limit takes a mix of kinds
    facts = {e["id"]: {k: v for k, v in e.items() if k != "id"} for e in rivers + towns + people + companies}
    return MultiHop(passages, questions, facts)


def _passage(e: dict, kind: str, sentences: list[str]) -> tuple[str, str, str, dict]:
    return (e["id"], " ".join(sentences), SOURCE, {"kind": kind, "name": e["name"], "n_facts": len(sentences)})


def _river_sentences(r):
    s = [f"The {r['name']} River is {r['length_km']} km long.", f"The {r['name']} River flows into the {r['sea']}."]
    if r["source_town"]:
        s.append(f"The {r['name']} River rises near {r['source_town']}.")
    return s


def _town_sentences(t):
    s = [f"{t['name']} is a town on the {t['river']} River.", f"{t['name']} has a population of {t['population']}."]
    if t["founded"]:
        s.append(f"{t['name']} was founded in {t['founded']}.")
    if t["twin"]:
        s.append(f"{t['name']} is twinned with {t['twin']}.")
    return s


def _person_sentences(p):
    s = [f"{p['name']} was born in {p['born_in']}.", f"{p['name']} was born in the year {p['born']}."]
    if p["profession"]:
        s.append(f"{p['name']} worked as a {p['profession']}.")
    return s


def _company_sentences(c):
    s = [f"{c['name']} was founded by {c['founder']}.", f"{c['name']} has its headquarters in {c['hq']}."]
    if c["founded"]:
        s.append(f"{c['name']} was founded in the year {c['founded']}.")
    if c["product"]:
        s.append(f"{c['name']} is known for its {c['product']}.")
    return s


def _q(qid, text, answer, gold, bridge=None) -> Question:
    return Question(qid, text, str(answer), tuple(gold), len(gold), bridge)


def _one_hop(rivers, towns, people, companies) -> list[Question]:
    qs = []
    for r in rivers:
        qs.append(_q(f"{r['id']}-length", f"How many km long is the {r['name']} River?", r["length_km"], [r["id"]]))
    for t in towns:
        qs.append(_q(f"{t['id']}-river", f"On which river is the town of {t['name']}?", t["river"], [t["id"]]))
    for p in people:
        qs.append(_q(f"{p['id']}-born-in", f"In which town was {p['name']} born?", p["born_in"], [p["id"]]))
        qs.append(_q(f"{p['id']}-born", f"In which year was {p['name']} born?", p["born"], [p["id"]]))
    for c in companies:
        qs.append(_q(f"{c['id']}-founder", f"Who founded {c['name']}?", c["founder"], [c["id"]]))
        qs.append(_q(f"{c['id']}-hq", f"In which town does {c['name']} have its headquarters?", c["hq"], [c["id"]]))
    return qs


def _two_hop(towns, people, companies, by_name) -> list[Question]:
    qs = []
    for c in companies:
        f = by_name[c["founder"]]
        qs.append(_q(f"{c['id']}-founder-born-in", f"In which town was the founder of {c['name']} born?",
                     f["born_in"], [c["id"], f["id"]], f["name"]))
        qs.append(_q(f"{c['id']}-founder-born", f"In which year was the founder of {c['name']} born?",
                     f["born"], [c["id"], f["id"]], f["name"]))
    for p in people:
        t = by_name[p["born_in"]]
        qs.append(_q(f"{p['id']}-home-river", f"On which river is the town where {p['name']} was born?",
                     t["river"], [p["id"], t["id"]], t["name"]))
    for t in towns:
        r = by_name[t["river"]]
        qs.append(_q(f"{t['id']}-river-length", f"How many km long is the river that the town of {t['name']} is on?",
                     r["length_km"], [t["id"], r["id"]], r["name"]))
    return qs
