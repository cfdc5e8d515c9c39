"""Schema of the ``quantization`` (and ``experimental_quantization``) algorithm sections."""

from __future__ import annotations

import copy
from typing import Any

from nncompress.config.schema.common import (
    batchnorm_adaptation,
    compression_lr_multiplier,
    scoping_properties,
)
from nncompress.config.schema.types import (
    array,
    boolean,
    closed_object,
    const,
    integer,
    number,
    string,
)

QUANTIZER_MODES = ["symmetric", "asymmetric"]
RANGE_INIT_TYPES = ["mixed_min_max", "min_max", "mean_min_max", "threesigma", "percentile", "mean_percentile"]
PRECISION_INIT_TYPES = ["hawq", "autoq", "manual"]
MIN_BITS = 2
MAX_BITS = 8


def _bits(default: Any = 8) -> dict[str, Any]:
    return integer(
        "Bit width of the quantized values; must also be allowed by the target device's hardware rules.",
        default=default,
        minimum=MIN_BITS,
        maximum=MAX_BITS,
    )


def quantizer_properties() -> dict[str, dict[str, Any]]:
    """Properties that describe one quantizer: mode, bits, signedness, granularity, scale form."""
    return {
        "mode": string(
            "Quantization mode: 'symmetric' (zero point fixed at 0) or 'asymmetric' (learned zero point); "
            "when unset the preset decides.",
            enum=QUANTIZER_MODES,
        ),
        "bits": _bits(),
        "signed": boolean(
            "Force signed (true) or unsigned (false) quantized values; when unset the sign is chosen "
            "from the statistics collected during range initialization."
        ),
        "per_channel": boolean(
            "Whether each output channel (weights) or input channel (activations) gets its own scale "
            "instead of one scale per tensor.",
            default=False,
        ),
        "logarithm_scale": boolean(
            "Whether training updates the logarithm of the scale instead of the scale itself.",
            default=False,
        ),
    }


def _percentile_params() -> dict[str, Any]:
    return closed_object(
        "Parameters specific to the percentile range initializers.",
        {
            "min_percentile": number(
                "Percentile of the observed values used as the lower quantization bound by the "
                "'percentile' and 'mean_percentile' initializers.",
                default=0.1,
                minimum=0,
                maximum=100,
            ),
            "max_percentile": number(
                "Percentile of the observed values used as the upper quantization bound by the "
                "'percentile' and 'mean_percentile' initializers.",
                default=99.9,
                minimum=0,
                maximum=100,
            ),
        },
    )


def _range_init_properties() -> dict[str, dict[str, Any]]:
    return {
        "num_init_samples": integer(
            "Number of training samples run through the model to collect the statistics that set the "
            "initial quantization ranges; 0 skips range initialization.",
            default=256,
            minimum=0,
        ),
        "type": string(
            "Statistic used to set initial ranges: 'mixed_min_max', 'min_max', 'mean_min_max', "
            "'threesigma', 'percentile' or 'mean_percentile'.",
            default="mixed_min_max",
            enum=RANGE_INIT_TYPES,
        ),
        "params": _percentile_params(),
    }


def range_initializer() -> dict[str, Any]:
    """Range initialization: one global setting, or a list of per-scope settings."""
    global_form = closed_object(
        "Range initialization applied to every quantizer.",
        _range_init_properties(),
    )
    per_scope_form = closed_object(
        "Range initialization applied to the quantizers selected by the scopes and quantizer group.",
        {
            **_range_init_properties(),
            **scoping_properties("this range initializer"),
            "target_quantizer_group": string(
                "Restricts this entry to weight or activation quantizers; when unset it applies to both.",
                enum=["activations", "weights"],
            ),
        },
    )
    return {
        "type": ["object", "array"],
        "description": "Initial quantization ranges computed from statistics of real data: one object for "
        "all quantizers, or a list of objects that each select quantizers by scope.",
        "oneOf": [
            global_form,
            {
                "type": "array",
                "description": "Per-scope range initialization entries.",
                "items": per_scope_form,
                "minItems": 1,
            },
        ],
    }


