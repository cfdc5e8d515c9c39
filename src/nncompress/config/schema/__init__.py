"""The configuration JSON Schema, written as Python data in small modules (one per algorithm family).

``get_schema()`` returns the one shared, read-only instance; ``schema_copy()`` a copy callers may edit.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from nncompress.config.schema.root import ALGORITHM_NAMES, root_schema

__all__ = ["ALGORITHM_NAMES", "ROOT_KEYS", "get_schema", "schema_copy"]


@functools.cache
def get_schema() -> dict[str, Any]:
    """The schema, built once. Do not mutate it: use ``schema_copy()`` for an editable one."""
    return root_schema()


def schema_copy() -> dict[str, Any]:
    """A deep copy of the schema."""
    return copy.deepcopy(get_schema())


ROOT_KEYS: tuple[str, ...] = tuple(get_schema()["properties"])
