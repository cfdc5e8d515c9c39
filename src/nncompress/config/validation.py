"""Validate a whole config and report every problem at once, in document order.

Three passes: the JSON Schema (structure, types, ranges, unknown keys inside sections), the
top-level typo check, and the semantic checks (relations between keys).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from nncompress.config.json_paths import Path, format_path
from nncompress.config.root_keys import check_root_keys
from nncompress.config.schema import get_schema
from nncompress.config.schema_errors import describe_errors
from nncompress.config.semantic_checks import check_finite_numbers, check_semantics
from nncompress.errors import ConfigError


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(get_schema())


def find_problems(config: Any) -> list[tuple[str, str]]:
    """Every problem of ``config`` as ``(json_path, message)``, in document order; empty when valid."""
    found: list[tuple[Path, str]] = describe_errors(_validator().iter_errors(config))
    if isinstance(config, Mapping):
        flagged = {path for path, _ in found}
        # NaN/infinity pass range checks; report them unless the schema already flagged the value.
        found += [p for p in check_finite_numbers(config) if p[0] not in flagged]
        found += check_root_keys(config)
        found += check_semantics(config)
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda problem: (_document_order(config, problem[0]), problem[1]))
    return [(format_path(path), message) for path, message in unique]


def validate_config(config: Any, source: str | None = None) -> None:
    """Raise ConfigError listing every problem of ``config``; ``source`` names the file in the message."""
    problems = find_problems(config)
    if problems:
        raise ConfigError(problems, source=source)


def _document_order(config: Any, path: Path) -> tuple[int, ...]:
    """Sort key that follows the order keys and items appear in the config (missing keys last)."""
    key: list[int] = []
    node = config
    for part in path:
        if isinstance(node, Mapping):
            keys = list(node)
            key.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            key.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            key.append(0)
            node = None
    return tuple(key)
