"""NNCFConfig's NNCF-compatible API: construction, copying, extra structs, effective values."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

import nncompress
from nncompress.config import NNCFConfig, NNCFExtraConfigStruct, effective_params, get_param
from nncompress.errors import ConfigError, ExtraStructNotRegisteredError


class RangeInitArgs(NNCFExtraConfigStruct):
    def __init__(self, data_loader: Any):
        self.data_loader = data_loader


class BNAdaptArgs(NNCFExtraConfigStruct):
    def __init__(self, data_loader: Any):
        self.data_loader = data_loader


class SpecialRangeInitArgs(RangeInitArgs):
    pass


class Loader:
    """Stands for a data loader: deep-copying it must never happen."""

    def __deepcopy__(self, memo: dict) -> Loader:
        raise AssertionError("a data loader was deep-copied")


# ------------------------------------------------------------------------------ construction
def test_package_exports_the_class_lazily() -> None:
    assert nncompress.NNCFConfig is NNCFConfig


def test_from_dict_validates_and_deep_copies(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    assert isinstance(config, dict) and config == base_config
    base_config["compression"][1]["params"]["pruning_target"] = 0.9
    assert config["compression"][1]["params"]["pruning_target"] == 0.3
    config["input_info"]["sample_size"][0] = 8
    assert base_config["input_info"]["sample_size"][0] == 1


def test_constructor_does_not_validate_but_validate_does() -> None:
    config = NNCFConfig({"compression": "nonsense"})
    with pytest.raises(ConfigError):
        NNCFConfig.validate(config)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="required key 'input_info'"):
        NNCFConfig.from_dict({})


def test_from_json_accepts_str_and_pathlike(tmp_path: Path, base_config: dict[str, Any]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(base_config))
    assert NNCFConfig.from_json(path) == NNCFConfig.from_json(str(path)) == base_config


def test_from_json_reports_file_line_and_column_of_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(
        '{\n  "input_info": {"sample_size": [1, 3]},\n  "compression": {"algorithm": "quantization",}\n}\n'
    )
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_json(path)
    text = str(info.value)
    assert str(path) in text and "line 3" in text and "column" in text
    assert info.value.source == str(path)


def test_from_json_names_the_file_for_schema_errors(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"input_info": {"sample_size": [1]}, "compresion": {}}))
    with pytest.raises(ConfigError, match="typo.json") as info:
        NNCFConfig.from_json(path)
    assert info.value.problems[0][0] == "compresion"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"input_info": {"sample_size": [NaN]}}', "NaN is not valid JSON"),
        ('{"input_info": {"sample_size": [1]}, "input_info": {}}', "key 'input_info' appears twice"),
        ("", "not valid JSON: Expecting value at line 1, column 1"),
    ],
)
def test_from_json_is_strict(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "strict.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        NNCFConfig.from_json(path)


def test_from_json_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NNCFConfig.from_json(tmp_path / "absent.json")


def test_schema_returns_an_independent_copy() -> None:
    schema = NNCFConfig.schema()
    assert schema["required"] == ["input_info"]
    schema["properties"].clear()
    assert NNCFConfig.schema()["properties"]


# ------------------------------------------------------------------------------ extra structs
def test_extra_structs_are_keyed_by_class(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    loader = Loader()
    rng, bn = RangeInitArgs(loader), BNAdaptArgs(loader)
    config.register_extra_structs([rng, bn])
    assert config.get_extra_struct(RangeInitArgs) is rng
    assert config.get_extra_struct(BNAdaptArgs) is bn
    assert config.has_extra_struct(RangeInitArgs) and not config.has_extra_struct(SpecialRangeInitArgs)
    assert config.get_all_extra_structs() == [rng, bn]
    assert "data_loader" not in json.dumps(config)  # not part of the JSON


def test_missing_extra_struct_is_a_clear_key_error(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    config.register_extra_structs([BNAdaptArgs(None)])
    with pytest.raises(KeyError) as info:
        config.get_extra_struct(RangeInitArgs)
    assert isinstance(info.value, ExtraStructNotRegisteredError)
    assert str(info.value).startswith("no extra struct of type RangeInitArgs")
    assert "BNAdaptArgs" in str(info.value)


def test_registering_a_kind_twice_is_an_error(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    config.register_extra_structs([RangeInitArgs(1)])
    with pytest.raises(ConfigError, match="RangeInitArgs is already registered"):
        config.register_extra_structs([RangeInitArgs(2)])
    assert config.get_extra_struct(RangeInitArgs).data_loader == 1


def test_a_subclass_instance_is_found_by_its_base_class(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    special = SpecialRangeInitArgs(None)
    config.register_extra_structs([special])
    assert config.get_extra_struct(RangeInitArgs) is special
    assert config.has_extra_struct(RangeInitArgs)


def test_deepcopy_copies_json_and_shares_extra_structs(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    struct = RangeInitArgs(Loader())
    config.register_extra_structs([struct])
    clone = copy.deepcopy(config)
    assert isinstance(clone, NNCFConfig) and clone == config
    assert clone["compression"] is not config["compression"]
    assert clone.get_extra_struct(RangeInitArgs) is struct
    clone.register_extra_structs([BNAdaptArgs(None)])
    assert not config.has_extra_struct(BNAdaptArgs)


def test_shallow_copy_has_its_own_registry(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    clone = copy.copy(config)
    clone.register_extra_structs([BNAdaptArgs(None)])
    assert config.get_all_extra_structs() == []


def test_pickle_keeps_json_and_drops_runtime_objects(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    config.register_extra_structs([BNAdaptArgs(lambda: None)])  # a lambda cannot be pickled
    restored = pickle.loads(pickle.dumps(config))
    assert isinstance(restored, NNCFConfig) and restored == config
    assert restored.get_all_extra_structs() == []


# ------------------------------------------------------------------------------ sections, params
def test_algorithm_sections_for_object_list_and_absent() -> None:
    one = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1]}, "compression": {"algorithm": "quantization"}}
    )
    assert one.algorithm_sections() == [{"algorithm": "quantization"}]
    assert one.algorithm_sections()[0] is one["compression"]
    assert NNCFConfig.from_dict({"input_info": {"sample_size": [1]}}).algorithm_sections() == []


def test_get_algo_config_and_missing_algorithm(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    assert config.get_algo_config("filter_pruning")["params"] == {"pruning_target": 0.3}
    with pytest.raises(ConfigError, match="no 'filter_prunning' section.*Did you mean 'filter_pruning'"):
        config.get_algo_config("filter_prunning")


def test_get_param_reads_values_and_schema_defaults(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    assert get_param(config, "compression[1].params.pruning_target") == 0.3
    assert get_param(config, "compression[1].params.pruning_steps") == 100
    assert get_param(config, "compression[0].initializer.range.num_init_samples") == 256
    assert get_param(config, "compression[0].weights.bits") == 8
    assert get_param(config, "compression[0].weights.mode") is None  # no default: the preset decides
    assert get_param(config, "target_device") == "ANY"
    assert get_param(config, "input_info.type") == "float"
    section = config.get_algo_config("filter_pruning")
    assert get_param(section, "params.schedule") == "exponential"
    assert get_param({}, "params.pruning_target", algorithm="filter_pruning") == 0.5


def test_schedule_default_differs_per_sparsity_algorithm() -> None:
    assert get_param({"algorithm": "magnitude_sparsity"}, "params.schedule") == "polynomial"
    assert get_param({"algorithm": "rb_sparsity"}, "params.schedule") == "exponential"


def test_get_param_default_is_a_copy() -> None:
    levels = get_param({"algorithm": "rb_sparsity"}, "params.multistep_sparsity_levels")
    levels.append(1.0)
    assert get_param({"algorithm": "rb_sparsity"}, "params.multistep_sparsity_levels") == [0.1, 0.5]


def test_single_object_compression_and_input_can_be_indexed_as_zero() -> None:
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [2, 3]},
            "compression": {"algorithm": "rb_sparsity", "sparsity_init": 0.1},
        }
    )
    assert get_param(config, "compression[0].sparsity_init") == 0.1
    assert get_param(config, "input_info[0].sample_size") == [2, 3]
    with pytest.raises(ConfigError, match="only index"):
        get_param(config, "compression[1].sparsity_init")


def test_get_param_rejects_paths_the_schema_does_not_know(base_config: dict[str, Any]) -> None:
    config = NNCFConfig.from_dict(base_config)
    with pytest.raises(
        ConfigError, match=r"compression\[1\]\.params\.pruning_targt.*Did you mean 'pruning_target'"
    ):
        get_param(config, "compression[1].params.pruning_targt")
    with pytest.raises(ConfigError, match="index it first"):
        get_param(config, "compression.params")
    with pytest.raises(ConfigError, match="unknown algorithm"):
        get_param({}, "params.x", algorithm="pruning")


def test_get_effective_and_bootstrap_nas() -> None:
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 8, 8]},
            "compression": [
                {"algorithm": "quantization", "initializer": {"range": [{"num_init_samples": 10}]}}
            ],
            "bootstrapNAS": {"training": {"batchnorm_adaptation": {}}},
        }
    )
    assert config.get_effective("quantization", "initializer.range[0].num_init_samples") == 10
    assert config.get_effective("quantization", "initializer.range[0].type") == "mixed_min_max"
    assert (
        config.get_effective("bootstrapNAS", "training.batchnorm_adaptation.num_bn_adaptation_samples")
        == 2000
    )
    assert config.get_effective("bootstrapNAS", "search.algorithm") == "NSGA2"


def test_redefinable_global_param(base_config: dict[str, Any]) -> None:
    base_config["compression_lr_multiplier"] = 2.0
    base_config["compression"][0]["compression_lr_multiplier"] = 5.0
    config = NNCFConfig.from_dict(base_config)
    get = config.get_redefinable_global_param_value_for_algo
    assert get("compression_lr_multiplier", "quantization") == 5.0  # the section's own value
    assert get("compression_lr_multiplier", "filter_pruning") == 2.0  # the top-level value
    assert get("validate_scopes", "filter_pruning") is True  # the schema default of the section
    assert get("target_device", "quantization") == "ANY"  # the schema default of the top level
    del config["compression_lr_multiplier"]
    assert get("compression_lr_multiplier", "filter_pruning") is None
    with pytest.raises(ConfigError):
        get("target_device", "rb_sparsity")


def test_effective_params_marks_set_and_default_values() -> None:
    section = {"algorithm": "filter_pruning", "pruning_init": 0.1, "params": {"pruning_target": 0.4}}
    params = {p.path: p for p in effective_params(section)}
    assert params["pruning_init"].value == 0.1 and not params["pruning_init"].is_default
    assert params["params.pruning_target"].value == 0.4 and not params["params.pruning_target"].is_default
    assert params["params.pruning_steps"].value == 100 and params["params.pruning_steps"].is_default
    assert params["params.legr_params.generations"].value == 400
    assert params["params.pruning_flops_target"].value is None
    assert "algorithm" not in params


def test_effective_params_expands_per_scope_entries() -> None:
    section = {
        "algorithm": "quantization",
        "initializer": {
            "range": [{"type": "min_max", "target_quantizer_group": "weights"}, {"num_init_samples": 5}]
        },
        "scope_overrides": {"activations": {"{re}.*conv.*": {"bits": 4}}},
    }
    params = {p.path: p for p in effective_params(section)}
    assert params["initializer.range[0].type"].value == "min_max"
    assert params["initializer.range[1].num_init_samples"] == (
        "initializer.range[1].num_init_samples",
        5,
        False,
    )
    assert params["initializer.range[1].type"].is_default
    assert params['scope_overrides.activations["{re}.*conv.*"].bits'].value == 4
    # Scope overrides have no defaults: unset keys inherit the group's settings.
    assert params['scope_overrides.activations["{re}.*conv.*"].mode'].value is None


def test_input_infos_normalises_defaults() -> None:
    config = NNCFConfig.from_dict(
        {
            "input_info": [
                {"sample_size": [1, 3, 8, 8]},
                {"sample_size": [1, 16], "type": "long", "keyword": "ids"},
            ]
        }
    )
    assert config.input_infos() == [
        {"sample_size": [1, 3, 8, 8], "type": "float", "filler": "ones", "keyword": None},
        {"sample_size": [1, 16], "type": "long", "filler": "ones", "keyword": "ids"},
    ]
    assert NNCFConfig.from_dict({"input_info": {}}).input_infos() == []
    with pytest.raises(ConfigError, match="input_info"):
        NNCFConfig({}).input_infos()
