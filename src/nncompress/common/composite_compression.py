"""``nncf.common.composite_compression``: several algorithms behind one controller."""

from __future__ import annotations

from nncompress.api.composite import (
    CompositeCompressionAlgorithmController,
    CompositeCompressionLoss,
    CompositeCompressionScheduler,
)

__all__ = [
    "CompositeCompressionAlgorithmController",
    "CompositeCompressionLoss",
    "CompositeCompressionScheduler",
]
