"""Walking the schema next to a config: follow ``$ref``, pick the object-or-list form, pick the algorithm.

Used by the effective-value helpers and the documentation generator, so both read defaults and
structure from the one schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nncompress.config.schema import ALGORITHM_NAMES, get_schema


def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """``node`` with a local ``$ref`` replaced by its target (sibling keys are kept on top)."""
    while "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        target = get_schema()["$defs"][ref[len("#/$defs/") :]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def algorithm_schema(name: str) -> Mapping[str, Any] | None:
    """The schema of one compression algorithm's section, or None for an unknown name."""
    if name not in ALGORITHM_NAMES:
        return None
    return resolve(get_schema()["$defs"][name])


def nas_schema() -> Mapping[str, Any]:
    """The schema of the top-level ``bootstrapNAS`` section."""
    return resolve(get_schema()["properties"]["bootstrapNAS"])


def root_schema() -> Mapping[str, Any]:
    """The root of the schema."""
    return get_schema()


def object_form(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """For an object-or-list node, the single-object alternative; for an object node, itself."""
    node = resolve(node)
    if "oneOf" in node:
        for branch in node["oneOf"]:
            if "object" in _types(branch):
                return resolve(branch)
        return None
    return node if "object" in _types(node) else None


def list_form(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """For an object-or-list or array node, the array alternative."""
    node = resolve(node)
    if "oneOf" in node:
        for branch in node["oneOf"]:
            if "array" in _types(branch):
                return resolve(branch)
        return None
    return node if "array" in _types(node) else None


def dispatch(node: Mapping[str, Any], data: Any) -> Mapping[str, Any]:
    """For a compression-section node, the schema of the algorithm ``data`` names (when known)."""
    node = resolve(node)
    if isinstance(data, Mapping) and is_dispatch(node):
        chosen = algorithm_schema(data.get("algorithm")) if isinstance(data.get("algorithm"), str) else None
        if chosen is not None:
            return chosen
    return node


def is_dispatch(node: Mapping[str, Any]) -> bool:
    """Whether ``node`` selects its sub-schema by the value of ``algorithm`` (if/then per algorithm)."""
    return any("if" in part and "then" in part for part in node.get("allOf", ()))


def child(node: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The schema of property ``key`` of object ``node`` (declared, or matched by a pattern)."""
    props = node.get("properties", {})
    if key in props:
        return props[key]
    for pattern, sub in node.get("patternProperties", {}).items():
        if re.search(pattern, key):
            return sub
    return None


def _types(node: Mapping[str, Any]) -> set[str]:
    kind = resolve(node).get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


def is_container(node: Mapping[str, Any]) -> bool:
    """Whether ``node`` holds named sub-parameters (an object, or an object-or-list)."""
    form = object_form(node)
    return form is not None and ("properties" in form or "patternProperties" in form or is_dispatch(form))
