"""Invalid configs are rejected with the JSON path of each problem and a message that says what to do."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nncompress.config import NNCFConfig, find_problems
from nncompress.errors import ConfigError

INPUT = {"sample_size": [1, 3, 32, 32]}


def cfg(*sections: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config with the given compression sections and top-level keys."""
    config: dict[str, Any] = {"input_info": copy.deepcopy(INPUT)}
    if sections:
        config["compression"] = list(sections)
    config.update(top)
    return config


Q = {"algorithm": "quantization"}
FP = {"algorithm": "filter_pruning"}
MAG = {"algorithm": "magnitude_sparsity"}
KD = {"algorithm": "knowledge_distillation", "type": "softmax"}
AA_OK = {"maximal_relative_accuracy_degradation": 1.0}

# (config, expected path, expected message fragment)
INVALID = {
    "no input_info": ({"compression": Q}, "input_info", "required key 'input_info' is missing"),
    "input_info not object": ({"input_info": "1x3x32x32"}, "input_info", "expected an object or a list"),
    "input list item lacks shape": (
        {"input_info": [INPUT, {"type": "long"}]},
        "input_info[1].sample_size",
        "required key 'sample_size'",
    ),
    "input object lacks shape": ({"input_info": {"filler": "zeros"}}, "input_info.sample_size", "missing"),
    "shape item not int": (
        {"input_info": {"sample_size": [1, 3, "32", 32]}},
        "input_info.sample_size[2]",
        'expected an integer, got string "32"',
    ),
    "shape item zero": ({"input_info": {"sample_size": [0, 3]}}, "input_info.sample_size[0]", ">= 1"),
    "input type typo": (
        {"input_info": {"sample_size": [1], "type": "flaot"}},
        "input_info.type",
        "Did you mean 'float'",
    ),
    "input filler": ({"input_info": {"sample_size": [1], "filler": "one"}}, "input_info.filler", '"ones"'),
    "input unknown key": (
        {"input_info": {"sample_size": [1], "shape": [1]}},
        "input_info.shape",
        "unknown key 'shape'",
    ),
    "target device": (cfg(Q, target_device="CPUX"), "target_device", "expected one of"),
    "compression string": (cfg(compression="quantization"), "compression", "expected an object or a list"),
    "compression item not object": (
        cfg(compression=[5]),
        "compression[0]",
        "expected an object, got integer 5",
    ),
    "algorithm missing": (cfg({"preset": "mixed"}), "compression[0].algorithm", "required key 'algorithm'"),
    "algorithm typo": (
        cfg({"algorithm": "quantisation"}),
        "compression[0].algorithm",
        "Did you mean 'quantization'",
    ),
    "section key typo": (cfg({**Q, "weight": {}}), "compression[0].weight", "Did you mean 'weights'"),
    "bits out of range": (cfg({**Q, "weights": {"bits": 16}}), "compression[0].weights.bits", "in [2, 8]"),
    "bits not integer": (cfg({**Q, "activations": {"bits": 7.5}}), "activations.bits", "expected an integer"),
    "mode typo": (cfg({**Q, "weights": {"mode": "symetric"}}), "compression[0].weights.mode", "'symmetric'"),
    "per_channel string": (
        cfg({**Q, "weights": {"per_channel": "yes"}}),
        "weights.per_channel",
        "expected a boolean",
    ),
    "range type": (
        cfg({**Q, "initializer": {"range": {"type": "minmax"}}}),
        "compression[0].initializer.range.type",
        "Did you mean 'min_max'",
    ),
    "range list entry key": (
        cfg({**Q, "initializer": {"range": [{"type": "min_max", "target_group": "weights"}]}}),
        "compression[0].initializer.range[0].target_group",
        "'target_quantizer_group'",
    ),
    "range not object": (
        cfg({**Q, "initializer": {"range": 256}}),
        "initializer.range",
        "an object or a list",
    ),
    "negative init samples": (
        cfg({**Q, "initializer": {"range": {"num_init_samples": -1}}}),
        "range.num_init_samples",
        ">= 0",
    ),
    "percentiles inverted": (
        cfg(
            {
                **Q,
                "initializer": {
                    "range": {"type": "percentile", "params": {"min_percentile": 99, "max_percentile": 1}}
                },
            }
        ),
        "range.params.min_percentile",
        "must be below max_percentile",
    ),
    "precision type": (
        cfg({**Q, "initializer": {"precision": {"type": "hawk"}}}),
        "initializer.precision.type",
        "Did you mean 'hawq'",
    ),
    "manual without table": (
        cfg({**Q, "initializer": {"precision": {"type": "manual"}}}),
        "precision.bitwidth_per_scope",
        "needs 'bitwidth_per_scope'",
    ),
    "bitwidth pair order": (
        cfg({**Q, "initializer": {"precision": {"type": "manual", "bitwidth_per_scope": [["conv1", 4]]}}}),
        "bitwidth_per_scope[0][0]",
        "expected an integer",
    ),
    "scope override key": (
        cfg({**Q, "scope_overrides": {"weights": {"Net/Conv2d[c1]/conv2d_0": {"bit": 4}}}}),
        'scope_overrides.weights["Net/Conv2d[c1]/conv2d_0"].bit',
        "Did you mean 'bits'",
    ),
    "preset": (cfg({**Q, "preset": "fast"}), "compression[0].preset", '"performance", "mixed"'),
    "overflow_fix bool": (cfg({**Q, "overflow_fix": True}), "overflow_fix", "expected a string, got boolean"),
    "pruning target 1": (
        cfg({**FP, "params": {"pruning_target": 1.0}}),
        "compression[0].params.pruning_target",
        "in [0, 1)",
    ),
    "pruning target string": (
        cfg({**FP, "params": {"pruning_target": "0.5"}}),
        "params.pruning_target",
        "expected a number",
    ),
    "importance case": (
        cfg({**FP, "params": {"filter_importance": "l2"}}),
        "params.filter_importance",
        "Did you mean 'L2'",
    ),
    "pruning param typo": (
        cfg({**FP, "params": {"prune_first_convs": True}}),
        "params.prune_first_convs",
        "Did you mean 'prune_first_conv'",
    ),
    "sparsity target range": (
        cfg({**MAG, "params": {"sparsity_target": 1.5}}),
        "params.sparsity_target",
        "in [0, 1]",
    ),
    "sparsity target below init": (
        cfg({**MAG, "sparsity_init": 0.6, "params": {"sparsity_target": 0.4}}),
        "compression[0].params.sparsity_target",
        "below sparsity_init",
    ),
    "multistep lengths": (
        cfg(
            {
                **MAG,
                "params": {
                    "schedule": "multistep",
                    "multistep_steps": [10, 20],
                    "multistep_sparsity_levels": [0.1, 0.5],
                },
            }
        ),
        "params.multistep_sparsity_levels",
        "2 steps need 3 levels, got 2",
    ),
    "multistep order": (
        cfg({**MAG, "params": {"multistep_steps": [20, 10], "multistep_sparsity_levels": [0.1, 0.3, 0.5]}}),
        "params.multistep_steps",
        "must increase",
    ),
    "algorithm twice": (cfg(Q, FP, {**Q, "preset": "mixed"}), "compression[2].algorithm", "listed again"),
    "kd without type": (
        cfg({"algorithm": "knowledge_distillation"}),
        "compression[0].type",
        "required key 'type'",
    ),
    "kd temperature": (cfg({**KD, "temperature": 0}), "compression[0].temperature", "> 0"),
    "aa without budget": (
        cfg(FP, accuracy_aware_training={"mode": "early_exit", "params": {"maximal_total_epochs": 5}}),
        "accuracy_aware_training.params",
        "no accuracy budget",
    ),
    "aa two budgets": (
        cfg(
            FP,
            accuracy_aware_training={
                "mode": "early_exit",
                "params": {**AA_OK, "maximal_absolute_accuracy_degradation": 1},
            },
        ),
        "accuracy_aware_training.params.maximal_absolute_accuracy_degradation",
        "only one",
    ),
    "aa mode typo": (
        cfg(FP, accuracy_aware_training={"mode": "early-exit", "params": AA_OK}),
        "accuracy_aware_training.mode",
        "Did you mean 'early_exit'",
    ),
    "aa adaptive key in early exit": (
        cfg(FP, accuracy_aware_training={"mode": "early_exit", "params": {**AA_OK, "patience_epochs": 3}}),
        "accuracy_aware_training.params.patience_epochs",
        "only by mode 'adaptive_compression_level'",
    ),
    "aa adaptive without adjustable algorithm": (
        cfg(Q, accuracy_aware_training={"mode": "adaptive_compression_level", "params": AA_OK}),
        "accuracy_aware_training.mode",
        "needs an algorithm whose level can be adjusted",
    ),
    "aa unknown param": (
        cfg(FP, accuracy_aware_training={"mode": "early_exit", "params": {**AA_OK, "max_epochs": 3}}),
        "accuracy_aware_training.params.max_epochs",
        "unknown key",
    ),
    "root typo compression": (
        {"input_info": INPUT, "compresion": Q},
        "compresion",
        "misspelling of 'compression'",
    ),
    "root typo input_infos": ({"input_info": INPUT, "input_infos": INPUT}, "input_infos", "'input_info'"),
    "root typo log-dir": ({"input_info": INPUT, "log-dir": "runs"}, "log-dir", "'log_dir'"),
    "root typo accuracy aware": (
        {"input_info": INPUT, "accuracy_aware_trainig": {}},
        "accuracy_aware_trainig",
        "'accuracy_aware_training'",
    ),
    "root typo target devices": (
        {"input_info": INPUT, "target_devices": "CPU"},
        "target_devices",
        "'target_device'",
    ),
    "root algorithm name": (
        {"input_info": INPUT, "quantization": {}},
        "quantization",
        "algorithm sections go in",
    ),
    "nas key typo": (
        {"input_info": {}, "bootstrapNAS": {"trainig": {}}},
        "bootstrapNAS.trainig",
        "'training'",
    ),
    "nas search compression": (
        {"input_info": {}, "bootstrapNAS": {"search": {"compression": Q}}},
        "bootstrapNAS.search.compression.algorithm",
        '"knowledge_distillation"',
    ),
    "movement warmup order": (
        cfg({"algorithm": "movement_sparsity", "params": {"warmup_start_epoch": 3, "warmup_end_epoch": 1}}),
        "params.warmup_end_epoch",
        "before warmup_start_epoch",
    ),
    "movement structure without mode": (
        cfg({"algorithm": "movement_sparsity", "sparse_structure_by_scopes": [{"target_scopes": "x"}]}),
        "sparse_structure_by_scopes[0].mode",
        "required key 'mode'",
    ),
    "lr multiplier zero": (cfg(Q, compression_lr_multiplier=0), "compression_lr_multiplier", "> 0"),
    "shape matching string": (
        cfg(Q, disable_shape_matching="no"),
        "disable_shape_matching",
        "expected a boolean",
    ),
    "validate_scopes string": (
        cfg({**Q, "validate_scopes": "true"}),
        "compression[0].validate_scopes",
        "boolean",
    ),
    "scopes not strings": (
        cfg({**FP, "ignored_scopes": [1, 2]}),
        "compression[0].ignored_scopes[0]",
        "a string",
    ),
    "root not an object": ([Q], "<root>", "expected an object, got list"),
    "nan from a dict": (
        cfg({**FP, "params": {"pruning_target": float("nan")}}),
        "params.pruning_target",
        "finite",
    ),
}


