"""Schemas of the sparsity sections: magnitude, RB (regularization-based), const and movement."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.common import (
    bn_only_initializer,
    compression_lr_multiplier,
    scoping_properties,
    target_scopes,
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

SPARSITY_SCHEDULES = ["polynomial", "exponential", "adaptive", "multistep"]


def _sparsity_init() -> dict[str, Any]:
    return number(
        "Fraction of weights zeroed right at the start, before the schedule runs.",
        default=0.0,
        minimum=0,
        maximum=1,
    )


def _sparsity_params(default_schedule: str, *, magnitude: bool) -> dict[str, Any]:
    props: dict[str, dict[str, Any]] = {
        "sparsity_level_setting_mode": string(
            "'global': one scheduler controls the sparsity of the whole model; 'local': each layer's "
            "level is set separately.",
            default="global",
            enum=["global", "local"],
        ),
        "schedule": string(
            "How the sparsity level grows from sparsity_init to sparsity_target: 'polynomial', "
            "'exponential', 'adaptive' or 'multistep'.",
            default=default_schedule,
            enum=SPARSITY_SCHEDULES,
        ),
        "sparsity_target": number(
            "Fraction of weights that are zero at the end of the schedule.",
            default=0.5,
            minimum=0,
            maximum=1,
        ),
        "sparsity_target_epoch": integer(
            "Epoch at which the schedule reaches sparsity_target.", default=90, minimum=0
        ),
        "sparsity_freeze_epoch": integer(
            "Epoch after which the sparsity masks stop changing.", default=100, minimum=0
        ),
        "update_per_optimizer_step": boolean(
            "Whether the sparsity level is updated at every optimizer step instead of once per epoch.",
            default=False,
        ),
        "steps_per_epoch": integer(
            "Optimizer steps per epoch, needed by update_per_optimizer_step; inferred from the first "
            "epoch when unset.",
            minimum=1,
        ),
        "multistep_steps": array(
            "Epochs at which the 'multistep' schedule moves to its next sparsity level (increasing).",
            integer("An epoch index.", minimum=0),
            default=[90],
            min_items=1,
        ),
        "multistep_sparsity_levels": array(
            "Sparsity levels of the 'multistep' schedule: one before the first step and one after each "
            "step, so one more than multistep_steps.",
            number("A sparsity level.", minimum=0, maximum=1),
            default=[0.1, 0.5],
            min_items=2,
        ),
        "patience": integer(
            "'adaptive' schedule: epochs without sufficient loss improvement before the level rises.",
            default=1,
            minimum=0,
        ),
        "power": number("Exponent of the 'polynomial' schedule.", default=0.9, exclusive_minimum=0),
        "concave": boolean(
            "Whether the 'polynomial' schedule is concave (fast growth first) or convex.", default=True
        ),
    }
    if magnitude:
        props["weight_importance"] = string(
            "Weight importance measure: 'abs' (absolute value) or 'normed_abs' (absolute value divided "
            "by the layer's norm).",
            default="normed_abs",
            enum=["abs", "normed_abs"],
        )
    return closed_object("Sparsity schedule parameters.", props)


def magnitude_sparsity_schema() -> dict[str, Any]:
    """Unstructured sparsity that zeroes the smallest-magnitude weights."""
    return closed_object(
        "Zeroes the weights of smallest magnitude, raising the sparsity level along a schedule during "
        "fine-tuning.",
        {
            "algorithm": const("magnitude_sparsity", "Selects this algorithm."),
            "sparsity_init": _sparsity_init(),
            "initializer": bn_only_initializer(),
            "params": _sparsity_params("polynomial", magnitude=True),
            **scoping_properties("magnitude sparsity"),
        },
    )


def rb_sparsity_schema() -> dict[str, Any]:
    """Unstructured sparsity with learned stochastic masks and a regularization loss."""
    return closed_object(
        "Regularization-based sparsity: learns a stochastic mask per weight, with a loss term that "
        "drives the model towards the scheduled sparsity level.",
        {
            "algorithm": const("rb_sparsity", "Selects this algorithm."),
            "sparsity_init": _sparsity_init(),
            "params": _sparsity_params("exponential", magnitude=False),
            **scoping_properties("RB sparsity"),
            "compression_lr_multiplier": compression_lr_multiplier("the sparsity mask parameters"),
        },
    )


def const_sparsity_schema() -> dict[str, Any]:
    """Keeps the zeros already present in the weights (for fine-tuning a sparse model)."""
    return closed_object(
        "Keeps the sparsity pattern the weights already have: zero weights stay zero during fine-tuning.",
        {
            "algorithm": const("const_sparsity", "Selects this algorithm."),
            **scoping_properties("const sparsity"),
        },
    )


def _sparse_structure_entry() -> dict[str, Any]:
    return closed_object(
        "Sparsity structure for the layers matched by target_scopes.",
        {
            "mode": string(
                "Granularity of the mask: 'fine' (single weights), 'block' (blocks of sparse_factors) "
                "or 'per_dim' (whole rows or columns along axis).",
                enum=["fine", "block", "per_dim"],
            ),
            "sparse_factors": array(
                "Block shape [rows, columns] of the 'block' mode.",
                integer("Block size along one dimension.", minimum=1),
                min_items=2,
                max_items=2,
            ),
            "axis": integer("Dimension along which the 'per_dim' mode masks whole slices.", minimum=0),
            "target_scopes": target_scopes("this structure"),
        },
        required=["mode", "target_scopes"],
    )


def movement_sparsity_schema() -> dict[str, Any]:
    """Movement pruning for transformers: masks learned from weight movement during fine-tuning."""
    return closed_object(
        "Movement sparsity: learns importance scores from how weights move during fine-tuning and masks "
        "the unimportant ones, optionally in structured blocks.",
        {
            "algorithm": const("movement_sparsity", "Selects this algorithm."),
            "params": closed_object(
                "Movement sparsity schedule parameters.",
                {
                    "warmup_start_epoch": integer(
                        "Epoch at which the importance regularization starts to grow.", minimum=0
                    ),
                    "warmup_end_epoch": integer(
                        "Epoch at which the importance threshold and regularization reach their final values.",
                        minimum=0,
                    ),
                    "importance_regularization_factor": number(
                        "Final weight of the importance regularization loss.", minimum=0
                    ),
                    "enable_structured_masking": boolean(
                        "Whether masks are turned into structured (row/column) masks after warm-up.",
                        default=True,
                    ),
                    "power": number("Exponent of the warm-up schedule.", default=3.0, exclusive_minimum=0),
                    "init_importance_threshold": number(
                        "Importance threshold at the start of warm-up; derived from the scores when unset."
                    ),
                    "final_importance_threshold": number(
                        "Importance threshold at the end of warm-up.", default=0.0
                    ),
                    "steps_per_epoch": integer(
                        "Optimizer steps per epoch; inferred from the first epoch when unset.", minimum=1
                    ),
                },
            ),
            "sparse_structure_by_scopes": array(
                "Sparsity structures of specific layers; other layers use 'fine' masks.",
                _sparse_structure_entry(),
            ),
            **scoping_properties("movement sparsity"),
            "compression_lr_multiplier": compression_lr_multiplier("the importance scores"),
        },
    )
