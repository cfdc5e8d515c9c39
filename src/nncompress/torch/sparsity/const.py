"""``const_sparsity``: keep the zeros the weights already have (fine-tuning a sparse model).

At creation every sparsified weight gets a fixed mask ``1[w != 0]``; the masked weights get no
gradient and are multiplied by zero in the forward, so no optimizer step (momentum or weight
decay included) can bring them back. Nothing is scheduled; ``strip`` writes the zeros back into
the weights. ``ctrl.compression_rate`` reads the fraction of zeros; it cannot be set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nncompress.api.compression import CompressionStage, NNCFStatistics
from nncompress.errors import ConfigError
from nncompress.sparsity.statistics import ConstSparsityStatistics
from nncompress.torch.algorithms.base import BuildContext
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.sparsity.base import SparsifiedWeight, SparsityBuilderBase, SparsityControllerBase
from nncompress.torch.sparsity.masks import BinaryMask

__all__ = ["ConstSparsityBuilder", "ConstSparsityController"]

ALGORITHM = "const_sparsity"


@register_algorithm_builder(ALGORITHM)
class ConstSparsityBuilder(SparsityBuilderBase):
    """Builds const sparsity from a ``const_sparsity`` section (see the module docstring)."""

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)

    def create_mask(self, weight: SparsifiedWeight, param: nn.Parameter) -> BinaryMask:
        return BinaryMask(tuple(param.shape), ALGORITHM)

    @torch.no_grad()
    def initialize(self, model: nn.Module) -> None:
        for w, mask in zip(self.weights, self.masks):
            mask.set_mask((model.get_parameter(w.param).detach() != 0).float())  # type: ignore[attr-defined]

    def build_controller(self, model: nn.Module, context: BuildContext) -> ConstSparsityController:
        ctrl = ConstSparsityController(model, ALGORITHM, self.get_state(), context, self.weights, self.masks)
        ctrl.skipped = dict(self.skipped)
        return ctrl


class ConstSparsityController(SparsityControllerBase):
    """Keeps the masks fixed; reports the zeros (see the module docstring)."""

    @property
    def compression_rate(self) -> float:
        return self.reached_sparsity

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        raise ConfigError(
            [
                (
                    "compression.algorithm",
                    f"const_sparsity keeps the zeros the weights already have; its compression rate "
                    f"({self.reached_sparsity:.3f}) cannot be set to {value}",
                )
            ]
        )

    def freeze(self) -> None:
        self.frozen = True  # the masks never change anyway

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        nncf_stats = NNCFStatistics()
        nncf_stats.register(ALGORITHM, ConstSparsityStatistics(self.model_statistics()))
        return nncf_stats
