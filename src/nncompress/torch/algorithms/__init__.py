"""Training-time compression algorithms for torch models, found by config key in a registry.

``create_compressed_model`` looks up each section of ``config["compression"]`` with
:func:`get_algorithm_builder`; a builder modifies the wrapped model (quantizers, masks...) and
builds the controller of its algorithm. Several algorithms combine into one
:class:`~nncompress.torch.algorithms.composite.PTCompositeCompressionAlgorithmController`.
"""

from __future__ import annotations

from nncompress.torch.algorithms.base import (
    BuildContext,
    PTCompressionAlgorithmBuilder,
    PTCompressionAlgorithmController,
    ZeroCompressionLoss,
)
from nncompress.torch.algorithms.composite import PTCompositeCompressionAlgorithmController
from nncompress.torch.algorithms.registry import (
    get_algorithm_builder,
    register_algorithm_builder,
    registered_algorithms,
    unregister_algorithm_builder,
)

__all__ = [
    "BuildContext",
    "PTCompositeCompressionAlgorithmController",
    "PTCompressionAlgorithmBuilder",
    "PTCompressionAlgorithmController",
    "ZeroCompressionLoss",
    "get_algorithm_builder",
    "register_algorithm_builder",
    "registered_algorithms",
    "unregister_algorithm_builder",
]
