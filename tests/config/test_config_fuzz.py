"""Property test: a randomly damaged config is either valid or rejected with ConfigError, never a crash."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_nncf_configs import shared_config_files

from nncompress.config import NNCFConfig, effective_params, get_param
from nncompress.config.schema import get_schema
from nncompress.errors import ConfigError

HAND_WRITTEN: list[dict[str, Any]] = [
    {"input_info": {"sample_size": [1, 3, 32, 32]}, "compression": {"algorithm": "quantization"}},
    {
        "input_info": [{"sample_size": [1, 8], "type": "long", "keyword": "ids"}, {"sample_size": [1, 8]}],
        "target_device": "CPU",
        "compression": [
            {
                "algorithm": "quantization",
                "initializer": {
                    "range": [{"type": "percentile", "params": {"min_percentile": 1, "max_percentile": 99}}],
                    "precision": {"type": "manual", "bitwidth_per_scope": [[4, "a|WEIGHT"]]},
                },
                "scope_overrides": {
                    "weights": {"{re}.*fc.*": {"bits": 4, "initializer": {"range": {"type": "min_max"}}}}
                },
                "activations": {"unified_scale_ops": [["a", "b"]]},
            },
            {
                "algorithm": "magnitude_sparsity",
                "sparsity_init": 0.1,
                "params": {
                    "schedule": "multistep",
                    "multistep_steps": [2, 4],
                    "multistep_sparsity_levels": [0.1, 0.3, 0.5],
                },
            },
            {"algorithm": "knowledge_distillation", "type": "mse"},
        ],
    },
    {
        "input_info": {"sample_size": [2, 3, 16, 16]},
        "compression": [
            {"algorithm": "filter_pruning", "params": {"pruning_target": 0.4, "legr_params": {}}},
            {
                "algorithm": "movement_sparsity",
                "sparse_structure_by_scopes": [
                    {"mode": "block", "sparse_factors": [2, 2], "target_scopes": "x"}
                ],
            },
        ],
        "accuracy_aware_training": {
            "mode": "adaptive_compression_level",
            "params": {"maximal_absolute_accuracy_degradation": 1, "patience_epochs": 2},
        },
    },
]
SEEDS = HAND_WRITTEN + [json.loads(f.read_text()) for f in shared_config_files()]


def _vocabulary(node: Any) -> Iterator[Any]:
    """Property names, enum values and defaults of the schema: mutations that reach deep checks."""
    if isinstance(node, dict):
        yield from node.get("properties", {})
        yield from node.get("enum", [])
        if "default" in node:
            yield node["default"]
        for value in node.values():
            yield from _vocabulary(value)
    elif isinstance(node, list):
        for item in node:
            yield from _vocabulary(item)


VOCAB = list({json.dumps(v): v for v in _vocabulary(get_schema())}.values())
KEYS = sorted({v for v in VOCAB if isinstance(v, str)})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=1000)
    | st.text(max_size=6)
    | st.sampled_from(VOCAB).map(copy.deepcopy),  # copies: mutations must not edit VOCAB
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(KEYS), children, max_size=3)
    ),
    max_leaves=6,
)


def _locations(node: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _locations(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _locations(value, (*path, i))


def _get(root: Any, path: tuple) -> Any:
    for part in path:
        root = root[part]
    return root


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _mutate(config: Any, data: st.DataObject) -> Any:
    path = data.draw(st.sampled_from(list(_locations(config))))
    target = _get(config, path)
    op = data.draw(st.sampled_from(["delete", "replace", "insert", "wrap", "unwrap", "vocab"]))
    if op == "delete" and path:
        parent = _get(config, path[:-1])
        del parent[path[-1]]
        return config
    if op == "insert" and isinstance(target, dict):
        key = data.draw(st.sampled_from(KEYS) | st.text(max_size=6))
        target[key] = data.draw(json_values)
        return config
    if op == "wrap":
        return _set(config, path, [target])
    if op == "unwrap" and isinstance(target, list) and target:
        return _set(config, path, target[0])
    if op == "vocab":
        return _set(config, path, data.draw(st.sampled_from(VOCAB).map(copy.deepcopy)))
    return _set(config, path, data.draw(json_values))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_config_validates_or_raises_config_error(seed: dict[str, Any], data: st.DataObject) -> None:
    config: Any = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        config = _mutate(config, data)
    try:
        loaded = NNCFConfig.from_dict(config)
    except ConfigError as e:
        assert e.problems
        assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in e.problems)
        return
    # A config that validates must also be usable by every accessor.
    for section in loaded.algorithm_sections():
        effective_params(section)
        loaded.get_redefinable_global_param_value_for_algo("compression_lr_multiplier", section["algorithm"])
    loaded.input_infos()
    get_param(loaded, "target_device")


def test_seeds_are_valid() -> None:
    for seed in SEEDS:
        NNCFConfig.from_dict(seed)
