"""Quantization-aware training: the ``quantization`` builder (registered on import) and controller."""

from __future__ import annotations

from nncompress.torch.algorithms.quantization.builder import QuantizationBuilder, QuantizerRecord
from nncompress.torch.algorithms.quantization.controller import (
    QuantizationController,
    QuantizationStatistics,
    StagedQuantizationScheduler,
)

__all__ = [
    "QuantizationBuilder",
    "QuantizationController",
    "QuantizationStatistics",
    "QuantizerRecord",
    "StagedQuantizationScheduler",
]
