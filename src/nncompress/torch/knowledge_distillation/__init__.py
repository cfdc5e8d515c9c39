"""Knowledge distillation for torch: the ``knowledge_distillation`` compression section.

The original model, frozen, is the teacher; the compressed model's training forward also runs
it on the same inputs, and ``ctrl.loss()`` returns the distillation loss (``mse`` or
``softmax``, see :mod:`.loss`). Combine it with quantization or pruning in one config::

    "compression": [{"algorithm": "quantization"},
                    {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2}]
"""

from nncompress.torch.knowledge_distillation.builder import KnowledgeDistillationBuilder
from nncompress.torch.knowledge_distillation.controller import KnowledgeDistillationController
from nncompress.torch.knowledge_distillation.loss import (
    DistillationError,
    KnowledgeDistillationLoss,
    distillation_loss,
)

__all__ = [
    "DistillationError",
    "KnowledgeDistillationBuilder",
    "KnowledgeDistillationController",
    "KnowledgeDistillationLoss",
    "distillation_loss",
]
