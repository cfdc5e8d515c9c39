"""Schema of the top-level ``bootstrapNAS`` section (super-network training and sub-network search)."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.common import batchnorm_adaptation, ignored_scopes, target_scopes
from nncompress.config.schema.types import (
    array,
    boolean,
    closed_object,
    integer,
    number,
    one_or_list,
    string,
)

ELASTICITY_DIMS = ["width", "depth", "kernel"]


def _dims(description: str) -> dict[str, Any]:
    return array(description, string("An elasticity dimension.", enum=ELASTICITY_DIMS), unique=True)


def _stage() -> dict[str, Any]:
    return closed_object(
        "One stage of super-network training.",
        {
            "train_dims": _dims(
                "Elasticity dimensions sampled during this stage; the others stay at maximum."
            ),
            "epochs": integer("Length of the stage in epochs.", minimum=0),
            "depth_indicator": integer(
                "Maximum number of blocks per group that may be skipped during this stage.", minimum=1
            ),
            "width_indicator": integer(
                "Maximum number of width values per layer that may be sampled during this stage.", minimum=1
            ),
            "reorg_weights": boolean(
                "Whether filters are reordered by importance at the start of the stage."
            ),
            "bn_adapt": boolean("Whether BatchNorm adaptation runs at the start of the stage."),
            "init_lr": number(
                "Learning rate at the start of the stage; setting it resets the learning rate.", minimum=0
            ),
            "epochs_lr": integer("Number of epochs of the stage's learning-rate schedule.", minimum=1),
            "sample_rate": integer("Number of iterations between sub-network re-sampling.", minimum=1),
        },
    )


def _elasticity() -> dict[str, Any]:
    return closed_object(
        "Which parts of the network may shrink and by how much.",
        {
            "depth": closed_object(
                "Elastic depth: blocks that may be skipped.",
                {
                    "skipped_blocks": array(
                        "Blocks that may be skipped, each a [start node, end node] pair of scopes.",
                        array(
                            "A [start, end] pair of node scopes.",
                            {"type": "string"},
                            min_items=2,
                            max_items=2,
                        ),
                    ),
                    "min_block_size": integer(
                        "Automatic block search: minimal number of operations in a skippable block.",
                        minimum=1,
                    ),
                    "max_block_size": integer(
                        "Automatic block search: maximal number of operations in a skippable block.",
                        minimum=1,
                    ),
                    "hw_fused_ops": boolean(
                        "Automatic block search: keep operations that hardware fuses in one block."
                    ),
                },
            ),
            "width": closed_object(
                "Elastic width: number of output channels per layer.",
                {
                    "min_width": integer(
                        "Smallest number of output channels of an elastic layer.", minimum=1
                    ),
                    "min_out_channels": integer(
                        "Older name of min_width, kept for configs written for earlier releases.", minimum=1
                    ),
                    "max_num_widths": integer(
                        "Maximum number of width values per layer; -1 means no limit.", minimum=-1
                    ),
                    "width_step": integer("Step between consecutive width values.", minimum=1),
                    "width_multipliers": array(
                        "Width values as multipliers of the original width.",
                        number("A width multiplier.", exclusive_minimum=0, maximum=1),
                        min_items=1,
                    ),
                    "filter_importance": string(
                        "Filter importance used to reorder weights: 'L1', 'L2', 'geometric_median' or 'external'.",
                        enum=["L1", "L2", "geometric_median", "external"],
                    ),
                    "external_importance_path": string(
                        "File with per-node weight importance tensors, used when filter_importance is 'external'."
                    ),
                },
            ),
            "kernel": closed_object(
                "Elastic kernel size.",
                {
                    "max_num_kernels": integer(
                        "Maximum number of kernel sizes per layer; -1 means no limit.", minimum=-1
                    ),
                },
            ),
            "available_elasticity_dims": _dims("Elasticity dimensions enabled for sub-network sampling."),
            "ignored_scopes": ignored_scopes("elasticity"),
            "target_scopes": target_scopes("elasticity"),
        },
    )


def _training() -> dict[str, Any]:
    return closed_object(
        "Super-network training.",
        {
            "algorithm": string(
                "Super-network training strategy.",
                default="progressive_shrinking",
                enum=["progressive_shrinking"],
            ),
            "progressivity_of_elasticity": _dims("Order in which elasticity dimensions are enabled."),
            "batchnorm_adaptation": batchnorm_adaptation(),
            "schedule": closed_object(
                "Training stages.",
                {"list_stage_descriptions": array("The stages, in order.", _stage())},
            ),
            "elasticity": _elasticity(),
            "lr_schedule": closed_object(
                "Global learning-rate schedule; stage learning rates are used when unset.",
                {
                    "params": closed_object(
                        "Learning-rate schedule parameters.",
                        {"base_lr": number("Base learning rate.", minimum=0)},
                    )
                },
            ),
            "train_steps": integer("Number of samples used in each training epoch.", minimum=1),
        },
    )


def _search() -> dict[str, Any]:
    return closed_object(
        "Search of the best sub-networks of the trained super-network.",
        {
            "algorithm": string("Evolutionary search algorithm.", default="NSGA2", enum=["NSGA2", "RNSGA2"]),
            "batchnorm_adaptation": batchnorm_adaptation(),
            "num_evals": integer("Number of sub-network evaluations the search may use.", minimum=1),
            "num_constraints": integer("Number of constraints of the search problem.", minimum=0),
            "population": integer("Population size of the evolutionary search.", minimum=1),
            "crossover_prob": number("Crossover probability.", minimum=0, maximum=1),
            "crossover_eta": number("Distribution index of the crossover.", minimum=0),
            "mutation_eta": number("Distribution index of the mutation.", minimum=0),
            "mutation_prob": number("Mutation probability.", minimum=0, maximum=1),
            "acc_delta": number("Tolerated absolute accuracy drop of a sub-network.", minimum=0),
            "ref_acc": number("Accuracy of the original pre-trained model.", minimum=0),
            "aspiration_points": array(
                "RNSGA2: reference points of the preferred part of the Pareto front.", {"type": "number"}
            ),
            "epsilon": number("RNSGA2: epsilon distance between surviving solutions.", minimum=0),
            "weights": number("RNSGA2: weight of the objectives.", minimum=0),
            "extreme_points_as_ref_points": boolean(
                "RNSGA2: use the extreme points of the front as aspiration points."
            ),
            "compression": one_or_list(
                "Compression applied while evaluating sub-networks (knowledge distillation only).",
                {"type": "object", "$ref": "#/$defs/knowledge_distillation"},
                min_items=0,
            ),
        },
    )


def bootstrap_nas_schema() -> dict[str, Any]:
    """BootstrapNAS: train a weight-sharing super-network, then search sub-networks."""
    return closed_object(
        "BootstrapNAS: trains a weight-sharing super-network from the model and searches it for "
        "sub-networks that trade accuracy for speed.",
        {"training": _training(), "search": _search()},
    )
