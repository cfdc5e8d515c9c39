"""What every filter-pruning controller does, whatever the framework: level, stage, statistics.

Backend-neutral: a torch or Keras controller mixes :class:`PruningControllerMixin` in and
provides ``engine`` (``select``, ``select_flops``, ``apply``, ``cost``, ``graph``, ``deps``,
``keep``, ``selection``, ``original_cost``), ``params``
(:class:`~nncompress.pruning.params.FilterPruningParams`) and ``run_batchnorm_adaptation()``.
"""

from __future__ import annotations

from nncompress.api.compression import BaseCompressionScheduler, CompressionStage, NNCFStatistics
from nncompress.pruning.params import ALGORITHM, FilterPruningParams
from nncompress.pruning.schedule import PruningSchedule, make_schedule
from nncompress.pruning.selection import check_level
from nncompress.pruning.statistics import FilterPruningStatistics, pruning_statistics

__all__ = ["FilterPruningScheduler", "PruningControllerMixin"]


class FilterPruningScheduler(BaseCompressionScheduler):
    """Sets the controller's level from the schedule at every ``epoch_step()``; when it changes,
    the masks are recomputed and BatchNorm statistics re-estimated (if the config registered data
    for it)."""

    def __init__(self, controller: PruningControllerMixin, schedule: PruningSchedule):
        super().__init__()
        self.controller = controller
        self.schedule = schedule
        self.enabled = True

    @property
    def current_pruning_level(self) -> float:
        return self.schedule.level(self.current_epoch)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        value = self.current_pruning_level
        if self.enabled and value != self.controller._value:
            self.controller._set_target_value(value, run_batchnorm_adaptation=True)


class PruningControllerMixin:
    """The level (``compression_rate``, ``set_pruning_level``, ``set_flops_reduction``) and the
    reports (``compression_stage``, ``statistics``, ``describe_groups``) of a pruning controller."""

    _value: float

    def _scheduler_for(self, params: FilterPruningParams) -> FilterPruningScheduler:
        """The epoch scheduler of ``params``' schedule, driving this controller."""
        schedule = make_schedule(
            params.schedule,
            initial=params.pruning_init,
            target=params.target,
            steps=params.pruning_steps,
            num_init_steps=params.num_init_steps,
        )
        return FilterPruningScheduler(self, schedule)

    # -- level ----------------------------------------------------------------------------------
    @property
    def prune_flops(self) -> bool:
        return self.params.pruning_flops_target is not None  # type: ignore[attr-defined]

    @property
    def pruning_level(self) -> float:
        """The current pruning level (fraction of filters of each group removed)."""
        return self.engine.selection.level  # type: ignore[attr-defined]

    @property
    def current_flops(self) -> int:
        return self.engine.cost().flops  # type: ignore[attr-defined]

    @property
    def current_params(self) -> int:
        return self.engine.cost().params  # type: ignore[attr-defined]

    @property
    def flops_reduction(self) -> float:
        original = self.engine.original_cost.flops  # type: ignore[attr-defined]
        return 1.0 - self.current_flops / original if original else 0.0

    @property
    def compression_rate(self) -> float:
        """The pruning level, or the FLOPs reduction when ``pruning_flops_target`` is set."""
        return self.flops_reduction if self.prune_flops else self.pruning_level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self._set_target_value(value, run_batchnorm_adaptation=True)

    def _set_target_value(self, value: float, run_batchnorm_adaptation: bool = False) -> None:
        if self.prune_flops:
            self.set_flops_reduction(value, run_batchnorm_adaptation)
        else:
            self.set_pruning_level(value, run_batchnorm_adaptation)

    def set_pruning_level(self, pruning_level: float, run_batchnorm_adaptation: bool = False) -> None:
        """Recompute the masks for ``pruning_level`` in [0, 1) (ConfigError otherwise)."""
        level = check_level(pruning_level)
        engine = self.engine  # type: ignore[attr-defined]
        engine.apply(engine.select(level))
        self._value = level if not self.prune_flops else self.flops_reduction
        if run_batchnorm_adaptation:
            self.run_batchnorm_adaptation()  # type: ignore[attr-defined]

    def set_flops_reduction(self, reduction: float, run_batchnorm_adaptation: bool = False) -> None:
        """Recompute the masks at the smallest level removing at least ``reduction`` of the FLOPs."""
        reduction = check_level(reduction, "pruning_flops_target")
        engine = self.engine  # type: ignore[attr-defined]
        engine.apply(engine.select_flops(reduction))
        self._value = reduction
        if run_batchnorm_adaptation:
            self.run_batchnorm_adaptation()  # type: ignore[attr-defined]

    # -- reports --------------------------------------------------------------------------------
    def compression_stage(self) -> CompressionStage:
        value = self.compression_rate  # type: ignore[attr-defined]
        if value <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if value >= self.params.target - 1e-9:  # type: ignore[attr-defined]
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def pruning_statistics(self) -> FilterPruningStatistics:
        """Per-layer kept/removed filters, parameters and FLOPs now against the original."""
        engine, params = self.engine, self.params  # type: ignore[attr-defined]
        return pruning_statistics(
            engine.graph,
            engine.deps,
            engine.keep,
            pruning_level=self.pruning_level,  # type: ignore[attr-defined]
            target_level=params.pruning_target,
            flops_target=params.pruning_flops_target,
            notes=engine.selection.notes,
            original=engine.original_cost,
        )

    def statistics(self, quickly_collected_only: bool = False) -> NNCFStatistics:
        stats = NNCFStatistics()
        stats.register(ALGORITHM, self.pruning_statistics())
        return stats

    def describe_groups(self) -> str:
        """Which layers are pruned together and why; which are left out and why."""
        return self.engine.deps.describe()  # type: ignore[attr-defined]
