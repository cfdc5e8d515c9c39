"""The ``filter_pruning`` section: channel groups, masks, schedule, controller.

What the builder does with the section (NNCF 2.x semantics unless noted):

- ``params`` are read with their schema defaults (:class:`~nncompress.pruning.params.
  FilterPruningParams`); ``interlayer_ranking_type: learned_ranking`` (LeGR) and its keys are
  refused with a ``ConfigError``, as is a level outside [0, 1).
- The traced graph is split into channel groups (:func:`nncompress.pruning.analyze_channels`);
  ``ignored_scopes`` / ``target_scopes`` (names or ``{re}`` patterns, NNCF spellings accepted)
  keep the filters of the layers they name. A model with no prunable group is an error that
  prints the groups and why each is left out.
- Masks (:class:`~nncompress.torch.pruning.masks.ChannelMask`) go on the weights of every layer
  touching a prunable channel and start at ``pruning_init``; with ``pruning_flops_target`` the
  builder checks at once that the target can be reached.
- With a compression state nothing is selected: the masks come back with the ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from nncompress.errors import CompressionStateError, PruningError
from nncompress.pruning.params import ALGORITHM, FilterPruningParams
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmBuilder
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.pruning.controller import FilterPruningController
from nncompress.torch.pruning.engine import TorchFilterPruning

__all__ = ["FilterPruningBuilder"]

STATE_VERSION = 1


@register_algorithm_builder(ALGORITHM)
class FilterPruningBuilder(PTCompressionAlgorithmBuilder):
    """Builds filter pruning from a ``filter_pruning`` section (see the module docstring)."""

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.params = FilterPruningParams.from_section(section)
        self.engine: TorchFilterPruning | None = None

    def _mask_ids(self) -> list[str]:
        assert self.engine is not None
        return [
            f"{p.target.node}|{p.target.type.value}{p.target.port}|{p.role}" for p in self.engine.mask_points
        ]

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "masks": self._mask_ids() if self.engine is not None else []}

    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        self.engine = TorchFilterPruning(model, context.graph, self.params, masked=True)
        self.engine.require_prunable()
        if not self.should_init:
            self._check_state()
            return
        if self.params.pruning_flops_target is not None:
            # fail now, not after epochs of training, when the target is out of reach
            self.engine.select_flops(self.params.pruning_flops_target)
            if self.params.pruning_init > 0:
                self.engine.apply(self.engine.select_flops(self.params.pruning_init))
        elif self.params.pruning_init > 0:
            self.engine.apply(self.engine.select(self.params.pruning_init))

    def _check_state(self) -> None:
        state = self._state or {}
        if state.get("version") != STATE_VERSION:
            raise CompressionStateError(
                f"{ALGORITHM}: builder state version {state.get('version')!r} is not supported (expected {STATE_VERSION})"
            )
        saved, here = list(state.get("masks", [])), self._mask_ids()
        if saved != here:
            missing = sorted(set(saved) - set(here))[:3]
            extra = sorted(set(here) - set(saved))[:3]
            raise CompressionStateError(
                f"{ALGORITHM}: the saved masks do not fit this model ({len(saved)} saved, {len(here)} here; "
                f"not here: {missing}; new: {extra})"
            )

    def build_controller(self, model: nn.Module, context: BuildContext) -> FilterPruningController:
        if self.engine is None:
            raise PruningError(f"{ALGORITHM}: build_controller called before apply_to")
        return FilterPruningController(
            model,
            self.engine,
            self.params,
            context,
            self.get_state(),
            bn_adaptation=self._bn_adaptation_args(),
        )

    def _bn_adaptation_args(self) -> tuple[Any, int] | None:
        from nncompress.torch.initialization import BNAdaptationInitArgs

        samples = self.bn_adaptation_samples()
        has = getattr(self.config, "has_extra_struct", None)
        if samples <= 0 or has is None or not has(BNAdaptationInitArgs):
            return None
        return self.config.get_extra_struct(BNAdaptationInitArgs), samples
