"""What the coder is told about the data file: its schema and first rows, never the whole file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conclave.agents.figure.config import FigureError

MAX_BYTES = 200 * 2**20  # the code reads the file inside a memory-limited sandbox
READERS = {".csv": "read_csv", ".tsv": "read_csv", ".txt": "read_csv", ".json": "read_json", ".jsonl": "read_json",
           ".parquet": "read_parquet", ".xlsx": "read_excel", ".xls": "read_excel"}


@dataclass(frozen=True)
class DataInfo:
    name: str  # the file's name in the sandbox's working directory
    reader: str  # the pandas call that reads it
    rows: int
    columns: list[tuple[str, str]]  # (name, dtype)
    head: str
    hints: list[str]

    def schema(self) -> str:
        cols = "\n".join(f"- {name}: {dtype}" for name, dtype in self.columns)
        hints = "".join(f"\nNote: {h}" for h in self.hints)
        return (f"File {self.name!r}, read with `{self.reader}`: {self.rows} rows, {len(self.columns)} columns.\n"
                f"Columns:\n{cols}\nFirst rows:\n{self.head}{hints}")

    def named_in(self, text: str) -> list[str]:
        """The columns that ``text`` names, as whole words, in the file's column order."""
        low = text.lower()
        return [c for c, _ in self.columns
                if re.search(rf"(?<![\w]){re.escape(c.lower())}(?![\w])", low)
                or re.search(rf"(?<![\w]){re.escape(c.lower().replace('_', ' '))}(?![\w])", low)]


def describe(path: Path) -> DataInfo:
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise FigureError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise FigureError(f"data file {path.name}: unknown kind {suffix or '(no suffix)'}; "
                          f"give one of {', '.join(sorted(READERS))}")
    if path.stat().st_size > MAX_BYTES:
        raise FigureError(f"data file {path.name} is {path.stat().st_size / 2**20:.0f} MB; the limit is "
                          f"{MAX_BYTES // 2**20} MB")
    args = {".tsv": "sep='\\t'", ".jsonl": "lines=True", ".txt": "sep=None, engine='python'"}.get(suffix, "")
    reader = f"pd.{READERS[suffix]}({path.name!r}{', ' + args if args else ''})"
    kw = {".tsv": {"sep": "\t"}, ".jsonl": {"lines": True}, ".txt": {"sep": None, "engine": "python"}}.get(suffix, {})
    try:
        df = getattr(pd, READERS[suffix])(path, **kw)
    except ImportError as e:
        raise FigureError(f"data file {path.name}: pandas needs an extra package to read it ({e})") from None
    except Exception as e:  # noqa: BLE001 - pandas raises many kinds for a bad file
        raise FigureError(f"cannot read data file {path.name}: {type(e).__name__}: {e}") from None
    if df.empty or not len(df.columns):
        raise FigureError(f"data file {path.name} holds no rows")
    hints = []
    for col in df.columns:
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            sample = df[col].dropna().head(20)
            try:
                parsed = pd.to_datetime(sample, errors="raise", format="mixed")
            except (ValueError, TypeError):
                continue
            if len(sample) and parsed.notna().all() and sample.astype(str).str.contains(r"\d").all():
                hints.append(f"column {col!r} holds dates as text: parse it with pd.to_datetime")
    head = df.head(5).to_csv(index=False).strip()
    return DataInfo(path.name, reader, len(df), [(str(c), str(t)) for c, t in df.dtypes.items()], head, hints)
