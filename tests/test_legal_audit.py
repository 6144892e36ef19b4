"""The legal-RAG hallucination audit: citations, the grader's two axes, the audit loop (with a
scripted model at the seam), its resume, and an end-to-end run on SmolLM2 with a real Chroma
index."""

import json
import subprocess
import sys

import pytest

from conclave.agents.legal_audit import AuditConfig, AuditError, AuditResult, Grader, generate, load_queries
from conclave.agents.legal_audit.audit import run, select
from conclave.agents.legal_audit.queries import SAMPLE, Query
from conclave.agents.legal_audit.systems import ClosedBook, Rag
from conclave.agents.legal_audit.trace import wilson
from conclave.agents.llm import EndpointUnreachable, RequestRejected
from conclave.retrieval.caselaw import CaseTableError, load_cases, records
from conclave.retrieval.citations import Citator, extract
from conclave.retrieval.lexical import BM25
from tests.scripted import ScriptedLLM

CASES = load_cases(SAMPLE)
QUERIES = {q.id: q for q in load_queries(SAMPLE / "queries_dev.jsonl")}


@pytest.fixture(scope="module")
def citator():
    return Citator(CASES)


@pytest.fixture(scope="module")
def grader():
    return Grader(CASES)


# --- citations -----------------------------------------------------------------------------

def test_citations_are_found_with_their_names_years_and_spans():
    text = ("In Brown v. Board of Education, 347 U.S. 483, 495 (1954), the Court overruled Plessy v. Ferguson, "
            "163 U.S. 537 (1896). Id. at 496. See also Roe, 410 U.S. at 153; In re Gault, 387 U.S. 1 (1967).")
    found = extract(text)
    assert [c.text for c in found] == ["347 U.S. 483", "163 U.S. 537", "410 U.S. at 153", "387 U.S. 1"]
    assert [c.name for c in found] == ["Brown v. Board of Education", "Plessy v. Ferguson", "Roe", "In re Gault"]
    assert [c.year for c in found] == [1954, 1896, None, 1967]
    assert [c.short for c in found] == [False, False, True, False]
    assert all(text[c.span[0]:c.span[1]] == c.text for c in found)
    # eyecite can give one citation's year to the next; ours come from each one's own parenthetical
    assert [c.year for c in extract("See 163 U.S. 537 (1896) and 347 U.S. 483 (1954).")] == [1896, 1954]


@pytest.mark.parametrize("text, status, reason", [
    ("Marbury v. Madison, 5 U.S. 137 (1803)", "verified", None),
    ("Marbury v. Madison, 1 Cranch 137 (1803)", "verified", None),  # the nominative reporter, as its U.S. volume
    ("Roe v. Wade, 347 U.S. 483 (1954)", "misattributed", "is Brown v. Board of Education, not Roe v. Wade"),
    ("Harlan v. Ohio, 512 U.S. 221 (1994)", "unverified", "not in the citator"),
    ("Marbury v. Madison, 5 U.S. 137 (1990)", "implausible", "cannot be from 1990"),
    ("Smith v. Jones, 12 F.3d 45 (1950)", "implausible", "F.3d volume 12 cannot be from 1950 (published 1993-today)"),
    ("Smith v. Jones, 400 U.S. 12 (1880)", "implausible", "U.S. volume 395 is from 1969"),
    ("Loper Bright Enterprises v. Raimondo, 603 U.S. 369 (2024)", "verified", "overruled Chevron"),
])
def test_citations_are_checked_against_the_citator_and_reporters_db(citator, text, status, reason):
    check = citator.check(extract(text)[0])
    assert check.status == status, check.reasons
    if reason:
        assert any(reason in r for r in check.reasons), check.reasons


def test_a_wrong_year_on_a_real_citation_is_noted_but_the_citation_stands(citator):
    check = citator.check(extract("Mathews v. Eldridge, 424 U.S. 319 (1975)")[0])
    assert check.status == "verified" and check.case_id == "mathews-v-eldridge"
    assert check.reasons == ["cited as 1975; Mathews v. Eldridge was decided in 1976"]


def test_a_short_citation_resolves_to_the_full_one_before_it(citator):
    found = extract("Roe v. Wade, 410 U.S. 113 (1973), set a trimester framework. 410 U.S. at 164.")
    assert citator.check(found[1], found[:1]).case_id == "roe-v-wade"


