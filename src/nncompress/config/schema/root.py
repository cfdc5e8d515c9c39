"""The root of the schema: top-level keys, ``input_info`` and the ``compression`` dispatch."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.accuracy_aware import accuracy_aware_training_schema
from nncompress.config.schema.common import compression_lr_multiplier
from nncompress.config.schema.distillation import knowledge_distillation_schema
from nncompress.config.schema.nas import bootstrap_nas_schema
from nncompress.config.schema.pruning import filter_pruning_schema
from nncompress.config.schema.quantization import experimental_quantization_schema, quantization_schema
from nncompress.config.schema.sparsity import (
    const_sparsity_schema,
    magnitude_sparsity_schema,
    movement_sparsity_schema,
    rb_sparsity_schema,
)
from nncompress.config.schema.types import array, boolean, closed_object, integer, string

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Algorithm name (the value of "algorithm" in a compression section) -> schema builder.
ALGORITHM_SCHEMAS = {
    "quantization": quantization_schema,
    "experimental_quantization": experimental_quantization_schema,
    "filter_pruning": filter_pruning_schema,
    "magnitude_sparsity": magnitude_sparsity_schema,
    "rb_sparsity": rb_sparsity_schema,
    "const_sparsity": const_sparsity_schema,
    "movement_sparsity": movement_sparsity_schema,
    "knowledge_distillation": knowledge_distillation_schema,
}
ALGORITHM_NAMES = tuple(ALGORITHM_SCHEMAS)

INPUT_TYPES = [
    "float",
    "float32",
    "float16",
    "half",
    "bfloat16",
    "double",
    "float64",
    "long",
    "int64",
    "int",
    "int32",
    "short",
    "int16",
    "int8",
    "uint8",
    "bool",
]
TARGET_DEVICES = ["ANY", "CPU", "GPU", "NPU", "VPU", "TRIAL", "CPU_SPR"]


def _input_properties() -> dict[str, dict[str, Any]]:
    return {
        "sample_size": array(
            "Shape of the input tensor, batch dimension included, e.g. [1, 3, 224, 224].",
            integer("Size of one dimension.", minimum=1),
            min_items=1,
        ),
        "type": string(
            "Element type of the input tensor, e.g. 'float' or 'long' (token ids).",
            default="float",
            enum=INPUT_TYPES,
        ),
        "filler": string(
            "Values of the dummy tensor used to trace the model: 'ones', 'zeros' or 'random'.",
            default="ones",
            enum=["ones", "zeros", "random"],
        ),
        "keyword": string("Name of the forward() argument this tensor is passed as; positional when unset."),
    }


def input_info_schema() -> dict[str, Any]:
    """One model input, or a list of inputs (positional in order, or by keyword)."""
    single = closed_object("Description of the model's single input.", _input_properties())
    # An empty object is NNCF's way of saying "inputs come from elsewhere" (e.g. a dataset).
    single["if"] = {"minProperties": 1}
    single["then"] = {"required": ["sample_size"]}
    item = closed_object("Description of one model input.", _input_properties(), required=["sample_size"])
    return {
        "type": ["object", "array"],
        "description": "Shapes and types of the model inputs, used to build the dummy inputs that trace the "
        "model: one object, or a list of objects for a model with several inputs.",
        "oneOf": [
            single,
            {"type": "array", "description": "One entry per model input.", "items": item, "minItems": 1},
        ],
    }


def compression_item_schema() -> dict[str, Any]:
    """One compression section; its ``algorithm`` value selects the schema the rest must follow."""
    dispatch = [
        {
            "if": {"properties": {"algorithm": {"const": name}}, "required": ["algorithm"]},
            "then": {"$ref": f"#/$defs/{name}"},
        }
        for name in ALGORITHM_NAMES
    ]
    return {
        "type": "object",
        "description": "One compression algorithm; the value of 'algorithm' selects which keys are allowed.",
        "properties": {
            "algorithm": string("Name of the compression algorithm.", enum=list(ALGORITHM_NAMES)),
        },
        "required": ["algorithm"],
        "allOf": dispatch,
    }


def root_schema() -> dict[str, Any]:
    """The whole configuration schema: unknown top-level keys are allowed (training-script settings)."""
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "nncompress configuration (NNCF 2.x compatible)",
        "description": "Configuration of model compression. Keys the schema does not know are allowed at "
        "the top level only, for the training script's own settings; everywhere else they are errors.",
        "type": "object",
        "properties": {
            "input_info": input_info_schema(),
            "target_device": string(
                "Hardware the model is compressed for; it decides which quantization settings are allowed. "
                "'VPU' is an older name of 'NPU'; 'TRIAL' lifts all hardware restrictions.",
                default="ANY",
                enum=TARGET_DEVICES,
            ),
            "compression": {
                "type": ["object", "array"],
                "description": "Compression algorithms to apply: one section, or a list of sections applied "
                "together.",
                "oneOf": [
                    {"type": "object", "$ref": "#/$defs/compression_item"},
                    {
                        "type": "array",
                        "description": "Several algorithms, applied together.",
                        "items": {"type": "object", "$ref": "#/$defs/compression_item"},
                    },
                ],
            },
            "accuracy_aware_training": accuracy_aware_training_schema(),
            "compression_lr_multiplier": compression_lr_multiplier(
                "the trainable parameters every algorithm adds (quantizer scales, sparsity masks)",
                per_algorithm=False,
            ),
            "disable_shape_matching": boolean(
                "Whether the traced graph is reused for inputs of a different shape without re-tracing.",
                default=False,
            ),
            "log_dir": string("Directory where compression logs, statistics and dumps are written."),
            "bootstrapNAS": bootstrap_nas_schema(),
        },
        "required": ["input_info"],
        "additionalProperties": True,
        "$defs": {
            "compression_item": compression_item_schema(),
            **{name: build() for name, build in ALGORITHM_SCHEMAS.items()},
        },
    }