def precision_initializer() -> dict[str, Any]:
    """Mixed-precision bit-width selection (HAWQ, AutoQ or a manual table)."""
    return closed_object(
        "Chooses a bit width for each quantizer (mixed precision) before training.",
        {
            "type": string(
                "Bit-width selection method: 'hawq' (Hessian traces), 'autoq' (reinforcement learning) "
                "or 'manual' (the table in 'bitwidth_per_scope').",
                enum=PRECISION_INIT_TYPES,
            ),
            "bits": array(
                "Bit widths the selection may choose from; overrides the 'bits' of the weights and "
                "activations sections.",
                integer("A candidate bit width.", minimum=MIN_BITS, maximum=MAX_BITS),
                default=[2, 4, 8],
                min_items=1,
                unique=True,
            ),
            "num_data_points": integer(
                "HAWQ: number of data points used to estimate the Hessian traces.",
                default=100,
                minimum=1,
            ),
            "iter_number": integer(
                "HAWQ: maximum number of Hutchinson iterations per Hessian trace estimate.",
                default=200,
                minimum=1,
            ),
            "tolerance": number(
                "HAWQ: relative change of the mean trace below which the Hutchinson iterations stop.",
                default=0.0001,
                exclusive_minimum=0,
            ),
            "compression_ratio": number(
                "HAWQ: minimal bit-complexity ratio of the INT8 model to the mixed-precision one; AutoQ: "
                "target model size relative to FP32.",
                exclusive_minimum=0,
            ),
            "eval_subset_ratio": number(
                "AutoQ: fraction of the evaluation data loader used in each search iteration.",
                default=1.0,
                exclusive_minimum=0,
                maximum=1,
            ),
            "warmup_iter_number": integer(
                "AutoQ: number of random policies tried before the agent starts learning.",
                default=20,
                minimum=0,
            ),
            "bitwidth_per_scope": array(
                "Manual: list of [bits, quantizer scope] pairs that set each quantizer's bit width.",
                {
                    "type": "array",
                    "description": "A [bits, scope] pair.",
                    "prefixItems": [
                        integer("Bit width for the quantizer.", minimum=MIN_BITS, maximum=MAX_BITS),
                        string("Scope of the quantizer, e.g. 'Model/Conv2d[conv1]/conv2d_0|WEIGHT'."),
                    ],
                    "items": False,
                    "minItems": 2,
                    "maxItems": 2,
                },
            ),
            "traces_per_layer_path": string(
                "HAWQ: path to saved average Hessian traces per layer, which skips their computation."
            ),
            "dump_init_precision_data": boolean(
                "Whether to write the data behind the precision choice (traces, plots, agent logs) to log_dir.",
                default=False,
            ),
            "bitwidth_assignment_mode": string(
                "'strict' gives one bit width to quantizers feeding the same operation; 'liberal' lets "
                "them differ.",
                default="liberal",
                enum=["strict", "liberal"],
            ),
        },
    )


def quantization_initializer() -> dict[str, Any]:
    """The ``initializer`` section of quantization: BN adaptation, ranges and precision."""
    return closed_object(
        "Initialization run once, before training, on data registered with the config.",
        {
            "batchnorm_adaptation": batchnorm_adaptation(),
            "range": range_initializer(),
            "precision": precision_initializer(),
        },
    )


def _quantizer_group(kind: str, *, activations: bool) -> dict[str, Any]:
    props = {**quantizer_properties(), **scoping_properties(f"{kind} quantization")}
    if activations:
        props["unified_scale_ops"] = array(
            "Groups of operation input scopes that must share one activation quantizer (same scale), "
            "e.g. the inputs of a concatenation.",
            array("One group of scopes sharing a quantizer.", {"type": "string"}, min_items=1),
        )
    return closed_object(f"Constraints applied to {kind} quantizers only.", props)


