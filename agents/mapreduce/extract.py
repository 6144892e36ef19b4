"""Structured extraction: finding the JSON in a model's reply and checking it against the user's schema."""

from __future__ import annotations

import json
import re

import jsonschema

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def schema_problem(schema) -> str | None:
    """Why ``schema`` is not a usable JSON schema, or None if it is."""
    if not isinstance(schema, dict):
        return f"the JSON schema must be an object, got {type(schema).__name__}"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        return f"invalid JSON schema: {e.message} (at {'/'.join(map(str, e.path)) or 'the root'})"
    return None


def parse(reply: str, schema: dict) -> tuple[dict | None, str | None]:
    """The object in ``reply`` and None, or None and what is wrong with it (for the repair request)."""
    candidates = [m.group(1) for m in _FENCE.finditer(reply)] + [reply]
    found, problem = None, "the reply holds no JSON object"
    for text in candidates:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            continue
        try:
            found = json.loads(text[start : end + 1])
            break
        except json.JSONDecodeError as e:
            problem = f"not valid JSON: {e.msg} at character {e.pos}"
    if found is None:
        return None, problem
    if not isinstance(found, dict):
        return None, f"expected a JSON object, got {type(found).__name__}"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(found))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "the root"
        return None, f"does not match the schema at {where}: {error.message}"
    return found, None