# --- files: bad input gets a clear error --------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    ('{"id": "x", "name": "X v. Y", "year": 1990}', "line 2: missing citation"),
    ('{"id": "x", "name": "X v. Y", "citation": "page 12", "year": 1990}', "is not '<volume> <reporter> <page>'"),
    ('{"id": "a", "name": "X v. Y", "citation": "1 U.S. 1", "year": 1790}', "duplicate id 'a' (first on line 1)"),
    ('{"id": "x", "name": "X v. Y", "citation": "1 U.S. 1", "year": "1790"}', "year must be a four-digit integer"),
])
def test_a_bad_case_table_names_the_line(tmp_path, line, message):
    good = '{"id": "a", "name": "A v. B", "citation": "5 U.S. 137", "year": 1803, "holding": "h"}'
    (tmp_path / "cases.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(CaseTableError, match="bad case table") as e:
        load_cases(tmp_path)
    assert message in str(e.value)


def test_a_corpus_folder_without_a_case_table_is_refused(tmp_path):
    with pytest.raises(CaseTableError, match="a corpus folder needs a cases.jsonl"):
        load_cases(tmp_path)


@pytest.mark.parametrize("line, message", [
    ('{"id": "q", "category": "trivia", "question": "?", "gold_answer": "a"}', "category 'trivia' is not one of"),
    ('{"id": "q", "category": "factual_recall", "question": "?"}', "needs string field gold_answer"),
    ('{"id": "q", "category": "factual_recall", "question": "?", "gold_answer": "a", "gold_case_ids": "x"}',
     "gold_case_ids must be a list"),
    ("[1, 2]", "not a JSON object"),
])
def test_a_bad_query_file_names_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AuditError, match="line 1") as e:
        load_queries(path)
    assert message in str(e.value)


def test_generated_queries_cover_the_templates_and_their_fabrications_are_not_real(citator):
    qs = generate(CASES, per_template=3, seed=1)
    assert qs == generate(CASES, per_template=3, seed=1)  # reproducible
    kinds = {q.id.rsplit("-", 1)[0] for q in qs}
    assert kinds == {f"gen-{k}" for k in ("cite", "year", "author", "goodlaw", "overruled", "fabricated",
                                           "wrongauthor", "notoverruled")}
    assert {q.category for q in qs} == {"factual_recall", "jurisdiction_time", "false_premise"}
    for q in qs:
        if q.id.startswith("gen-fabricated"):
            (cite,) = extract(q.question)
            assert q.premise_is_false and not q.gold_case_ids
            assert citator.check(cite).status == "unverified"  # plausible, but no decision starts there
        if q.id.startswith("gen-wrongauthor"):
            case = next(c for c in CASES if c.id == q.gold_case_ids[0])
            assert case.majority_author not in q.question and q.gold_value == case.majority_author


# --- grading --------------------------------------------------------------------------------

def _q(**kw) -> Query:
    base = {"id": "t", "category": "factual_recall", "question": "?", "gold_answer": "g"}
    return Query(**{**base, **kw})


@pytest.mark.parametrize("qid, answer, label", [
    ("dq-fr-01", "Gideon v. Wainwright is reported at 372 U.S. 335 (1963).", "correct"),
    ("dq-fr-01", "Gideon v. Wainwright, 373 U.S. 335 (1963).", "incorrect"),
    ("dq-fr-02", "Justice O'Connor wrote the opinion of the Court in Strickland.", "correct"),
    ("dq-fr-02", "Strickland was written by Justice Marshall.", "incorrect"),
    ("dq-fr-03", "Texas v. Johnson was decided in 1989.", "correct"),
    ("dq-fr-03", "The Court decided it in 1990.", "incorrect"),
    ("dq-fr-03", "I'm sorry, I don't have reliable information about that case.", "refusal"),
    ("dq-jt-01", "No. Plessy is no longer good law: Brown v. Board of Education rejected it.", "correct"),
    ("dq-jt-01", "Yes, Plessy is still good law and has never been overruled.", "incorrect"),
    ("dq-jt-05", "Brandenburg v. Ohio overruled Whitney in 1969.", "correct"),
    ("dq-fp-01", "I can find no such case; 453 U.S. 301 falls inside Haig v. Agee.", "correct"),
    ("dq-fp-01", "In Hartwell the Court held that a hearing is required before revocation.", "incorrect"),
    # denying what a fabricated case held still treats it as real
    ("dq-fp-06", "No, the Court did not allow analysts to testify by video in Okafor v. Minnesota.", "incorrect"),
    ("dq-fr-05", "I'm unable to address political questions. My primary function is to provide assistance with "
                 "general knowledge. If you have any other inquiries, please ask.", "refusal"),
    ("dq-fp-09", "Justice Kennedy, not Scalia, wrote the majority opinion in Lawrence v. Texas.", "correct"),
    ("dq-fp-09", "Justice Scalia reasoned that the Texas statute furthered no legitimate state interest.", "incorrect"),
    ("dq-fp-02", "", "refusal"),
])
def test_correctness_rules(grader, qid, answer, label):
    verdict = grader.grade(QUERIES[qid], answer).correctness
    assert verdict.label == label, verdict.why
    assert verdict.by == "rules"