def _scope_override_entry() -> dict[str, Any]:
    # No defaults here: an unset key keeps the value from the weights/activations group.
    overrides = {
        key: {k: v for k, v in node.items() if k != "default"} for key, node in quantizer_properties().items()
    }
    return closed_object(
        "Quantizer settings for the operations matched by this scope; unset keys keep the group's settings.",
        {
            **overrides,
            "initializer": closed_object(
                "Range initialization for the quantizers matched by this scope.",
                {"range": range_initializer()},
            ),
        },
    )


def _scope_overrides() -> dict[str, Any]:
    def group(kind: str) -> dict[str, Any]:
        return {
            "type": "object",
            "description": f"Per-scope overrides of {kind} quantizers, keyed by scope name or "
            "'{re}'-prefixed regular expression.",
            "patternProperties": {".*": _scope_override_entry()},
        }

    return closed_object(
        "Quantizer settings for specific scopes, overriding group-wide and automatic settings.",
        {"weights": group("weight"), "activations": group("activation")},
    )


def _staged_params() -> dict[str, Any]:
    return closed_object(
        "Staged quantization schedule: when weights and activations start being quantized and how the "
        "learning rate and weight decay change.",
        {
            "batch_multiplier": integer(
                "Number of batches whose gradients are accumulated before each optimizer step.",
                minimum=1,
            ),
            "activations_quant_start_epoch": integer(
                "Zero-based epoch at which activations start being quantized.",
                default=1,
                minimum=0,
            ),
            "weights_quant_start_epoch": integer(
                "Zero-based epoch at which weights start being quantized.",
                default=1,
                minimum=0,
            ),
            "lr_poly_drop_start_epoch": integer(
                "Epoch at which the polynomial learning-rate decay starts; unset means no decay.",
                minimum=0,
            ),
            "lr_poly_drop_duration_epochs": integer(
                "Number of epochs over which the learning rate decays to zero.",
                default=30,
                minimum=1,
            ),
            "disable_wd_start_epoch": integer(
                "Epoch at which weight decay is switched off; unset means it stays on.",
                minimum=0,
            ),
            "base_lr": number("Initial learning rate of the staged schedule.", default=0.001, minimum=0),
            "base_wd": number("Initial weight decay of the staged schedule.", default=1e-05, minimum=0),
        },
    )


def quantization_schema(algorithm: str = "quantization") -> dict[str, Any]:
    """The section for quantization-aware training; ``algorithm`` names the variant."""
    return closed_object(
        "Simulates low-precision execution by inserting fake-quantizers on weights and activations, "
        "then fine-tunes their parameters with the model.",
        {
            "algorithm": const(algorithm, "Selects this algorithm."),
            "initializer": quantization_initializer(),
            "preset": string(
                "'performance' makes all quantizers symmetric; 'mixed' makes weights symmetric and "
                "activations asymmetric.",
                default="performance",
                enum=["performance", "mixed"],
            ),
            "quantize_inputs": boolean(
                "Whether the model inputs are quantized before any operation.", default=True
            ),
            "quantize_outputs": boolean("Whether the model outputs are quantized too.", default=False),
            "weights": _quantizer_group("weight", activations=False),
            "activations": _quantizer_group("activation", activations=True),
            "scope_overrides": _scope_overrides(),
            "export_to_onnx_standard_ops": boolean(
                "Deprecated: export quantizers as ONNX QuantizeLinear/DequantizeLinear pairs instead of "
                "FakeQuantize nodes.",
                default=False,
            ),
            "overflow_fix": string(
                "Work-around for the INT8 accumulator overflow of some CPUs: halve the weight range in "
                "all layers ('enable'), only the first convolution ('first_layer_only'), or none ('disable').",
                default="enable",
                enum=["enable", "disable", "first_layer_only"],
            ),
            "params": _staged_params(),
            **scoping_properties("quantization"),
            "compression_lr_multiplier": compression_lr_multiplier(
                "the quantizer parameters (scales, zero points)"
            ),
        },
    )


def experimental_quantization_schema() -> dict[str, Any]:
    """The experimental variant shares the layout of ``quantization``; only the name differs."""
    schema = copy.deepcopy(quantization_schema("experimental_quantization"))
    schema["description"] = "Experimental quantization implementation; same parameters as 'quantization'."
    return schema
