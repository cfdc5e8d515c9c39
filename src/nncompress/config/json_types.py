"""Names of JSON types for Python values, as used by JSON Schema and in our messages."""

from __future__ import annotations

import math

_ARTICLE = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean (true or false)",
    "null": "null",
}


def json_types(value: object) -> set[str]:
    """Every JSON Schema type name ``value`` satisfies (an integer is also a number)."""
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return {"integer", "number"}
        return {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    if isinstance(value, dict):
        return {"object"}
    return set()


def json_type_name(value: object) -> str:
    """The most specific JSON type of ``value`` ('integer' before 'number'), or its Python type name."""
    types = json_types(value)
    for name in ("integer", "number", "boolean", "string", "array", "object", "null"):
        if name in types:
            return "list" if name == "array" else name
    return type(value).__name__


def type_phrase(types: str | list[str]) -> str:
    """'an object or a list' for ``["object", "array"]``."""
    names = [types] if isinstance(types, str) else list(types)
    words = [_ARTICLE.get(n, n) for n in names]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]
