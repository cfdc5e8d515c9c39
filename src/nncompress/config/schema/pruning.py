"""Schema of the ``filter_pruning`` algorithm section."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.common import bn_only_initializer, scoping_properties
from nncompress.config.schema.types import boolean, closed_object, const, integer, number, string


def _legr_params() -> dict[str, Any]:
    return closed_object(
        "Settings of the LeGR evolutionary search that learns per-layer ranking coefficients "
        "(used when interlayer_ranking_type is 'learned_ranking').",
        {
            "generations": integer(
                "Number of generations of the evolutionary search.", default=400, minimum=1
            ),
            "train_steps": integer(
                "Number of training steps used to evaluate each candidate.", default=200, minimum=1
            ),
            "max_pruning": number(
                "Largest pruning level tried while learning the coefficients.",
                default=0.8,
                minimum=0,
                exclusive_maximum=1,
            ),
            "random_seed": integer("Seed of the search's random generator.", default=42, minimum=0),
            "population_size": integer("Number of candidates per generation.", default=64, minimum=1),
            "num_samples": integer("Number of candidates sampled for mutation.", default=16, minimum=1),
            "mutate_percent": number(
                "Fraction of the coefficients changed in each mutation.", default=0.1, minimum=0, maximum=1
            ),
            "scale_sigma": number(
                "Standard deviation of the multiplicative mutation noise.", default=1, exclusive_minimum=0
            ),
        },
    )


def filter_pruning_schema() -> dict[str, Any]:
    """Structured pruning that removes whole convolution filters (output channels)."""
    return closed_object(
        "Removes the least important convolution filters (output channels), together with the input "
        "channels of the layers that consume them, following a schedule during fine-tuning.",
        {
            "algorithm": const("filter_pruning", "Selects this algorithm."),
            "initializer": bn_only_initializer(),
            "pruning_init": number(
                "Fraction of filters pruned right at the start, before the schedule runs.",
                default=0.0,
                minimum=0,
                exclusive_maximum=1,
            ),
            "params": closed_object(
                "Filter pruning parameters.",
                {
                    "filter_importance": string(
                        "How filter importance is measured: 'L2' or 'L1' norm of the weights, or "
                        "'geometric_median' distance.",
                        default="L2",
                        enum=["L2", "L1", "geometric_median"],
                    ),
                    "pruning_target": number(
                        "Fraction of filters to prune at the end of the schedule.",
                        default=0.5,
                        minimum=0,
                        exclusive_maximum=1,
                    ),
                    "pruning_flops_target": number(
                        "Fraction of FLOPs to remove at the end of the schedule; when set it takes "
                        "precedence over pruning_target.",
                        minimum=0,
                        exclusive_maximum=1,
                    ),
                    "pruning_steps": integer(
                        "Number of epochs over which the pruning level grows from pruning_init to the target.",
                        default=100,
                        minimum=1,
                    ),
                    "schedule": string(
                        "How the pruning level grows: 'exponential', 'exponential_with_bias', or 'baseline' "
                        "(jump to the target after num_init_steps).",
                        default="exponential",
                        enum=["exponential", "exponential_with_bias", "baseline"],
                    ),
                    "num_init_steps": integer(
                        "Number of epochs trained at pruning_init before the schedule starts.",
                        default=0,
                        minimum=0,
                    ),
                    "interlayer_ranking_type": string(
                        "How filters of different layers are compared with all_weights: 'unweighted_ranking' "
                        "(importance of weights normalized per layer) or 'learned_ranking' (LeGR: a learned "
                        "affine transform of each layer's importance; needs LeGR init args).",
                        default="unweighted_ranking",
                        enum=["unweighted_ranking", "learned_ranking"],
                    ),
                    "all_weights": boolean(
                        "Whether the pruning level applies to all filters together (true) or to each "
                        "layer separately (false).",
                        default=False,
                    ),
                    "prune_first_conv": boolean(
                        "Whether the first convolution of the model may be pruned.", default=False
                    ),
                    "prune_downsample_convs": boolean(
                        "Whether downsampling (stride > 1) convolutions may be pruned.", default=False
                    ),
                    "prune_batch_norms": boolean(
                        "Whether the BatchNorm channels that follow pruned filters are removed too.",
                        default=True,
                    ),
                    "legr_params": _legr_params(),
                    "save_ranking_coeffs_path": string(
                        "File to which learned ranking coefficients are saved."
                    ),
                    "load_ranking_coeffs_path": string(
                        "File from which learned ranking coefficients are loaded instead of being learned."
                    ),
                },
            ),
            **scoping_properties("filter pruning"),
        },
    )
