"""The ``knowledge_distillation`` section: a frozen teacher and a distillation loss.

What the builder does with the section (NNCF 2.x semantics unless noted):

- ``type`` (``mse`` or ``softmax``, required), ``scale`` and ``temperature`` (defaults from the
  schema) choose the loss (:mod:`.loss`).
- The teacher is a deep copy of the original model, taken before any other algorithm touches
  it (this builder has the lowest ``priority``): the user's class without hooks, quantizers or
  masks, with ``requires_grad`` off, on the model's device, in eval mode except BatchNorm layers,
  which follow the student's mode (see :func:`.loss.freeze_teacher`; NNCF runs the whole teacher
  in train mode, dropout included).
- The teacher is run once on the example inputs: a model with no output the loss can use
  (``softmax`` needs a 2-D ``[batch, classes]`` floating-point output, ``mse`` one with 2 or
  more dimensions) is a ``ConfigError`` at the section's ``type``.
- Nothing is inserted into the model, so the algorithm combines with any other one. With a
  compression state the teacher is again the model passed to ``create_compressed_model``: pass
  the original (float) model, then load the compressed ``state_dict`` into the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nncompress.errors import CompressionStateError, ConfigError
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmBuilder
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.initialization import model_device, to_device
from nncompress.torch.knowledge_distillation.controller import ALGORITHM, KnowledgeDistillationController
from nncompress.torch.knowledge_distillation.loss import (
    KD_TYPES,
    KnowledgeDistillationLoss,
    flatten_outputs,
    freeze_teacher,
    usable_pairs,
)
from nncompress.torch.nncf_network import unwrap_model

__all__ = ["KnowledgeDistillationBuilder"]

STATE_VERSION = 1


@register_algorithm_builder(ALGORITHM)
class KnowledgeDistillationBuilder(PTCompressionAlgorithmBuilder):
    """Builds knowledge distillation from a ``knowledge_distillation`` section."""

    # before every other algorithm: the teacher must be the model as the user gave it
    priority = 0

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.kd_type = self._checked_type()
        self.scale = self._checked_positive("scale")
        self.temperature = self._checked_positive("temperature")
        self.teacher: nn.Module | None = None

    def _path(self, key: str) -> str:
        compression = self.config.get("compression") if isinstance(self.config, Mapping) else None
        if isinstance(compression, list):
            for i, section in enumerate(compression):
                if section is self.section:
                    return f"compression[{i}].{key}"
        return f"compression.{key}"

    def _checked_type(self) -> str:
        value = self.section.get("type")
        if value not in KD_TYPES:
            what = "is missing" if value is None else f"is {value!r}"
            raise ConfigError([(self._path("type"), f"{what}; expected one of: {', '.join(KD_TYPES)}")])
        return str(value)

    def _checked_positive(self, key: str) -> float:
        value = self.param(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError([(self._path(key), f"must be a finite number > 0, got {value!r}")])
        return float(value)

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION}

    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        if not self.should_init:
            version = (self._state or {}).get("version")
            if version != STATE_VERSION:
                raise CompressionStateError(
                    f"{ALGORITHM}: builder state version {version!r} is not supported (expected {STATE_VERSION})"
                )
        teacher = freeze_teacher(unwrap_model(model))  # a deep copy of the user's model, no hooks
        self._check_outputs(teacher, context)
        self.teacher = teacher

    def _check_outputs(self, teacher: nn.Module, context: BuildContext) -> None:
        device = model_device(teacher)
        with torch.no_grad():
            output = teacher(
                *to_device(context.example_args, device), **to_device(context.example_kwargs, device)
            )
        if not usable_pairs(output, output, self.kd_type, need_grad=False):
            need = (
                "a 2-D floating-point [batch, classes] output"
                if self.kd_type == "softmax"
                else "a floating-point output with 2 or more dimensions"
            )
            shapes = [
                tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else type(leaf).__name__
                for _, leaf in flatten_outputs(output)
            ]
            raise ConfigError(
                [
                    (
                        self._path("type"),
                        f"'{self.kd_type}' distillation needs {need}; {type(teacher).__name__} returns {shapes}",
                    )
                ]
            )

    def build_controller(self, model: nn.Module, context: BuildContext) -> KnowledgeDistillationController:
        if self.teacher is None:
            raise CompressionStateError(f"{ALGORITHM}: build_controller called before apply_to")
        loss = KnowledgeDistillationLoss(model, self.teacher, self.kd_type, self.scale, self.temperature)
        return KnowledgeDistillationController(model, loss, context, self.get_state())
