"""``magnitude_sparsity``: zero the weights of smallest importance, at a level raised by a schedule.

- ``sparsity_init`` is applied when the model is created (before BatchNorm adaptation).
- ``ctrl.scheduler.epoch_step()`` moves the level along ``params.schedule`` (``polynomial``,
  ``exponential`` or ``multistep``; see :mod:`nncompress.sparsity.schedule`) and recomputes the
  masks from the current weights, once per epoch (every ``step()`` with
  ``update_per_optimizer_step``); from ``sparsity_freeze_epoch`` on the masks stay as they are.
- Importance ``normed_abs`` (``|w| / ||w||``) or ``abs``; ``sparsity_level_setting_mode``
  ``global`` (one threshold for all layers: the sparsified weights together reach the level) or
  ``local`` (each layer reaches the level).
- ``ctrl.set_sparsity_level(level, target_sparsified_module_info=None)`` and
  ``ctrl.compression_rate = level`` set a level at once (the setter also re-estimates BatchNorm
  statistics when the config registered data for it); ``ctrl.compression_rate`` reads the level set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.api.compression import CompressionStage, NNCFStatistics
from nncompress.errors import CompressionStateError
from nncompress.sparsity.params import SparsityParams, check_sparsity_level
from nncompress.sparsity.schedule import make_sparsity_scheduler
from nncompress.sparsity.selection import importance, select_threshold, select_thresholds
from nncompress.sparsity.statistics import LayerThreshold, MagnitudeSparsityStatistics
from nncompress.torch.algorithms.base import BuildContext
from nncompress.torch.algorithms.registry import register_algorithm_builder
from nncompress.torch.sparsity.base import SparsifiedWeight, SparsityBuilderBase, SparsityControllerBase
from nncompress.torch.sparsity.masks import BinaryMask

__all__ = ["MagnitudeSparsityBuilder", "MagnitudeSparsityController", "compute_magnitude_masks"]

ALGORITHM = "magnitude_sparsity"


def _importances(model: nn.Module, weights: list[SparsifiedWeight], kind: str) -> list[np.ndarray]:
    return [importance(model.get_parameter(w.param).detach().cpu().numpy(), kind) for w in weights]


@torch.no_grad()
def compute_magnitude_masks(
    model: nn.Module,
    weights: list[SparsifiedWeight],
    masks: list[BinaryMask],
    level: float,
    *,
    mode: str,
    kind: str,
) -> list[float]:
    """Set every mask for ``level`` from the current weights; return the thresholds used."""
    values = _importances(model, weights, kind)
    thresholds = select_thresholds(values, level, mode)
    for value, threshold, mask in zip(values, thresholds, masks):
        keep = torch.from_numpy((value > threshold).astype(np.float32))
        mask.set_mask(keep.to(mask.binary_mask.device))
    return thresholds


@register_algorithm_builder(ALGORITHM)
class MagnitudeSparsityBuilder(SparsityBuilderBase):
    """Builds magnitude sparsity from a ``magnitude_sparsity`` section (see the module docstring)."""

    def __init__(self, config: Any, section: Mapping[str, Any]):
        super().__init__(config, section)
        self.params = SparsityParams.from_section(section, self.path)

    def create_mask(self, weight: SparsifiedWeight, param: nn.Parameter) -> BinaryMask:
        return BinaryMask(tuple(param.shape), ALGORITHM)

    def initialize(self, model: nn.Module) -> None:
        if self.params.sparsity_init > 0:
            compute_magnitude_masks(
                model,
                self.weights,
                self.masks,  # type: ignore[arg-type]
                self.params.sparsity_init,
                mode=self.params.mode,
                kind=self.params.weight_importance,
            )

    def build_controller(self, model: nn.Module, context: BuildContext) -> MagnitudeSparsityController:
        ctrl = MagnitudeSparsityController(
            model,
            self.params,
            context,
            self.get_state(),
            self.weights,
            self.masks,
            self._bn_adaptation_args(),
        )
        ctrl.skipped = dict(self.skipped)
        return ctrl

    def _bn_adaptation_args(self) -> tuple[Any, int] | None:
        from nncompress.torch.initialization import BNAdaptationInitArgs

        samples = self.bn_adaptation_samples()
        has = getattr(self.config, "has_extra_struct", None)
        if samples <= 0 or has is None or not has(BNAdaptationInitArgs):
            return None
        return self.config.get_extra_struct(BNAdaptationInitArgs), samples


class MagnitudeSparsityController(SparsityControllerBase):
    """Drives magnitude sparsity of one wrapped model (see the module docstring)."""

    def __init__(
        self,
        target_model: nn.Module,
        params: SparsityParams,
        context: BuildContext,
        builder_state: dict[str, Any],
        weights: list[SparsifiedWeight],
        masks: list[BinaryMask],
        bn_adaptation: tuple[Any, int] | None = None,
    ):
        super().__init__(target_model, ALGORITHM, builder_state, context, weights, masks)
        self.params = params
        self._mode = params.mode
        self._bn_adaptation = bn_adaptation
        self._level = params.sparsity_init
        self._scheduler = make_sparsity_scheduler(self, params)

    @property
    def current_sparsity_level(self) -> float:
        """The level last set (by the schedule, ``set_sparsity_level`` or ``compression_rate``)."""
        return self._level

    def set_sparsity_level(
        self,
        sparsity_level: float,
        target_sparsified_module_info: str | SparsifiedWeight | None = None,
        run_batchnorm_adaptation: bool = False,
    ) -> None:
        """Recompute the masks for ``sparsity_level`` in [0, 1) from the current weights: of every
        layer (with the configured mode), or of one layer (its own threshold)."""
        level = check_sparsity_level(sparsity_level)
        if self.frozen:
            raise CompressionStateError(
                f"{ALGORITHM}: the masks are frozen (sparsity_freeze_epoch {self.params.sparsity_freeze_epoch} "
                "reached, or freeze() called); the sparsity level cannot change any more"
            )
        if target_sparsified_module_info is not None:
            w = self._find(target_sparsified_module_info)
            i = self.sparsified_weights.index(w)
            compute_magnitude_masks(
                self.model, [w], [self.masks[i]], level, mode="local", kind=self.params.weight_importance
            )
        else:
            compute_magnitude_masks(
                self.model,
                self.sparsified_weights,
                self.masks,  # type: ignore[arg-type]
                level,
                mode=self._mode,
                kind=self.params.weight_importance,
            )
            self._level = level
        if run_batchnorm_adaptation:
            self.run_batchnorm_adaptation()

    def run_batchnorm_adaptation(self) -> int:
        """Re-estimate BatchNorm statistics with the config's ``BNAdaptationInitArgs`` (if any)."""
        if self._bn_adaptation is None:
            return 0
        from nncompress.torch.initialization import run_bn_adaptation

        init_args, samples = self._bn_adaptation
        return run_bn_adaptation(self.model, init_args, samples)

    @property
    def compression_rate(self) -> float:
        return self._level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.set_sparsity_level(value, run_batchnorm_adaptation=True)

    def compression_stage(self) -> CompressionStage:
        level = self._level
        if level <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if level >= self.params.target_level - 1e-9:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def _thresholds(self) -> list[LayerThreshold]:
        values = _importances(self.model, self.sparsified_weights, self.params.weight_importance)
        masks = [m.effective_mask().cpu().numpy().astype(bool) for m in self.masks]
        out = []
        for w, v, keep in zip(self.sparsified_weights, values, masks):
            # the largest importance zeroed by the mask (the threshold the mask was cut at)
            t = float(v[~keep].max()) if (~keep).any() else float("-inf")
            out.append(LayerThreshold(w.name, t))
        if self._mode == "global" and out:
            level = select_threshold(np.concatenate([v.reshape(-1) for v in values]), self._level)
            out = [LayerThreshold(t.name, level) for t in out]
        return out

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        stats = MagnitudeSparsityStatistics(
            model_statistics=self.model_statistics(),
            thresholds=[] if quickly_collected_only else self._thresholds(),
            target_sparsity_level=self.params.target_level,
            current_sparsity_level=self._level,
            mode=self._mode,
        )
        nncf_stats = NNCFStatistics()
        nncf_stats.register(ALGORITHM, stats)
        return nncf_stats

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[ALGORITHM]["sparsity_level"] = self._level
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        try:
            self._level = float(state[ALGORITHM].get("sparsity_level", self._level))
        except (TypeError, ValueError) as exc:
            raise CompressionStateError(
                f"{ALGORITHM}: corrupt sparsity level in {state[ALGORITHM]!r}"
            ) from exc
