"""The ``filter_pruning`` section: channel groups, masks, schedule, controller.

What the builder does with the section (NNCF 2.x semantics unless noted):

- ``params`` are read with their schema defaults (:class:`~nncompress.pruning.params.
  FilterPruningParams`); a level outside [0, 1) is a ``ConfigError``.
- ``interlayer_ranking_type: learned_ranking`` (LeGR): before ``pruning_init`` is applied, the
  per-layer ranking coefficients are loaded (``load_ranking_coeffs_path``) or learned by the
  evolutionary search (:mod:`nncompress.torch.pruning.legr`, which needs ``LeGRInitArgs`` from
  ``register_default_init_args(..., train_steps_fn=, val_loader=, validate_fn=)``), saved to
  ``save_ranking_coeffs_path`` if given, and kept in the compression state (a model rebuilt from
  the state ranks its filters the same way without searching again).
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

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from nncompress.errors import CompressionStateError, ConfigError, PruningError
from nncompress.pruning.params import ALGORITHM, FilterPruningParams
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmBuilder
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.pruning.controller import FilterPruningController
from nncompress.torch.pruning.engine import TorchFilterPruning

__all__ = ["FilterPruningBuilder"]

logger = logging.getLogger("nncompress")

STATE_VERSION = 1


@register_algorithm_builder(ALGORITHM)
class FilterPruningBuilder(PTCompressionAlgorithmBuilder):
    """Builds filter pruning from a ``filter_pruning`` section (see the module docstring)."""

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.params = FilterPruningParams.from_section(section)
        self.engine: TorchFilterPruning | None = None
        self.legr_rewards: list[float] = []  # the reward of every LeGR candidate, when it searched

    def _mask_ids(self) -> list[str]:
        assert self.engine is not None
        return [
            f"{p.target.node}|{p.target.type.value}{p.target.port}|{p.role}" for p in self.engine.mask_points
        ]

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "masks": self._mask_ids() if self.engine is not None else [],
        }
        if self.engine is not None and self.engine.ranking_coeffs is not None:
            state["ranking_coeffs"] = {k: [a, b] for k, (a, b) in self.engine.ranking_coeffs.items()}
        return state

    def apply_to(self, model: nn.Module, context: BuildContext) -> None:
        self.engine = TorchFilterPruning(model, context.graph, self.params, masked=True)
        self.engine.require_prunable()
        if not self.should_init:
            self._check_state()
            if self.params.learned_ranking:
                self.engine.ranking_coeffs = self._coeffs_from_state()
            return
        if self.params.learned_ranking:
            self.engine.ranking_coeffs = self._ranking_coeffs(model)
        if self.params.pruning_flops_target is not None:
            # fail now, not after epochs of training, when the target is out of reach
            self.engine.select_flops(self.params.pruning_flops_target)
            if self.params.pruning_init > 0:
                self.engine.apply(self.engine.select_flops(self.params.pruning_init))
        elif self.params.pruning_init > 0:
            self.engine.apply(self.engine.select(self.params.pruning_init))

    # -- LeGR ------------------------------------------------------------------------------------
    def _ranking_coeffs(self, model: nn.Module) -> dict[str, tuple[float, float]]:
        from nncompress.pruning.legr import load_ranking_coeffs, save_ranking_coeffs
        from nncompress.torch.initialization import LeGRInitArgs
        from nncompress.torch.pruning.legr import learn_ranking_coeffs, ranked_layers

        assert self.engine is not None and self.params.legr is not None
        layers = list(ranked_layers(self.engine))
        params = f"compression.{ALGORITHM}.params"
        if self.params.load_ranking_coeffs_path:
            coeffs = load_ranking_coeffs(
                self.params.load_ranking_coeffs_path, layers, f"{params}.load_ranking_coeffs_path"
            )
            logger.info(
                "filter_pruning: ranking coefficients loaded from %s", self.params.load_ranking_coeffs_path
            )
        else:
            has = getattr(self.config, "has_extra_struct", None)
            if has is None or not has(LeGRInitArgs):
                raise ConfigError(
                    [
                        (
                            f"{params}.interlayer_ranking_type",
                            "'learned_ranking' learns its coefficients by training: register LeGRInitArgs with "
                            "register_default_init_args(config, train_loader, train_steps_fn=..., "
                            "val_loader=..., validate_fn=...), or give params.load_ranking_coeffs_path",
                        )
                    ]
                )
            coeffs, rewards = learn_ranking_coeffs(
                self.engine,
                model,
                self.config.get_extra_struct(LeGRInitArgs),
                self.params.legr,
                target=self.params.target,
                prune_flops=self.params.pruning_flops_target is not None,
            )
            self.legr_rewards = rewards
        if self.params.save_ranking_coeffs_path:
            save_ranking_coeffs(self.params.save_ranking_coeffs_path, coeffs)
        return coeffs

    def _coeffs_from_state(self) -> dict[str, tuple[float, float]]:
        from nncompress.pruning.legr import check_ranking_coeffs
        from nncompress.torch.pruning.legr import ranked_layers

        assert self.engine is not None
        saved = (self._state or {}).get("ranking_coeffs")
        if saved is None:
            raise CompressionStateError(
                f"{ALGORITHM}: the config asks for learned_ranking but the compression state has no "
                "ranking coefficients (it was saved with another ranking)"
            )
        try:
            return check_ranking_coeffs(saved, list(ranked_layers(self.engine)), f"{ALGORITHM} state")
        except ConfigError as exc:
            raise CompressionStateError(f"{ALGORITHM}: {exc.problems[0][1]}") from None

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
        ctrl = FilterPruningController(
            model,
            self.engine,
            self.params,
            context,
            self.get_state(),
            bn_adaptation=self._bn_adaptation_args(),
        )
        ctrl.legr_rewards = list(self.legr_rewards)
        return ctrl

    def _bn_adaptation_args(self) -> tuple[Any, int] | None:
        from nncompress.torch.initialization import BNAdaptationInitArgs

        samples = self.bn_adaptation_samples()
        has = getattr(self.config, "has_extra_struct", None)
        if samples <= 0 or has is None or not has(BNAdaptationInitArgs):
            return None
        return self.config.get_extra_struct(BNAdaptationInitArgs), samples
