"""Turn jsonschema's errors into our messages: a JSON path, the bad value and what was expected.

jsonschema's own messages are written for schema authors ("is not valid under any of the given
schemas"); users need to know which key is wrong and what to write instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema.exceptions import ValidationError, best_match

from nncompress.config.json_paths import Path, short_json
from nncompress.config.json_types import json_type_name, json_types, type_phrase
from nncompress.config.suggestions import suggest

Problem = tuple[Path, str]


def describe_errors(errors: Iterable[ValidationError]) -> list[Problem]:
    """Every error as ``(path, message)``; one jsonschema error may yield several problems or none."""
    problems: list[Problem] = []
    for error in errors:
        problems.extend(_describe(error))
    return problems


def _describe(error: ValidationError) -> list[Problem]:
    path: Path = tuple(error.absolute_path)
    handler = _HANDLERS.get(str(error.validator))
    if handler is not None:
        return handler(error, path)
    return [(path, error.message)]


def _value(instance: object) -> str:
    if instance is None:
        return "null"
    return f"{json_type_name(instance)} {short_json(instance)}"


def _wrong_type(error: ValidationError) -> bool:
    """Whether the sibling "type" keyword rejects the value (then only that error is worth reporting)."""
    kind = error.schema.get("type") if isinstance(error.schema, Mapping) else None
    if kind is None:
        return False
    wanted = {kind} if isinstance(kind, str) else set(kind)
    return not (wanted & json_types(error.instance))


def _type(error: ValidationError, path: Path) -> list[Problem]:
    expected = type_phrase(error.validator_value)
    return [(path, f"expected {expected}, got {_value(error.instance)}")]


def _enum(error: ValidationError, path: Path) -> list[Problem]:
    if _wrong_type(error):
        return []
    allowed = list(error.validator_value)
    listed = ", ".join(short_json(a) for a in allowed)
    hint = (
        suggest(error.instance, [a for a in allowed if isinstance(a, str)])
        if isinstance(error.instance, str)
        else ""
    )
    what = "unknown algorithm" if path and path[-1] == "algorithm" else "invalid value"
    return [(path, f"{what} {short_json(error.instance)}; expected one of: {listed}.{hint}")]


def _const(error: ValidationError, path: Path) -> list[Problem]:
    if _wrong_type(error):
        return []
    return [(path, f"expected {short_json(error.validator_value)}, got {short_json(error.instance)}")]


def bounds_phrase(schema: Mapping[str, Any]) -> str:
    """'in [0, 1)', '>= 1', or '' when ``schema`` has no bounds."""
    low = schema.get("minimum")
    low_open = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    high_open = schema.get("exclusiveMaximum")
    lo = low if low is not None else low_open
    hi = high if high is not None else high_open
    if lo is not None and hi is not None:
        left = "[" if low is not None else "("
        right = "]" if high is not None else ")"
        return f"in {left}{_num(lo)}, {_num(hi)}{right}"
    if lo is not None:
        return f"{'>=' if low is not None else '>'} {_num(lo)}"
    if hi is not None:
        return f"{'<=' if high is not None else '<'} {_num(hi)}"
    return ""


def range_phrase(schema: Mapping[str, Any]) -> str:
    """'a number in [0, 1)', 'an integer >= 1': the type and bounds of a schema node."""
    kind = schema.get("type", "number")
    noun = type_phrase(kind if isinstance(kind, str) else "number")
    bounds = bounds_phrase(schema)
    return f"{noun} {bounds}" if bounds else noun


def _num(x: float) -> str:
    return json.dumps(x)


def _range(error: ValidationError, path: Path) -> list[Problem]:
    return [(path, f"{short_json(error.instance)} is out of range; expected {range_phrase(error.schema)}")]


def _required(error: ValidationError, path: Path) -> list[Problem]:
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    missing = [key for key in error.validator_value if key not in instance]
    return [((*path, key), f"required key '{key}' is missing") for key in missing]


def _additional(error: ValidationError, path: Path) -> list[Problem]:
    if not isinstance(error.instance, Mapping):
        return [(path, error.message)]
    known = list(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    problems = []
    for key in error.instance:
        if key in known or any(re.search(p, str(key)) for p in patterns):
            continue
        hint = suggest(str(key), known)
        if not hint:
            hint = " Allowed keys: " + ", ".join(known) + "."
        problems.append(((*path, key), f"unknown key '{key}'.{hint}"))
    return problems


def _items_count(error: ValidationError, path: Path) -> list[Problem]:
    n = len(error.instance) if isinstance(error.instance, list) else 0
    limit = error.validator_value
    if error.validator == "minItems":
        return [(path, f"expected at least {limit} item{'s' if limit != 1 else ''}, got {n}")]
    return [(path, f"expected at most {limit} item{'s' if limit != 1 else ''}, got {n}")]


def _items(error: ValidationError, path: Path) -> list[Problem]:
    if error.validator_value is False:
        # "items": false after "prefixItems": maxItems reports the same problem more clearly.
        return []
    return [(path, error.message)]


def _unique(error: ValidationError, path: Path) -> list[Problem]:
    return [(path, f"items must be unique, got {short_json(error.instance)}")]


def _branch_types(branch: Mapping[str, Any]) -> set[str]:
    kind = branch.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


def _one_of(error: ValidationError, path: Path) -> list[Problem]:
    """Report the errors of the alternative the value was evidently meant for (chosen by its type)."""
    branches = list(error.validator_value)
    have = json_types(error.instance)
    matching = [i for i, b in enumerate(branches) if _branch_types(b) & have]
    if len(matching) == 1:
        index = matching[0]
        sub = [
            e for e in error.context or () if e.relative_schema_path and e.relative_schema_path[0] == index
        ]
        if sub:
            return describe_errors(sub)
        return [(path, "matches more than one of the allowed forms")]
    if not matching:
        if "type" in error.schema:
            return []  # the sibling "type" keyword already reports the wrong type
        wanted = sorted({t for b in branches for t in _branch_types(b)})
        return [(path, f"expected {type_phrase(wanted)}, got {_value(error.instance)}")]
    best = best_match(error.context or ())
    if best is None:
        return [(path, "does not match any of the allowed forms")]
    return _describe(best)


_HANDLERS = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "minimum": _range,
    "maximum": _range,
    "exclusiveMinimum": _range,
    "exclusiveMaximum": _range,
    "required": _required,
    "additionalProperties": _additional,
    "minItems": _items_count,
    "maxItems": _items_count,
    "items": _items,
    "uniqueItems": _unique,
    "oneOf": _one_of,
    "anyOf": _one_of,
}
