"""Statistics of filter pruning: per-layer kept filters, and parameters and FLOPs now vs original."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nncompress.api.compression import Statistics
from nncompress.graph import Graph
from nncompress.pruning.channels import ChannelDependencies
from nncompress.pruning.cost import ModelCost, count_cost, kept_count

__all__ = ["FilterPruningStatistics", "LayerPruningInfo", "pruning_statistics"]


@dataclass(frozen=True)
class LayerPruningInfo:
    """One producer: its filters before and after, its group, and its FLOPs before and after."""

    name: str
    group: int
    filters: int
    kept: int
    flops: int
    flops_now: int

    @property
    def removed(self) -> int:
        return self.filters - self.kept

    @property
    def pruning_ratio(self) -> float:
        return self.removed / self.filters if self.filters else 0.0


@dataclass
class FilterPruningStatistics(Statistics):
    """What ``ctrl.statistics().filter_pruning`` holds; ``to_str()`` prints a table."""

    pruning_level: float
    target_level: float
    flops: int
    flops_now: int
    params: int
    params_now: int
    layers: list[LayerPruningInfo] = field(default_factory=list)
    prunable_groups: int = 0
    groups: int = 0
    notes: list[str] = field(default_factory=list)
    flops_target: float | None = None

    @property
    def flops_reduction(self) -> float:
        return 1.0 - self.flops_now / self.flops if self.flops else 0.0

    @property
    def params_reduction(self) -> float:
        return 1.0 - self.params_now / self.params if self.params else 0.0

    @property
    def filters_pruning_ratio(self) -> float:
        total = sum(lay.filters for lay in self.layers)
        return sum(lay.removed for lay in self.layers) / total if total else 0.0

    def to_str(self) -> str:
        name_w = max([len(lay.name) for lay in self.layers] + [5])
        head = f"{'Layer':<{name_w}}  {'Group':>5}  {'Filters':>13}  {'Removed':>8}  {'MFLOPs now/orig':>17}"
        rows = [head, "-" * len(head)]
        for lay in self.layers:
            rows.append(
                f"{lay.name:<{name_w}}  {lay.group:>5}  {f'{lay.kept}/{lay.filters}':>13}  "
                f"{lay.pruning_ratio:>8.1%}  {f'{lay.flops_now / 1e6:.3f}/{lay.flops / 1e6:.3f}':>17}"
            )
        target = (
            f"FLOPs target {self.flops_target:.1%}"
            if self.flops_target is not None
            else f"target {self.target_level:.1%}"
        )
        summary = [
            f"Pruning level: {self.pruning_level:.1%} ({target}); {self.prunable_groups} of {self.groups} "
            "channel groups prunable",
            f"Filters removed: {self.filters_pruning_ratio:.1%} of the prunable layers' filters",
            f"Parameters: {self.params_now:,} of {self.params:,} ({self.params_reduction:.1%} removed)",
            f"FLOPs: {self.flops_now:,} of {self.flops:,} ({self.flops_reduction:.1%} removed)",
        ]
        notes = [f"note: {n}" for n in self.notes]
        return "\n".join(summary + [""] + rows + notes)


def pruning_statistics(
    graph: Graph,
    deps: ChannelDependencies,
    keep: np.ndarray,
    *,
    pruning_level: float,
    target_level: float,
    flops_target: float | None = None,
    notes: list[str] | None = None,
    original: ModelCost | None = None,
) -> FilterPruningStatistics:
    """Statistics of ``keep`` (a mask over ``deps``' units) on ``graph``."""
    original = original or count_cost(graph)
    now = count_cost(graph, deps, keep)
    layers = []
    for group in deps.prunable_groups:
        for name in group.producers:
            lay = deps.layers[name]
            total = len(lay.out_units)
            layers.append(
                LayerPruningInfo(
                    name=deps.short_name(name),
                    group=group.index,
                    filters=total,
                    kept=kept_count(lay.out_units, keep, total),
                    flops=original.layers.get(name).flops if name in original.layers else 0,
                    flops_now=now.layers.get(name).flops if name in now.layers else 0,
                )
            )
    return FilterPruningStatistics(
        pruning_level=pruning_level,
        target_level=target_level,
        flops=original.flops,
        flops_now=now.flops,
        params=original.params,
        params_now=now.params,
        layers=layers,
        prunable_groups=len(deps.prunable_groups),
        groups=len(deps.groups),
        notes=list(notes or []),
        flops_target=flops_target,
    )
