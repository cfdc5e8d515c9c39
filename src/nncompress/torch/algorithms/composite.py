"""The torch composite controller: several algorithms on one model, exported once."""

from __future__ import annotations

import torch
from torch import nn

from nncompress.api.composite import CompositeCompressionAlgorithmController
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmController
from nncompress.torch.initialization import model_device

__all__ = ["PTCompositeCompressionAlgorithmController"]


class PTCompositeCompressionAlgorithmController(CompositeCompressionAlgorithmController):
    """Children are torch controllers of the same model; ``loss()`` is a torch scalar (zero when
    there are no children, as for a config without ``compression``). ``strip()`` applies every
    child's strip in turn to one copy (see :meth:`CompositeCompressionAlgorithmController.strip_model`);
    ``export_model`` exports that stripped copy."""

    def __init__(self, target_model: nn.Module, context: BuildContext, children=()):
        super().__init__(target_model, children)
        self._example_args = tuple(context.example_args)
        self._example_kwargs = dict(context.example_kwargs)

    def _zero_loss(self) -> torch.Tensor:
        return torch.zeros([], device=model_device(self.model))

    # the model every child has stripped, on a copy: filter pruning cuts the pruned channels out
    # (and the per-channel quantizers on them), quantization keeps its enabled fake quantizers,
    # so pruning + quantization gives a smaller INT8 model
    export_stripped = True
    export_model = PTCompressionAlgorithmController.export_model
