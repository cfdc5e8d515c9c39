"""Schema of the ``knowledge_distillation`` algorithm section."""

from __future__ import annotations

from typing import Any

from nncompress.config.schema.types import closed_object, const, number, string


def knowledge_distillation_schema() -> dict[str, Any]:
    """Adds a loss that pulls the compressed model's outputs towards the original model's."""
    return closed_object(
        "Knowledge distillation: the uncompressed model acts as a teacher, and a loss term pulls the "
        "compressed model's outputs towards the teacher's.",
        {
            "algorithm": const("knowledge_distillation", "Selects this algorithm."),
            "type": string(
                "Distillation loss: 'mse' on raw outputs, or 'softmax' (cross-entropy between "
                "temperature-softened output distributions).",
                enum=["mse", "softmax"],
            ),
            "scale": number(
                "Weight of the distillation loss relative to the task loss.", default=1.0, exclusive_minimum=0
            ),
            "temperature": number(
                "Softmax temperature of the 'softmax' loss; higher values soften the distributions.",
                default=1.0,
                exclusive_minimum=0,
            ),
        },
        required=["type"],
    )
