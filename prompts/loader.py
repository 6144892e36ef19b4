"""Versioned prompt templates, kept as data in ``prompts/library/*.toml``.

Each file holds one prompt id and its versions. A version is either chat
``messages`` or a plain ``template``, written in Jinja2, with its ``variables``
declared. Loading checks that the templates use exactly the declared variables,
so a typo fails at load, not halfway through a run. Rendering gives a ``Rendered``
that carries ``id@version``; the model seam records it with every call.

    [[versions]]
    version = 1
    variables = ["question"]
    messages = [
      { role = "system", content = "You answer briefly." },
      { role = "user", content = "{{ question }}" },
    ]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from conclave.local_models.errors import ConclaveError

LIBRARY = Path(__file__).parent / "library"
ROLES = {"system", "user", "assistant"}

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class PromptError(ConclaveError):
    pass


@dataclass(frozen=True)
class Rendered:
    ref: str  # "id@version"
    messages: list[dict] | None = None
    text: str | None = None


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    variables: frozenset[str]
    description: str
    messages: tuple[tuple[str, str], ...] | None  # (role, template source)
    template: str | None

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def render(self, **values) -> Rendered:
        missing = self.variables - values.keys()
        unknown = values.keys() - self.variables
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {sorted(missing)}")
            if unknown:
                parts.append(f"unknown {sorted(unknown)}")
            raise PromptError(f"prompt {self.ref}: {' and '.join(parts)} variables (declared: {sorted(self.variables)})")
        try:
            if self.template is not None:
                return Rendered(self.ref, text=_env.from_string(self.template).render(**values))
            return Rendered(self.ref, messages=[{"role": r, "content": _env.from_string(c).render(**values)} for r, c in self.messages])
        except UndefinedError as e:  # e.g. an attribute of a variable that is not there
            raise PromptError(f"prompt {self.ref}: {e}") from e


def _used_variables(source: str, where: str) -> set[str]:
    try:
        return meta.find_undeclared_variables(_env.parse(source))
    except TemplateSyntaxError as e:
        raise PromptError(f"{where}: template syntax error at line {e.lineno}: {e.message}") from e


def _parse_version(pid: str, raw: dict, where: str, description: str) -> Prompt:
    where = f"{where} version {raw.get('version')!r}"
    version = raw.get("version")
    if not isinstance(version, int) or version < 1:
        raise PromptError(f"{where}: 'version' must be a positive integer")
    extra = raw.keys() - {"version", "variables", "messages", "template", "description"}
    if extra:
        raise PromptError(f"{where}: unknown keys {sorted(extra)}")
    variables = raw.get("variables", [])
    if not isinstance(variables, list) or not all(isinstance(v, str) and v.isidentifier() for v in variables):
        raise PromptError(f"{where}: 'variables' must be a list of identifiers")
    if len(set(variables)) != len(variables):
        raise PromptError(f"{where}: 'variables' lists a name twice")
    has_messages, has_template = "messages" in raw, "template" in raw
    if has_messages == has_template:
        raise PromptError(f"{where}: give exactly one of 'messages' or 'template'")
    messages = template = None
    sources = []
    if has_template:
        template = raw["template"]
        if not isinstance(template, str) or not template:
            raise PromptError(f"{where}: 'template' must be a non-empty string")
        sources.append(template)
    else:
        msgs = raw["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise PromptError(f"{where}: 'messages' must be a non-empty list")
        parsed = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str) or set(m) != {"role", "content"}:
                raise PromptError(f"{where}: messages[{i}] must be {{role, content}} with role in {sorted(ROLES)}")
            parsed.append((m["role"], m["content"]))
            sources.append(m["content"])
        messages = tuple(parsed)
    used = set().union(*(_used_variables(s, where) for s in sources))
    declared = set(variables)
    if used - declared:
        raise PromptError(f"{where}: uses undeclared variables {sorted(used - declared)}")
    if declared - used:
        raise PromptError(f"{where}: declares variables it never uses {sorted(declared - used)}")
    return Prompt(pid, version, frozenset(declared), raw.get("description", description), messages, template)


def load_file(path: Path) -> list[Prompt]:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PromptError(f"{where}: invalid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"{where}: cannot read: {e}") from e
    pid = data.get("id")
    if pid != path.stem:
        raise PromptError(f"{where}: 'id' must equal the file name {path.stem!r}, got {pid!r}")
    extra = data.keys() - {"id", "description", "versions"}
    if extra:
        raise PromptError(f"{where}: unknown keys {sorted(extra)}")
    versions = data.get("versions")
    if not isinstance(versions, list) or not versions:
        raise PromptError(f"{where}: needs at least one [[versions]] table")
    prompts = [_parse_version(pid, v, where, data.get("description", "")) for v in versions]
    numbers = [p.version for p in prompts]
    if len(set(numbers)) != len(numbers):
        raise PromptError(f"{where}: duplicate version numbers {numbers}")
    return prompts


class Registry:
    def __init__(self, *dirs: Path):
        self._prompts: dict[str, dict[int, Prompt]] = {}
        for d in dirs:
            for path in sorted(Path(d).glob("*.toml")):
                for p in load_file(path):
                    if p.version in self._prompts.get(p.id, {}):
                        raise PromptError(f"{path}: {p.ref} is defined twice")
                    self._prompts.setdefault(p.id, {})[p.version] = p

    def get(self, pid: str, version: int | None = None) -> Prompt:
        if "@" in pid and version is None:
            pid, v = pid.split("@", 1)
            version = int(v)
        versions = self._prompts.get(pid)
        if not versions:
            raise PromptError(f"unknown prompt {pid!r}; known: {', '.join(sorted(self._prompts)) or 'none'}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise PromptError(f"prompt {pid!r} has no version {version}; versions: {sorted(versions)}")
        return versions[version]

    def render(self, pid: str, version: int | None = None, **values) -> Rendered:
        return self.get(pid, version).render(**values)

    def __iter__(self):
        for versions in self._prompts.values():
            yield from versions.values()


@lru_cache(maxsize=1)
def library() -> Registry:
    """The prompts that ship with Conclave."""
    return Registry(LIBRARY)


def render(pid: str, version: int | None = None, **values) -> Rendered:
    return library().render(pid, version, **values)
