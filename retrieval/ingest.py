"""From files to chunks: reading .txt/.md/.jsonl/.pdf, token-aware splitting, stable ids.

A chunk's id is a hash of its source, its text and which occurrence of that text in the
source it is, so ingesting an unchanged file again yields the same ids and adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from conclave.retrieval.hits import RetrievalError

SUFFIXES = {".txt", ".md", ".jsonl", ".pdf"}
T = TypeVar("T")


class IngestError(RetrievalError):
    pass


@dataclass
class Record:
    """One piece of a source before splitting: a file's text, a JSONL line, a PDF page."""

    text: str
    source: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    source: str
    meta: dict


def files(paths: list[Path]) -> list[Path]:
    """The ingestible files under ``paths`` (files or folders), sorted; anything else is an error."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise IngestError(f"no such file or folder: {p}")
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif p.suffix.lower() in SUFFIXES:
            out.append(p)
        else:
            raise IngestError(f"{p}: can read {', '.join(sorted(SUFFIXES))} files, not {p.suffix or 'this'}")
    return out


def read(path: Path) -> Iterator[Record]:
    source = str(path.resolve())
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        yield from _pdf(path, source)
    elif suffix == ".jsonl":
        yield from _jsonl(path, source)
    else:
        try:
            yield Record(path.read_text(encoding="utf-8"), source)
        except UnicodeDecodeError as e:
            raise IngestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _jsonl(path: Path, source: str) -> Iterator[Record]:
    with path.open(encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise IngestError(f"{path}:{n}: not JSON ({e.msg})") from None
            text = obj.get("text", obj.get("content")) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise IngestError(f"{path}:{n}: each line needs a string 'text' (or 'content') field")
            meta = {k: v for k, v in obj.items() if k not in ("text", "content") and isinstance(v, (str, int, float, bool))}
            yield Record(text, source, {**meta, "line": n})


def table(path: Path, parse: Callable[[dict, int], T], error: type[Exception], what: str) -> list[T]:
    """A JSONL table (a case table, a query file) read whole: ``parse(obj, line_number)`` turns
    each JSON object into a row or raises ValueError; every bad line is reported with its
    number, and nothing half-read is returned."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read the {what} {path}: {e}") from None
    rows, errors = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            rows.append(parse(obj, n))
        except json.JSONDecodeError as e:
            errors.append(f"  line {n}: not JSON ({e.msg})")
        except (TypeError, ValueError) as e:
            errors.append(f"  line {n}: {e}")
    if errors:
        more = f"\n  … and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise error(f"{path}: bad {what}:\n" + "\n".join(errors[:10]) + more)
    if not rows:
        raise error(f"{path}: the {what} is empty")
    return rows


def _pdf(path: Path, source: str) -> Iterator[Record]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [(i, page.extract_text() or "") for i, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, ValueError, OSError) as e:
        raise IngestError(f"{path}: cannot read this PDF ({e})") from None
    for i, text in pages:
        if text.strip():
            yield Record(text, source, {"page": i})


class Splitter:
    """Token-aware splitting (langchain-text-splitters) with stable chunk ids. ``tokenizer``
    is a Hugging Face tokenizer (the embedder's, so no chunk is cut short when embedded) or
    any function that counts a text's tokens (a generating model's, for prompt budgets)."""

    def __init__(self, tokenizer, chunk_tokens: int = 200, overlap_tokens: int = 32, *,
                 separators: list[str] | None = None):
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(f"overlap ({overlap_tokens}) must be smaller than the chunk size ({chunk_tokens})")
        kw = dict(chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, separators=separators)
        if callable(tokenizer) and not hasattr(tokenizer, "encode"):
            self._split = RecursiveCharacterTextSplitter(length_function=tokenizer, **kw).split_text
        else:
            self._split = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(tokenizer, **kw).split_text

    def chunks(self, records: list[Record]) -> list[Chunk]:
        out, seen = [], {}
        for rec in records:
            for piece in self._split(rec.text):
                piece = piece.strip()
                if not piece:
                    continue
                key = (rec.source, piece)
                nth = seen[key] = seen.get(key, -1) + 1
                digest = hashlib.sha256(f"{rec.source}\0{nth}\0{piece}".encode()).hexdigest()[:24]
                out.append(Chunk(digest, piece, rec.source, rec.meta))
        return out
