"""Reading small models' replies: the coder's code and the critic's critique. Neither parser
trusts the format it asked for; each says when it had to fall back."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

APPROVE = "NO_ISSUES"
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_CODE_HINT = re.compile(r"^\s*(import |from \w+ import |plt\.|fig|ax\b|df\b)", re.M)


def extract_code(reply: str) -> str | None:
    """The longest fenced block (an unclosed fence runs to the end: a reply cut at max_tokens),
    else the whole reply when it reads as code, else None."""
    blocks = [b.strip() for b in _FENCE.findall(reply) if b.strip()]
    if blocks:
        return max(blocks, key=len)
    text = reply.strip()
    return text if text and _CODE_HINT.search(text) and "plt" in text else None


@dataclass
class Critique:
    verdict: str  # APPROVE or "REVISE"
    issues: list[str] = field(default_factory=list)
    parsed: bool = True  # False: the reply was not the JSON asked for and was read as text

    @property
    def approved(self) -> bool:
        return self.verdict == APPROVE

    def to_dict(self) -> dict:
        return asdict(self)


def _json_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and ({"verdict", "issues"} & set(obj)):
            return obj
    return None


def parse_critique(reply: str) -> Critique:
    """An approval needs the verdict and no issues listed: a critique that names problems and
    approves anyway is read as asking for a revision."""
    obj = _json_object(reply)
    if obj is not None:
        raw = obj.get("issues") or []
        issues = [str(i).strip() for i in (raw if isinstance(raw, list) else [raw]) if str(i).strip()]
        says_ok = APPROVE in str(obj.get("verdict", "")).upper().replace(" ", "_")
        return Critique(APPROVE if says_ok and not issues else "REVISE", issues)
    bullets = [m.strip() for m in re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+(.+)$", reply, re.M)]
    bullets = [b for b in bullets if APPROVE not in b.upper()]
    if APPROVE in reply.upper().replace(" ", "_") and not bullets:
        return Critique(APPROVE, [], parsed=False)
    issues = bullets or ([reply.strip()] if reply.strip() else ["the critic gave no critique"])
    return Critique("REVISE", issues, parsed=False)
