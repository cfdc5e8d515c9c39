"""Schema of ``accuracy_aware_training``: the training loop that keeps accuracy within a budget."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.types import closed_object, integer, number, string

AA_MODES = ["early_exit", "adaptive_compression_level"]

# Parameters that only the adaptive mode reads; semantic checks reject them in early_exit mode.
ADAPTIVE_ONLY_PARAMS = (
    "initial_training_phase_epochs",
    "initial_compression_rate_step",
    "compression_rate_step_reduction_factor",
    "lr_reduction_factor",
    "minimal_compression_rate_step",
    "patience_epochs",
)
DEGRADATION_PARAMS = ("maximal_relative_accuracy_degradation", "maximal_absolute_accuracy_degradation")


def accuracy_aware_training_schema() -> dict[str, Any]:
    """Mode plus parameters; exactly one degradation budget is required (checked semantically)."""
    return closed_object(
        "Accuracy-aware training: fine-tunes the compressed model until its accuracy is within the "
        "allowed degradation, and in the adaptive mode searches the highest compression level that stays "
        "within it.",
        {
            "mode": string(
                "'early_exit' stops fine-tuning as soon as accuracy is within budget; "
                "'adaptive_compression_level' also adjusts the compression level.",
                enum=AA_MODES,
            ),
            "params": closed_object(
                "Accuracy-aware training parameters.",
                {
                    "maximal_relative_accuracy_degradation": number(
                        "Allowed accuracy drop in percent of the original model's accuracy.",
                        minimum=0,
                    ),
                    "maximal_absolute_accuracy_degradation": number(
                        "Allowed accuracy drop in absolute units of the metric.", minimum=0
                    ),
                    "maximal_total_epochs": integer(
                        "Upper bound on the total number of fine-tuning epochs.", default=10000, minimum=1
                    ),
                    "initial_training_phase_epochs": integer(
                        "Adaptive mode: epochs of fine-tuning at the initial compression level.",
                        default=5,
                        minimum=0,
                    ),
                    "initial_compression_rate_step": number(
                        "Adaptive mode: first step by which the compression level is changed.",
                        default=0.1,
                        exclusive_minimum=0,
                        maximum=1,
                    ),
                    "compression_rate_step_reduction_factor": number(
                        "Adaptive mode: factor applied to the step when the search changes direction.",
                        default=0.5,
                        exclusive_minimum=0,
                        maximum=1,
                    ),
                    "lr_reduction_factor": number(
                        "Adaptive mode: factor applied to the learning rate when the step is reduced.",
                        default=0.5,
                        exclusive_minimum=0,
                        maximum=1,
                    ),
                    "minimal_compression_rate_step": number(
                        "Adaptive mode: the search stops once the step falls below this value.",
                        default=0.025,
                        exclusive_minimum=0,
                        maximum=1,
                    ),
                    "patience_epochs": integer(
                        "Adaptive mode: epochs of fine-tuning at each compression level.",
                        default=3,
                        minimum=1,
                    ),
                },
            ),
        },
        required=["mode", "params"],
    )