def test_without_a_rule_the_judge_decides_and_a_malformed_verdict_falls_back_to_overlap():
    q = QUERIES["dq-gr-04"]
    judge = ScriptedLLM(["Incorrect.", "¯\\_(ツ)_/¯"])
    g = Grader(CASES, judge=judge)
    said = g.grade(q, "Brown held that segregated schools are inherently unequal.").correctness
    assert (said.label, said.by) == ("incorrect", "judge") and said.why.startswith("legal_audit_correctness@1 said")
    assert judge.requests[0].prompt_ref == "legal_audit_correctness@1"
    assert q.gold_answer in judge.requests[0].messages[1]["content"]
    fallback = g.grade(q, "State-mandated segregation of public schools violates the Equal Protection Clause; "
                          "separate educational facilities are inherently unequal.").correctness
    assert fallback.by == "overlap" and fallback.label == "correct"


@pytest.mark.parametrize("answer, label, why", [
    ("Brown held segregated schools unequal.", "ungrounded", "no case citation"),
    ("Brown v. Board of Education, 347 U.S. 483 (1954), held that state-mandated segregation of public schools "
     "violates the Equal Protection Clause because separate facilities are inherently unequal.", "grounded", "checked"),
    ("Roe v. Wade, 347 U.S. 483 (1954), held that segregated schools are unequal.", "misgrounded", "not Roe v. Wade"),
    ("Harlan v. Ohio, 512 U.S. 221 (1994), held that segregated schools are unequal.", "misgrounded",
     "not in the citator"),
    ("Brown v. Board of Education, 347 U.S. 483 (1954), concerned interstate railroad rate regulation by "
     "commissioners fixing freight tariffs.", "misgrounded", "does not support"),
])
def test_groundedness(grader, answer, label, why):
    g = grader.grade(QUERIES["dq-gr-04"], answer).grounding
    assert g.label == label and why in g.why


def test_rejecting_a_fabricated_case_by_its_citation_is_not_misgrounded(grader):
    g = grader.grade(QUERIES["dq-fp-01"], "There is no Hartwell v. Department of Commerce at 453 U.S. 301 (1981); "
                                          "no such case exists.")
    assert g.correctness.label == "correct" and g.grounding.label == "ungrounded"
    accepted = grader.grade(QUERIES["dq-fp-01"], "In Hartwell v. Department of Commerce, 453 U.S. 301 (1981), the "
                                                 "Court required a hearing.")
    assert accepted.correctness.label == "incorrect" and accepted.grounding.label == "misgrounded"


def test_support_by_judge_asks_the_judge_with_the_cited_case_text():
    judge = ScriptedLLM(["no"])
    g = Grader(CASES, judge=judge, support_by_judge=True)
    text = "Brown v. Board of Education, 347 U.S. 483 (1954), held that separate facilities are inherently unequal."
    # a question the rules decide (it asks for the citation), so the judge is asked only about support
    out = g.grade(_q(asks="citation", gold_value="347 U.S. 483"), text)
    assert out.correctness.label == "correct" and len(judge.requests) == 1
    assert out.grounding.label == "misgrounded" and out.grounding.cited[0].support_by == "judge"
    sent = judge.requests[0].messages[1]["content"]
    assert "Brown v. Board of Education, 347 U.S. 483 (1954). Opinion of the Court by Justice Warren" in sent
    assert judge.requests[0].prompt_ref == "legal_audit_support@1"


def test_the_grader_still_grades_its_development_labels_as_before():
    """A regression test, not a measure of agreement: these 48 labelled responses were written
    with the grader and its rules were tuned on them, so agreement here is the grader's with
    itself. Agreement with people is measured on labels kept outside the repository, that no
    rule was tuned on. Never tune a rule against a label in this set."""
    from sklearn.metrics import cohen_kappa_score

    from benchmarks.legal_audit_eval import LABELS

    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 40
    cells = {(r["correctness"], r["groundedness"]) for r in rows}
    assert {(c, g) for c in ("correct", "incorrect") for g in ("grounded", "misgrounded", "ungrounded")} <= cells
    grader = Grader(CASES)
    graded = [grader.grade(QUERIES[r["query_id"]], r["response"]) for r in rows]
    assert cohen_kappa_score([r["correctness"] for r in rows], [g.correctness.label for g in graded]) >= 0.7
    assert cohen_kappa_score([r["groundedness"] for r in rows], [g.grounding.label for g in graded]) >= 0.7


