"""``NNCFConfig``: the validated configuration dict, compatible with NNCF 2.x's class of that name.

Stricter than NNCF: unknown keys inside algorithm sections, misspelled top-level keys, values out
of range and inconsistent settings are all reported at once, each with its JSON path.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from nncompress.config import schema_nav
from nncompress.config.effective import NAS_SECTION, get_param
from nncompress.config.extra_structs import ExtraStructs
from nncompress.config.schema import ALGORITHM_NAMES, schema_copy
from nncompress.config.suggestions import suggest
from nncompress.config.validation import validate_config
from nncompress.errors import ConfigError


class NNCFConfig(dict):
    """A compression config: a plain ``dict`` of the JSON, plus runtime objects ("extra structs").

    Build it with ``from_json`` or ``from_dict`` (both validate); the constructor alone does not
    validate, as in NNCF. Example::

        config = NNCFConfig.from_json("resnet18_int8.json")
        config.get_effective("quantization", "initializer.range.num_init_samples")  # 256 unless set
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._extra_structs = ExtraStructs()

    def _structs(self) -> ExtraStructs:
        # Paths that bypass __init__ (dict.fromkeys, some unpicklers) still get a registry.
        if "_extra_structs" not in self.__dict__:
            self._extra_structs = ExtraStructs()
        return self._extra_structs

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, nncf_dict: Mapping[str, Any]) -> NNCFConfig:
        """Validate ``nncf_dict`` and return a config holding a deep copy of it."""
        cls.validate(nncf_dict)
        return cls(copy.deepcopy(dict(nncf_dict)))

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> NNCFConfig:
        """Read, parse and validate a JSON file; errors name the file (and line/column for bad JSON)."""
        source = os.fspath(path)
        with open(source, encoding="utf-8") as f:
            text = f.read()
        loaded = parse_json_text(text, source)
        validate_config(loaded, source=source)
        return cls(loaded)

    @staticmethod
    def validate(loaded_json: Any) -> None:
        """Raise ConfigError listing every problem of ``loaded_json`` (a dict or an NNCFConfig)."""
        validate_config(loaded_json)

    @staticmethod
    def schema() -> dict[str, Any]:
        """The JSON Schema of the config, as a fresh deep copy."""
        return schema_copy()

    # ----------------------------------------------------------------- copying
    def __copy__(self) -> NNCFConfig:
        result = type(self)(self)
        result._extra_structs = self._structs().copy()
        return result

    def __deepcopy__(self, memo: dict[int, Any]) -> NNCFConfig:
        # The JSON part is copied; extra structs (data loaders...) are shared, never copied.
        result = type(self)()
        memo[id(self)] = result
        for key, value in self.items():
            result[copy.deepcopy(key, memo)] = copy.deepcopy(value, memo)
        result._extra_structs = self._structs().copy()
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling keeps the JSON only: runtime objects are not serializable state.
        return (type(self), (dict(self),))

    # ----------------------------------------------------------------- extra structs
    def register_extra_structs(self, struct_list: Iterable[object]) -> None:
        """Attach runtime objects (data loaders, criteria...), keyed by their class."""
        self._structs().register(struct_list)

    def get_extra_struct(self, struct_cls: type) -> Any:
        """The object registered for ``struct_cls``; ExtraStructNotRegisteredError (a KeyError) if none."""
        return self._structs().get(struct_cls)

    def has_extra_struct(self, struct_cls: type) -> bool:
        """Whether an object of ``struct_cls`` is registered."""
        return self._structs().has(struct_cls)

    def get_all_extra_structs(self) -> list[Any]:
        """Every registered runtime object, in registration order."""
        return self._structs().all()

    # ----------------------------------------------------------------- algorithm sections
    def algorithm_sections(self) -> list[dict[str, Any]]:
        """The compression sections as a list (``compression`` may hold one object or a list)."""
        compression = self.get("compression")
        if isinstance(compression, dict):
            return [compression]
        if isinstance(compression, list):
            return [s for s in compression if isinstance(s, dict)]
        return []

    def get_algo_config(self, algo_name: str) -> dict[str, Any]:
        """The (live, not copied) section of ``algo_name``; ``"bootstrapNAS"`` gives the NAS section."""
        if algo_name == NAS_SECTION:
            nas = self.get(NAS_SECTION)
            if not isinstance(nas, dict):
                raise ConfigError([(NAS_SECTION, "this config has no 'bootstrapNAS' section")])
            return nas
        matches = [s for s in self.algorithm_sections() if s.get("algorithm") == algo_name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(
                [("compression", f"algorithm '{algo_name}' is configured {len(matches)} times")]
            )
        present = [s.get("algorithm") for s in self.algorithm_sections()]
        listed = ", ".join(f"'{p}'" for p in present) or "none"
        hint = suggest(algo_name, [*present, *ALGORITHM_NAMES])
        raise ConfigError(
            [("compression", f"no '{algo_name}' section; configured algorithms: {listed}.{hint}")]
        )

    def get_effective(self, algo_name: str, path: str) -> Any:
        """The value at ``path`` inside the ``algo_name`` section, or its schema default."""
        return get_param(self.get_algo_config(algo_name), path, algorithm=algo_name)

    def get_redefinable_global_param_value_for_algo(self, param_name: str, algo_name: str) -> Any:
        """A parameter an algorithm section may override: the section's value, else the top-level
        value, else the schema default (None when there is none)."""
        section = self.get_algo_config(algo_name)
        if param_name in section:
            return section[param_name]
        if param_name in self:
            return self[param_name]
        algo_node = (
            schema_nav.nas_schema() if algo_name == NAS_SECTION else schema_nav.algorithm_schema(algo_name)
        )
        for node in (algo_node, schema_nav.root_schema()):
            sub = schema_nav.child(node, param_name) if node is not None else None
            if sub is not None and "default" in schema_nav.resolve(sub):
                return copy.deepcopy(schema_nav.resolve(sub)["default"])
        return None

    # ----------------------------------------------------------------- inputs
    def input_infos(self) -> list[dict[str, Any]]:
        """``input_info`` as a list of ``{"sample_size", "type", "filler", "keyword"}`` with defaults
        applied; empty for the NNCF idiom ``"input_info": {}`` (inputs supplied another way)."""
        info = self.get("input_info")
        if info is None:
            raise ConfigError([("input_info", "required key 'input_info' is missing")])
        entries = [info] if isinstance(info, dict) else list(info)
        if entries == [{}]:
            return []
        result = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "sample_size" not in entry:
                raise ConfigError([(f"input_info[{i}].sample_size", "required key 'sample_size' is missing")])
            result.append(
                {
                    "sample_size": list(entry["sample_size"]),
                    "type": get_param(self, f"input_info[{i}].type"),
                    "filler": get_param(self, f"input_info[{i}].filler"),
                    "keyword": entry.get("keyword"),
                }
            )
        return result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_text(text: str, source: str) -> Any:
    """Parse JSON strictly (no NaN/Infinity, no duplicate keys); ConfigError with line and column."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        loaded = json.loads(text, object_pairs_hook=pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(
            [("", f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}")], source=source
        ) from None
    except ValueError as e:
        raise ConfigError([("", f"not valid JSON: {e}")], source=source) from None
    if duplicates:
        raise ConfigError(
            [
                ("", f"key '{key}' appears twice in one object; only the last would be kept")
                for key in duplicates
            ],
            source=source,
        )
    return loaded
