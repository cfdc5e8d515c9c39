"""What every filter-pruning controller reports, whatever the framework: stage, statistics, groups.

Backend-neutral: a torch or Keras controller mixes :class:`PruningReports` in and provides
``engine`` (with ``graph``, ``deps``, ``keep``, ``selection`` and ``original_cost``), ``params``
(:class:`~nncompress.pruning.params.FilterPruningParams`), ``pruning_level`` and
``compression_rate``.
"""

from __future__ import annotations

from nncompress.api.compression import CompressionStage, NNCFStatistics
from nncompress.pruning.params import ALGORITHM
from nncompress.pruning.statistics import FilterPruningStatistics, pruning_statistics

__all__ = ["PruningReports"]


class PruningReports:
    """``compression_stage``, ``pruning_statistics``, ``statistics`` and ``describe_groups``."""

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
