"""The controller of knowledge distillation: its loss, and a strip that drops the teacher."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmController
from nncompress.torch.knowledge_distillation.loss import DistillationHook, KnowledgeDistillationLoss

__all__ = ["ALGORITHM", "KnowledgeDistillationController", "remove_distillation_hooks"]

ALGORITHM = "knowledge_distillation"


def remove_distillation_hooks(model: nn.Module) -> int:
    """Remove every :class:`DistillationHook` from ``model``'s forward hooks; returns how many."""
    ids = [hid for hid, hook in model._forward_hooks.items() if isinstance(hook, DistillationHook)]
    for hid in ids:
        model._forward_hooks.pop(hid, None)
        model._forward_hooks_with_kwargs.pop(hid, None)
        model._forward_hooks_always_called.pop(hid, None)
    return len(ids)


class KnowledgeDistillationController(PTCompressionAlgorithmController):
    """Knowledge distillation of one compressed model.

    ``loss()`` is the distillation loss of the latest training forward
    (:class:`~nncompress.torch.knowledge_distillation.loss.KnowledgeDistillationLoss`);
    ``teacher`` is the frozen original model. The teacher is not a submodule of the model: it is
    not in ``model.parameters()``, ``state_dict()``, the stripped model or any export.
    """

    def __init__(
        self,
        target_model: nn.Module,
        loss: KnowledgeDistillationLoss,
        context: BuildContext,
        builder_state: dict[str, Any],
    ):
        super().__init__(target_model, ALGORITHM, builder_state, context)
        self._loss = loss
        self._hook = DistillationHook(loss)
        target_model.register_forward_hook(self._hook, with_kwargs=True)

    @property
    def teacher(self) -> nn.Module:
        return self._loss.teacher

    def strip_model(self, model: nn.Module, do_copy: bool = False) -> nn.Module:
        """``model`` without distillation: its forward no longer runs the teacher (the teacher was
        never part of the model; copies of the model carry only an inert hook, removed here)."""
        if do_copy:
            model = copy.deepcopy(model)
        remove_distillation_hooks(model)
        if model is self.model:
            self._loss.clear()
        return model
