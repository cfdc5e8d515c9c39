"""Small builders for JSON Schema nodes, so every property gets a type, a description and its range.

Each builder returns a fresh dict; the schema modules compose them as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_UNSET: Any = object()


def _finish(node: dict[str, Any], default: Any) -> dict[str, Any]:
    if default is not _UNSET:
        node["default"] = default
    return node


def _range(
    node: dict[str, Any],
    minimum: float | None,
    maximum: float | None,
    exclusive_minimum: float | None,
    exclusive_maximum: float | None,
) -> dict[str, Any]:
    if minimum is not None:
        node["minimum"] = minimum
    if maximum is not None:
        node["maximum"] = maximum
    if exclusive_minimum is not None:
        node["exclusiveMinimum"] = exclusive_minimum
    if exclusive_maximum is not None:
        node["exclusiveMaximum"] = exclusive_maximum
    return node


def number(
    description: str,
    *,
    default: Any = _UNSET,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
) -> dict[str, Any]:
    """A real-valued parameter, optionally bounded."""
    node = {"type": "number", "description": description}
    _range(node, minimum, maximum, exclusive_minimum, exclusive_maximum)
    return _finish(node, default)


def integer(
    description: str,
    *,
    default: Any = _UNSET,
    minimum: int | None = None,
    maximum: int | None = None,
) -> dict[str, Any]:
    """A whole-number parameter (counts, epochs, bit widths), optionally bounded."""
    node = {"type": "integer", "description": description}
    _range(node, minimum, maximum, None, None)
    return _finish(node, default)


def boolean(description: str, *, default: Any = _UNSET) -> dict[str, Any]:
    """A true/false switch."""
    return _finish({"type": "boolean", "description": description}, default)


def string(description: str, *, default: Any = _UNSET, enum: Iterable[str] | None = None) -> dict[str, Any]:
    """A free string, or one of a fixed set of names when ``enum`` is given."""
    node: dict[str, Any] = {"type": "string", "description": description}
    if enum is not None:
        node["enum"] = list(enum)
    return _finish(node, default)


def const(value: str, description: str) -> dict[str, Any]:
    """A string key that must hold exactly ``value`` (the algorithm name of a section)."""
    return {"type": "string", "const": value, "description": description}


def array(
    description: str,
    items: Mapping[str, Any],
    *,
    default: Any = _UNSET,
    min_items: int | None = None,
    max_items: int | None = None,
    unique: bool = False,
) -> dict[str, Any]:
    """A list whose every item follows ``items``."""
    node: dict[str, Any] = {"type": "array", "description": description, "items": dict(items)}
    if min_items is not None:
        node["minItems"] = min_items
    if max_items is not None:
        node["maxItems"] = max_items
    if unique:
        node["uniqueItems"] = True
    return _finish(node, default)


def closed_object(
    description: str,
    properties: Mapping[str, Mapping[str, Any]],
    *,
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """An object that accepts only the listed keys: a misspelled key is an error, not silently ignored."""
    node: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {k: dict(v) for k, v in properties.items()},
        "additionalProperties": False,
    }
    req = list(required)
    if req:
        node["required"] = req
    return node


def one_or_list(description: str, item: Mapping[str, Any], *, min_items: int = 1) -> dict[str, Any]:
    """A value given either as one object or as a list of such objects (NNCF accepts both forms)."""
    single = dict(item)
    single.setdefault("type", "object")
    return {
        "type": ["object", "array"],
        "description": description,
        "oneOf": [
            single,
            {
                "type": "array",
                "description": "A list of objects, each of the form described above.",
                "items": dict(single),
                "minItems": min_items,
            },
        ],
    }
