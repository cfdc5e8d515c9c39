"""The controller of filter pruning during training: level, schedule, statistics, strip, export.

``ctrl.scheduler.epoch_step()`` (at the start of each epoch) moves the pruning level along the
schedule and, when it changes, recomputes the masks from the current weights and re-estimates the
BatchNorm statistics on the data registered with the config (``register_default_init_args``,
``initializer.batchnorm_adaptation.num_bn_adaptation_samples``; skipped without data): removing
channels shifts the statistics the next layers see, and a network with BatchNorm loses most of
its accuracy until they are re-estimated. ``ctrl.compression_rate = x`` does the same at once;
``ctrl.set_pruning_level(level, run_batchnorm_adaptation=False)`` only changes the masks unless
asked. With ``pruning_flops_target`` the schedule
and ``compression_rate`` are FLOPs reductions, and each level is found by bisection.

``ctrl.strip()`` and ``ctrl.export_model()`` remove the pruned channels for real: the result is a
plain model of the user's class with smaller layers (checked against the masked model on the
example input). Combined with quantization (``compression: [filter_pruning, quantization]``), the
composite controller's strip keeps the model wrapped with its fake quantizers, per-channel ones
cut to the kept channels, so the export is a pruned INT8 model. ``ctrl.pruning_record()`` gives the JSON record that replays the pruning onto a
fresh model (``apply_pruning_record``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nncompress.errors import CompressionStateError
from nncompress.pruning.controller_mixin import FilterPruningScheduler, PruningControllerMixin
from nncompress.pruning.params import ALGORITHM, FilterPruningParams
from nncompress.pruning.record import PruningRecord
from nncompress.torch.algorithms.base import (
    BuildContext,
    PTCompressionAlgorithmController,
)
from nncompress.torch.pruning.engine import TorchFilterPruning

__all__ = ["FilterPruningController", "FilterPruningScheduler"]


class FilterPruningController(PruningControllerMixin, PTCompressionAlgorithmController):
    """Drives filter pruning of one wrapped model (see the module docstring)."""

    export_stripped = True  # the export is the stripped copy

    def __init__(
        self,
        target_model: nn.Module,
        engine: TorchFilterPruning,
        params: FilterPruningParams,
        context: BuildContext,
        builder_state: dict[str, Any],
        *,
        bn_adaptation: tuple[Any, int] | None = None,
    ):
        super().__init__(target_model, ALGORITHM, builder_state, context)
        self.engine = engine
        self.params = params
        self._bn_adaptation = bn_adaptation
        self._scheduler = self._scheduler_for(params)
        self._value = params.pruning_init  # level, or FLOPs reduction in FLOPs mode
        # LeGR: the reward (minus validation loss) of every candidate the search tried
        self.legr_rewards: list[float] = []

    @property
    def ranking_coeffs(self) -> dict[str, tuple[float, float]] | None:
        """LeGR's learned ``(scale, shift)`` per pruned layer (None with the plain ranking)."""
        return self.engine.ranking_coeffs

    # -- level: see PruningControllerMixin; BatchNorm adaptation after a level change ------------
    def run_batchnorm_adaptation(self) -> int:
        """Re-estimate BatchNorm statistics with the config's ``BNAdaptationInitArgs`` (if any)."""
        if self._bn_adaptation is None:
            return 0
        from nncompress.torch.initialization import run_bn_adaptation

        init_args, samples = self._bn_adaptation
        return run_bn_adaptation(self.model, init_args, samples)

    def disable_scheduler(self) -> None:
        self._scheduler.enabled = False

    # -- reports --------------------------------------------------------------------------------
    def pruning_record(self) -> PruningRecord:
        """The JSON-serializable record of the removed channels (module path -> kept indices)."""
        return self.engine.record()

    # -- strip and export -------------------------------------------------------------------------
    def _example(self) -> tuple[tuple, dict]:
        return self._example_args, self._example_kwargs

    def strip_model(self, model: nn.Module, do_copy: bool = False) -> nn.Module:
        """``model`` with the pruned channels removed: a plain model of the user's class, or, when
        the model carries other hooks (quantizers), the wrapped model without the masks and with
        its per-channel quantizers cut (:meth:`TorchFilterPruning.strip`).

        Checked against the masked model on the example input (``PruningError`` if they differ).
        """
        return self.engine.strip(model, example=self._example(), inplace=not do_copy)

    def strip(self, do_copy: bool = True) -> nn.Module:
        return self.strip_model(self.model, do_copy=do_copy)

    # -- state ------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.algorithm_name]["pruning_level"] = self.pruning_level
        state[self.algorithm_name]["target_value"] = self._value
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        mine = state[self.algorithm_name]
        try:
            level = float(mine.get("pruning_level", 0.0))
            self._value = float(mine.get("target_value", level))
        except (TypeError, ValueError) as exc:
            raise CompressionStateError(f"{self.algorithm_name}: corrupt pruning level in {mine!r}") from exc
        # the masks themselves come back with the model's state_dict; only the level is noted here
        self.engine.selection.level = level