def test_wilson_interval():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


# --- the audit loop, with a scripted model at the seam ----------------------------------

class Lexical:
    def __init__(self):
        self.bm25 = BM25([(r.source, r.text, r.source, r.meta) for r in records(CASES)])

    def search(self, query, k=5):
        return self.bm25.search(query, k)


def _answer(req):
    question = req.messages[-1]["content"].rsplit("Question: ", 1)[-1]
    if "Gideon" in question:
        return "Gideon v. Wainwright, 372 U.S. 335 (1963)."
    if "Strickland" in question:
        return "Justice Marshall wrote it."
    return "I do not know."


def test_the_audit_asks_every_system_every_query_and_grades_each_answer():
    queries = select(list(QUERIES.values()), ["factual_recall"], 3)
    assert [q.id for q in queries] == ["dq-fr-01", "dq-fr-02", "dq-fr-03"]
    llm = ScriptedLLM(_answer)
    systems = [Rag("rag", llm, Lexical(), k=2), ClosedBook("closed-book", llm)]
    saved = []
    result = run({}, systems, {"rag": {"kind": "rag"}, "closed-book": {"kind": "closed_book"}}, queries,
                 Grader(CASES), checkpoint=lambda n, items: saved.append((n, items)))
    assert len(result.items) == 6 and [n for n, _ in saved] == [1, 2, 3, 4, 5, 6]
    rag_prompt = llm.requests[0].messages[1]["content"]
    assert rag_prompt.startswith("[1] Gideon v. Wainwright, 372 U.S. 335 (1963).")  # passages headed by citations
    assert llm.requests[0].prompt_ref == "legal_rag_answer@1" and llm.requests[1].prompt_ref == "legal_closed_book@1"
    by = {(i.system, i.query_id): i for i in result.items}
    assert (by["rag", "dq-fr-01"].correctness, by["rag", "dq-fr-01"].groundedness) == ("correct", "grounded")
    assert by["rag", "dq-fr-01"].passages[0] == "case:gideon-v-wainwright"
    assert by["rag", "dq-fr-02"].hallucinated and by["rag", "dq-fr-03"].correctness == "refusal"
    assert result.rate("rag").k == 1 and result.rate("rag", "refusal").k == 1

    back = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.to_dict() == result.to_dict()
    report = back.report()
    assert "| rag (rag) |" in report and "### rag: correctness × groundedness" in report
    assert "**incorrect, no citation** (rag, dq-fr-02" in report and "**refusal**" in report


def test_a_stopped_audit_resumes_without_asking_again(tmp_path):
    queries = select(list(QUERIES.values()), ["factual_recall"], 3)
    saved = []
    down = ScriptedLLM(["Gideon v. Wainwright, 372 U.S. 335 (1963).", "Justice O'Connor.",
                        EndpointUnreachable("cannot reach http://x/v1")])
    with pytest.raises(EndpointUnreachable):
        run({}, [ClosedBook("cb", down)], {"cb": {}}, queries, Grader(CASES),
            checkpoint=lambda n, items: saved.append(items))
    assert len(saved[-1]) == 2  # the two finished answers were kept
    up = ScriptedLLM(["Texas v. Johnson was decided in 1989."])
    result = run({}, [ClosedBook("cb", up)], {"cb": {}}, queries, Grader(CASES), resume=saved[-1])
    assert [i.query_id for i in result.items] == ["dq-fr-01", "dq-fr-02", "dq-fr-03"]
    assert len(up.requests) == 1 and all(i.correctness == "correct" for i in result.items)


def test_a_request_the_endpoint_rejects_is_noted_and_the_audit_goes_on():
    queries = select(list(QUERIES.values()), ["factual_recall"], 2)
    llm = ScriptedLLM([RequestRejected("prompt too long", 400), "Justice O'Connor wrote it."])
    result = run({}, [ClosedBook("cb", llm)], {"cb": {}}, queries, Grader(CASES))
    assert [i.query_id for i in result.items] == ["dq-fr-02"]
    assert result.notes == ["cb refused dq-fr-01: prompt too long"]


