"""Statistics of sparsity algorithms: per-layer and total zeros, printable with ``to_str()``.

Names follow NNCF's (``model_statistics.sparsity_level``, ``sparsity_level_for_layers``,
``sparsified_layers_summary``, ``thresholds``, ``target_sparsity_level``, ``mean_sparse_prob``)
so scripts reading them keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nncompress.api.compression import Statistics

__all__ = [
    "ConstSparsityStatistics",
    "LayerThreshold",
    "MagnitudeSparsityStatistics",
    "RBSparsityStatistics",
    "SparsifiedLayerSummary",
    "SparsifiedModelStatistics",
]


@dataclass(frozen=True)
class SparsifiedLayerSummary:
    """One sparsified weight: its layer, shape, fraction of zeros and share of all sparsified weights."""

    name: str
    weight_shape: tuple[int, ...]
    sparsity_level: float
    weight_percentage: float
    zeros: int = 0
    numel: int = 0


@dataclass(frozen=True)
class LayerThreshold:
    """The importance threshold of one layer's magnitude mask (kept: importance above it)."""

    name: str
    threshold: float


@dataclass
class SparsifiedModelStatistics(Statistics):
    """Zeros of the whole model (every parameter) and of the sparsified weights, per layer."""

    sparsity_level: float
    sparsity_level_for_layers: float
    sparsified_layers_summary: list[SparsifiedLayerSummary] = field(default_factory=list)
    total_params: int = 0
    total_zeros: int = 0

    def to_str(self) -> str:
        name_w = max([len(s.name) for s in self.sparsified_layers_summary] + [5])
        head = (
            f"{'Layer':<{name_w}}  {'Weight shape':>16}  {'Zeros':>17}  {'Sparsity':>8}  {'% of weights':>12}"
        )
        rows = [head, "-" * len(head)]
        for s in self.sparsified_layers_summary:
            shape = "x".join(str(d) for d in s.weight_shape)
            rows.append(
                f"{s.name:<{name_w}}  {shape:>16}  {f'{s.zeros}/{s.numel}':>17}  {s.sparsity_level:>8.1%}  "
                f"{s.weight_percentage:>11.1f}%"
            )
        layers_zeros = sum(s.zeros for s in self.sparsified_layers_summary)
        layers_numel = sum(s.numel for s in self.sparsified_layers_summary)
        rows.append("-" * len(head))
        rows.append(
            f"{'Total (sparsified layers)':<{name_w}}  {'':>16}  {f'{layers_zeros}/{layers_numel}':>17}  "
            f"{self.sparsity_level_for_layers:>8.1%}"
        )
        summary = [
            f"Sparsity of the sparsified layers: {self.sparsity_level_for_layers:.1%} "
            f"({len(self.sparsified_layers_summary)} layers)",
            f"Sparsity of the whole model: {self.sparsity_level:.1%} "
            f"({self.total_zeros:,} of {self.total_params:,} parameters are zero)",
        ]
        return "\n".join(summary + [""] + rows)


@dataclass
class MagnitudeSparsityStatistics(Statistics):
    """``ctrl.statistics().magnitude_sparsity``: the model's zeros, the level and the thresholds."""

    model_statistics: SparsifiedModelStatistics
    thresholds: list[LayerThreshold]
    target_sparsity_level: float = 0.0
    current_sparsity_level: float = 0.0
    mode: str = "global"

    def to_str(self) -> str:
        lines = [
            f"Sparsity level set: {self.current_sparsity_level:.1%} ({self.mode} thresholds; "
            f"schedule target {self.target_sparsity_level:.1%})",
            self.model_statistics.to_str(),
        ]
        if self.thresholds:
            distinct = sorted({round(t.threshold, 6) for t in self.thresholds})
            if len(distinct) == 1:
                lines.append(f"Importance threshold: {distinct[0]:.6g} (all layers)")
            else:
                lines.append(
                    "Importance thresholds: "
                    + ", ".join(f"{t.name}: {t.threshold:.6g}" for t in self.thresholds)
                )
        return "\n".join(lines)


@dataclass
class RBSparsityStatistics(Statistics):
    """``ctrl.statistics().rb_sparsity``: the model's zeros, the loss's target and mask probabilities."""

    model_statistics: SparsifiedModelStatistics
    masks_consistency: float
    target_sparsity_level: float
    mean_sparse_prob: float

    def to_str(self) -> str:
        return "\n".join(
            [
                f"Target sparsity level of the loss: {self.target_sparsity_level:.1%}; mean probability of a "
                f"weight being zero: {self.mean_sparse_prob:.1%}"
                + (
                    f"; masks equal across processes: {self.masks_consistency:.1%}"
                    if self.masks_consistency < 1.0
                    else ""
                ),
                self.model_statistics.to_str(),
            ]
        )


@dataclass
class ConstSparsityStatistics(Statistics):
    """``ctrl.statistics().const_sparsity``: the zeros the model keeps."""

    model_statistics: SparsifiedModelStatistics

    def to_str(self) -> str:
        return self.model_statistics.to_str()
