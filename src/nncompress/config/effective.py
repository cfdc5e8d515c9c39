"""Effective parameter values: what the config says, else the schema's default.

Defaults live only in the schema; algorithms read every parameter through ``get_param`` so no
default is written twice (and a typo in a parameter path fails loudly instead of reading None).

Example::

    get_param({"algorithm": "filter_pruning"}, "params.pruning_target")  # 0.5, the schema default
    get_param(config, "compression[0].params.pruning_target")  # the same, read from a whole config
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

from nncompress.config import schema_nav
from nncompress.config.json_paths import Path, format_path, parse_path
from nncompress.config.schema import ALGORITHM_NAMES
from nncompress.config.suggestions import suggest
from nncompress.errors import ConfigError

_MISSING: Any = object()
NAS_SECTION = "bootstrapNAS"


class EffectiveParam(NamedTuple):
    """One parameter of a section: its path, effective value, and whether that value is the default."""

    path: str
    value: Any
    is_default: bool


def _start_node(config_or_section: Mapping[str, Any], algorithm: str | None) -> Mapping[str, Any]:
    if algorithm is not None:
        if algorithm == NAS_SECTION:
            return schema_nav.nas_schema()
        node = schema_nav.algorithm_schema(algorithm)
        if node is None:
            raise ConfigError(
                [("", f"unknown algorithm '{algorithm}'.{suggest(algorithm, ALGORITHM_NAMES)}")]
            )
        return node
    if is_algorithm_section(config_or_section):
        return schema_nav.algorithm_schema(config_or_section["algorithm"]) or schema_nav.root_schema()
    return schema_nav.root_schema()


def is_algorithm_section(data: Any) -> bool:
    """Whether ``data`` is one compression section (rather than a whole config)."""
    from nncompress.config.nncf_config import NNCFConfig

    return (
        isinstance(data, Mapping)
        and not isinstance(data, NNCFConfig)
        and data.get("algorithm") in ALGORITHM_NAMES
        and "input_info" not in data
    )


def get_param(
    config_or_section: Mapping[str, Any],
    path: str | Path,
    *,
    algorithm: str | None = None,
) -> Any:
    """The value at ``path`` in a config or compression section, or the schema default (None if none).

    ``config_or_section`` is a whole config (paths start at the top level, e.g.
    ``"compression[0].params.pruning_target"``) or one algorithm section (paths start inside it,
    e.g. ``"params.pruning_target"``); pass ``algorithm`` to read a section of that algorithm
    (``"bootstrapNAS"`` for the NAS section). A path the schema does not know raises ConfigError.
    A single-object ``compression`` or ``input_info`` can be indexed as ``[0]``.
    """
    parts = parse_path(path) if isinstance(path, str) else tuple(path)
    node = _start_node(config_or_section, algorithm)
    data: Any = config_or_section
    walked: list[Any] = []
    for part in parts:
        if isinstance(part, int):
            node, data = _step_index(node, data, part, walked)
        else:
            node, data = _step_key(node, data, part, walked)
        walked.append(part)
    if data is not _MISSING:
        return data
    return copy.deepcopy(schema_nav.resolve(node).get("default"))


def _step_index(node: Mapping[str, Any], data: Any, index: int, walked: list[Any]) -> tuple[Any, Any]:
    resolved = schema_nav.resolve(node)
    if "oneOf" in resolved and not isinstance(data, list):
        # A single object stands for a list of one.
        single = schema_nav.object_form(resolved)
        if single is None or index != 0:
            raise _path_error(walked, index, "is a single object; only index [0] exists")
        return single, data
    array = schema_nav.list_form(resolved)
    if array is None:
        raise _path_error(walked, index, "is not a list in the schema")
    value = data[index] if isinstance(data, list) and index < len(data) else _MISSING
    return array.get("items", {}), value


def _step_key(node: Mapping[str, Any], data: Any, key: str, walked: list[Any]) -> tuple[Any, Any]:
    resolved = schema_nav.resolve(node)
    if "oneOf" in resolved:
        if isinstance(data, list):
            raise _path_error(walked, key, "is a list here; index it first, e.g. [0]")
        form = schema_nav.object_form(resolved)
        if form is None:
            raise _path_error(walked, key, "is not an object in the schema")
        resolved = form
    resolved = schema_nav.dispatch(resolved, data)
    sub = schema_nav.child(resolved, key)
    if sub is None:
        known = list(resolved.get("properties", {}))
        if schema_nav.is_dispatch(resolved):
            raise _path_error(
                walked, key, "needs its 'algorithm' to be known before its parameters can be read"
            )
        hint = suggest(key, known) or (" Known keys: " + ", ".join(known) + "." if known else "")
        raise _path_error(walked, key, f"is not a parameter the schema knows.{hint}", whole=True)
    value = data[key] if isinstance(data, Mapping) and key in data else _MISSING
    return sub, value


def _path_error(walked: list[Any], part: Any, message: str, whole: bool = False) -> ConfigError:
    where = format_path([*walked, part]) if whole else format_path(walked) or "<root>"
    return ConfigError([(where, message)])


def effective_params(section: Mapping[str, Any], *, algorithm: str | None = None) -> list[EffectiveParam]:
    """Every leaf parameter of a section with its effective value, in schema order.

    Unset parameters without a default appear with value None. Per-scope lists (range init entries,
    scope overrides, NAS stages) are expanded for the entries present in ``section``.
    """
    node = _start_node(section, algorithm)
    out: list[EffectiveParam] = []
    _walk(node, section, (), out)
    return out


def _holds_params(sub: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` at schema ``sub`` is a group of parameters to expand rather than a leaf."""
    if schema_nav.is_container(sub):
        return value is _MISSING or isinstance(value, Mapping | list)
    array = schema_nav.list_form(sub)
    return isinstance(value, list) and array is not None and schema_nav.is_container(array.get("items", {}))


def _walk(node: Mapping[str, Any], data: Any, prefix: Path, out: list[EffectiveParam]) -> None:
    resolved = schema_nav.resolve(node)
    array = schema_nav.list_form(resolved)
    if isinstance(data, list) and array is not None:
        for i, item in enumerate(data):
            _walk(array.get("items", {}), item, (*prefix, i), out)
        return
    form = schema_nav.object_form(resolved)
    if form is None:
        return
    form = schema_nav.dispatch(form, data)
    present = data if isinstance(data, Mapping) else {}
    declared = form.get("properties", {})
    for key, sub in declared.items():
        if key == "algorithm" and "const" in sub:
            continue
        value = present.get(key, _MISSING)
        if _holds_params(sub, value):
            _walk(sub, {} if value is _MISSING else value, (*prefix, key), out)
        elif value is _MISSING:
            default = copy.deepcopy(schema_nav.resolve(sub).get("default"))
            out.append(EffectiveParam(format_path((*prefix, key)), default, True))
        else:
            out.append(EffectiveParam(format_path((*prefix, key)), value, False))
    if form.get("patternProperties"):
        for key, value in present.items():
            sub = schema_nav.child(form, key) if key not in declared else None
            if sub is not None:
                _walk(sub, value, (*prefix, key), out)