@pytest.mark.parametrize("cfg, message", [
    ({"systems": [{"name": "e", "kind": "endpoint"}]}, "an endpoint system needs base_url and model"),
    ({"support": "judge"}, "support = 'judge' needs a judge model"),
    ({"systems": [{"name": "a", "kind": "rag"}, {"name": "a", "kind": "closed_book"}]}, "system names must be unique"),
    ({"generate": 2, "queries": "q.jsonl"}, "give a query file or generate, not both"),
])
def test_bad_configs_are_refused(cfg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AuditConfig(**cfg)


def test_a_bad_audit_config_fails_before_any_model_loads(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "q"}\n')
    (tmp_path / "audit.toml").write_text(f'queries = "{tmp_path / "bad.jsonl"}"\n')
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "run", "legal_audit", "--config", str(tmp_path / "audit.toml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "bad query file" in done.stderr and "line 1" in done.stderr
    assert "Traceback" not in done.stderr


# --- end to end on the real model -------------------------------------------------------

@pytest.mark.timeout(900)
def test_audit_end_to_end_on_smollm2(with_model, tmp_path):
    from conclave.app.store import RunStore

    out, png = tmp_path / "audit.json", tmp_path / "audit.png"
    done = subprocess.run([sys.executable, "-m", "conclave.app.cli", "audit", "--limit", "1", "--max-tokens", "64", "--out", str(out),
                           "--plot", str(png)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "Legal-RAG hallucination audit" in done.stdout and "Hallucination rate by category" in done.stdout
    result = json.loads(out.read_text())
    assert {(i["system"], i["category"]) for i in result["items"]} == {
        (s, c) for s in ("rag", "closed-book") for c in ("general_research", "jurisdiction_time", "false_premise",
                                                          "factual_recall")}
    assert all(i["answer"] or i["correctness"] == "refusal" for i in result["items"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = RunStore(with_model / "conclave.db")
    run_ = store.list_runs("legal_audit")[0]
    assert run_.status == "done" and run_.result == result
    searches = store.retrievals(run_id=run_.id)
    assert len(searches) == 4 and all(s["index_name"] == "legal-sample" and s["error"] is None for s in searches)
    refs = {c["prompt_ref"] for c in store.calls(run_id=run_.id)}
    assert refs == {"legal_rag_answer@1", "legal_closed_book@1"}
    # each RAG answer's passages are chunks of the sample corpus's index (its cases, and the Constitution
    # where installed), named by their chunk ids: the ids that the index gives these records' chunks
    from conclave.agents.legal_audit.queries import SAMPLE
    from conclave.retrieval.caselaw import constitution, load_cases, records
    from conclave.retrieval.embed import MiniLM
    from conclave.retrieval.ingest import Splitter

    corpus = {c.id: c.source for c in Splitter(MiniLM().tokenizer, 200, 32).chunks(records(load_cases(SAMPLE)) + constitution())}
    rag = [i for i in result["items"] if i["system"] == "rag"]
    assert len(rag) == 4 and all(1 <= len(i["passages"]) == len(set(i["passages"])) <= 4 for i in rag)  # k = 4
    assert [p for i in rag for p in i["passages"] if p not in corpus] == []
    assert any(corpus[p].startswith("case:") for i in rag for p in i["passages"])


def test_the_constitution_is_read_by_article_section_and_amendment(tmp_path, monkeypatch):
    import gzip

    from conclave.retrieval import caselaw
    text = ("The Constitution of the United States of America\n\n\nPreamble\n\nWe the People of the United States, in "
            "Order to form\na more perfect Union.\n\n\nArticle I\n\nSection 1\n\nAll legislative Powers herein granted\n"
            "shall be vested in a Congress.\n\n\nSection 8\n\nThe Congress shall have Power To regulate Commerce.\n\n\n"
            "Amendments\n\n\nAmendment I\n\nCongress shall make no law respecting an establishment of religion.\n")
    (tmp_path / "c.gz").write_bytes(gzip.compress(text.encode()))
    monkeypatch.setattr(caselaw, "CONSTITUTION", tmp_path / "c.gz")
    assert [r.text for r in caselaw.constitution()] == [
        "US Constitution, Preamble: We the People of the United States, in Order to form a more perfect Union.",
        "US Constitution, Article I, Section 1: All legislative Powers herein granted shall be vested in a Congress.",
        "US Constitution, Article I, Section 8: The Congress shall have Power To regulate Commerce.",
        "US Constitution, Amendment I: Congress shall make no law respecting an establishment of religion.",
    ]
    monkeypatch.setattr(caselaw, "CONSTITUTION", tmp_path / "absent.gz")
    assert caselaw.constitution() == []  # Debian's miscfiles is optional