@pytest.mark.parametrize(("config", "path", "fragment"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_config_is_rejected_with_path(config: Any, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_dict(config)
    rendered = [f"{p or '<root>'}: {m}" for p, m in info.value.problems]
    assert any(path in line.split(": ", 1)[0] and fragment in line for line in rendered), rendered
    assert path.split("[")[0].split(".")[0] in str(info.value)


def test_there_are_at_least_30_distinct_invalid_cases() -> None:
    assert len(INVALID) >= 30
    assert len({path for _, path, _ in INVALID.values()}) >= 30


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    config = {
        "input_info": {"sample_size": [1, "3"]},
        "compresion": {},
        "compression": [
            {"algorithm": "quantization", "weights": {"bits": 1, "mdoe": "symmetric"}},
            {"algorithm": "filter_pruning", "params": {"pruning_target": 2}},
        ],
    }
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_dict(config)
    paths = [p for p, _ in info.value.problems]
    assert paths == [
        "input_info.sample_size[1]",
        "compresion",
        "compression[0].weights.bits",
        "compression[0].weights.mdoe",
        "compression[1].params.pruning_target",
    ]
    assert "5 problems" in str(info.value)


def test_one_of_failure_reports_the_relevant_alternative_not_a_generic_message() -> None:
    problems = find_problems(cfg({**Q, "initializer": {"range": [{"num_init_samples": "many"}]}}))
    assert problems == [
        ("compression[0].initializer.range[0].num_init_samples", 'expected an integer, got string "many"')
    ]
    assert not any("valid under" in m for _, m in problems)


def test_unknown_key_without_close_match_lists_allowed_keys() -> None:
    problems = find_problems(cfg({**KD, "zzz": 1}))
    assert problems == [
        ("compression[0].zzz", "unknown key 'zzz'. Allowed keys: algorithm, type, scale, temperature.")
    ]


def test_unknown_application_keys_at_root_are_allowed() -> None:
    config = cfg(
        Q,
        model="resnet50",
        batch_size=256,
        epochs=90,
        optimizer={"type": "SGD"},
        dataset="imagenet",
        pretrained=True,
        num_classes=1000,
        workers=8,
        weights="x.pth",
        seed=1,
        print_freq=10,
    )
    assert find_problems(config) == []


def test_valid_variants_of_one_or_list_forms() -> None:
    assert (
        find_problems({"input_info": [INPUT, {"sample_size": [1, 8], "type": "long", "keyword": "ids"}]})
        == []
    )
    assert find_problems({"input_info": INPUT, "compression": Q}) == []
    assert find_problems({"input_info": INPUT, "compression": []}) == []
    assert find_problems({"input_info": {}}) == []  # NNCF: inputs supplied another way


def test_aa_adaptive_mode_with_pruning_is_valid() -> None:
    aa = {"mode": "adaptive_compression_level", "params": {**AA_OK, "patience_epochs": 2}}
    assert find_problems(cfg(FP, Q, accuracy_aware_training=aa)) == []


def test_pruning_flops_target_together_with_pruning_target_is_accepted() -> None:
    assert find_problems(cfg({**FP, "params": {"pruning_target": 0.3, "pruning_flops_target": 0.4}})) == []


def test_a_value_of_the_wrong_type_gets_one_message_not_one_per_keyword() -> None:
    assert find_problems(cfg({"algorithm": ["quantization"]})) == [
        ("compression[0].algorithm", 'expected a string, got list ["quantization"]')
    ]
    assert find_problems({"input_info": None}) == [("input_info", "expected an object or a list, got null")]
