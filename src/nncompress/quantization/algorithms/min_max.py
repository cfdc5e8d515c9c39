"""MinMaxQuantization: quantizer parameters for a placement, from calibration statistics.

Pipeline (what ``nncompress.quantize`` runs between placement and ``adapter.apply``)::

    params = MinMaxQuantization(subset_size=300).apply(model, graph, adapter, inputs, placement)
    quantized = adapter.apply(model, placement, params)

1. every activation quantization point asks its range estimator for statistics; each distinct
   ``StatisticRequest`` (target, reducer, keep_axis, q) is requested once, however many points
   or estimator roles share it;
2. one ``adapter.collect_statistics`` pass over the first ``subset_size`` calibration samples;
3. weight ranges straight from ``adapter.get_weight`` (no data);
4. each unified group gets one range covering all its members;
5. ``compute_params`` per point (``signed=None`` activations become unsigned when the collected
   min is >= 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncompress.errors import GraphError, QuantizationError
from nncompress.graph import Graph
from nncompress.quantization.algorithms.base import (
    ProgressCallback,
    calibration_iterations,
    input_factory,
    stage_progress,
)
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.quantizer_params import compute_params, unify_ranges, weight_range
from nncompress.quantization.range_estimators import (
    RangeEstimator,
    default_range_estimators,
    get_range_estimator,
    keep_axis_of,
)
from nncompress.quantization.spec import Placement, TargetPoint
from nncompress.quantization.statistics import StatisticKey, StatisticsCollector

Range = tuple[np.ndarray, np.ndarray]
EstimatorLike = RangeEstimator | str | Mapping[str, Any] | None


@dataclass
class MinMaxResult:
    """Parameters per quantizer, with the ranges they came from (for reports and debugging)."""

    params: dict[TargetPoint, QuantizerParams]
    ranges: dict[TargetPoint, Range]
    estimators: dict[TargetPoint, str]
    num_samples: int = 0

    def report(self) -> str:
        lines = [f"Quantizer ranges ({len(self.params)} quantizers, {self.num_samples} calibration inputs):"]
        for tp, p in self.params.items():
            lo, hi = p.input_low, p.input_high
            rng = f"[{float(np.min(lo)):.6g}, {float(np.max(hi)):.6g}]"
            per = f" per-channel x{np.size(p.scale)}" if p.per_channel else ""
            lines.append(f"  {tp}: {rng}{per} levels={p.levels} ({self.estimators.get(tp, '')})")
        return "\n".join(lines)


@dataclass
class MinMaxQuantization:
    """Computes ``QuantizerParams`` for every point of a ``Placement``.

    ``weights_range_estimator`` / ``activations_range_estimator`` take a registry name, an
    NNCF-style ``{"type": ..., "params": ...}`` dict or a ``RangeEstimator``; None uses
    ``default_range_estimators(model_type)`` (exact min/max for weights, NNCF 3.x defaults for
    activations). ``progress(stage, done, total)`` is called once per calibration input.
    """

    subset_size: int = 300
    weights_range_estimator: EstimatorLike = None
    activations_range_estimator: EstimatorLike = None
    model_type: Any = None
    progress: ProgressCallback | None = None
    _weights_est: RangeEstimator = field(init=False, repr=False)
    _acts_est: RangeEstimator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        default_w, default_a = default_range_estimators(self.model_type)
        self._weights_est = (
            default_w
            if self.weights_range_estimator is None
            else get_range_estimator(self.weights_range_estimator)
        )
        self._acts_est = (
            default_a
            if self.activations_range_estimator is None
            else get_range_estimator(self.activations_range_estimator)
        )

    @property
    def weights_estimator(self) -> RangeEstimator:
        return self._weights_est

    @property
    def activations_estimator(self) -> RangeEstimator:
        return self._acts_est

    # -- step 1: what to collect -------------------------------------------------------------
    def statistic_plan(
        self, placement: Placement
    ) -> tuple[StatisticsCollector, dict[TargetPoint, dict[str, StatisticKey]]]:
        """The collector for the activation points and, per point, its estimator roles -> keys."""
        collector = StatisticsCollector()
        keys: dict[TargetPoint, dict[str, StatisticKey]] = {}
        for point in placement.activation_points:
            stats = self._acts_est.statistics(point.spec, is_weight=False)
            axis = keep_axis_of(point.spec)
            keys[point.target] = {role: collector.add(point.target, s, axis) for role, s in stats.items()}
        return collector, keys

    # -- the whole algorithm -------------------------------------------------------------------
    def calibrate(
        self,
        model: Any,
        graph: Graph | None,
        adapter: Any,
        dataset_inputs: Any,
        placement: Placement,
        companions: Sequence[tuple[StatisticsCollector, int | None]] = (),
    ) -> MinMaxResult:
        """Ranges and parameters of every point; ``companions`` (other algorithms' collectors on
        the same model, with how many items each takes) are filled in the same pass."""
        if not placement.points:
            raise QuantizationError("The placement has no quantizers: there is nothing to calibrate")
        if graph is not None:
            self._check_targets(graph, placement)
        ranges: dict[TargetPoint, Range] = {}
        estimators: dict[TargetPoint, str] = {}
        num_samples = 0

        if placement.activation_points or companions:
            collector, keys = self.statistic_plan(placement)
            make_inputs = input_factory(dataset_inputs, self.subset_size)
            total = calibration_iterations(dataset_inputs, self.subset_size)
            limits = [n for _, n in companions]
            if not placement.activation_points and limits and None not in limits:
                # only the companions need this pass: no more items than the hungriest one takes
                total = max(limits) if total is None else min(total, max(limits))
            num_samples = collector.collect(
                adapter,
                model,
                _limited(make_inputs(), total),
                progress=stage_progress(self.progress, "Statistics collection"),
                total=total,
                companions=companions,
            )
            for point in placement.activation_points:
                values = {role: collector.result(key) for role, key in keys[point.target].items()}
                ranges[point.target] = self._acts_est.compute(values, point.spec, is_weight=False)
                estimators[point.target] = self._acts_est.describe()

        for point in placement.weight_points:
            weight = adapter.get_weight(model, point.target.node, point.target.port)
            est = None if self._weights_est.name == "min_max" else self._weights_est
            ranges[point.target] = weight_range(point.spec, np.asarray(weight), est, where=point.target)
            estimators[point.target] = self._weights_est.describe()

        self._unify(placement, ranges)
        params = {
            point.target: compute_params(point.spec, *ranges[point.target], where=point.target)
            for point in placement.points
        }
        return MinMaxResult(params=params, ranges=ranges, estimators=estimators, num_samples=num_samples)

    def apply(
        self,
        model: Any,
        graph: Graph | None,
        adapter: Any,
        dataset_inputs: Any,
        placement: Placement,
        companions: Sequence[tuple[StatisticsCollector, int | None]] = (),
    ) -> dict[TargetPoint, QuantizerParams]:
        """``calibrate(...).params``: what ``adapter.apply(model, placement, params)`` takes."""
        return self.calibrate(model, graph, adapter, dataset_inputs, placement, companions).params

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _unify(placement: Placement, ranges: dict[TargetPoint, Range]) -> None:
        for group_id, points in placement.unified_groups().items():
            lo, hi = unify_ranges(ranges[p.target] for p in points)
            for p in points:
                own_lo, _ = ranges[p.target]
                if p.spec.per_channel and np.ndim(lo) == 0:
                    shape = np.shape(own_lo)
                    ranges[p.target] = (np.broadcast_to(lo, shape).copy(), np.broadcast_to(hi, shape).copy())
                elif p.spec.per_channel and np.shape(lo) != np.shape(own_lo):
                    raise QuantizationError(
                        f"Unified group #{group_id}: per-channel quantizer at {p.target} cannot share a range "
                        f"of shape {np.shape(lo)}"
                    )
                else:
                    ranges[p.target] = (lo, hi)

    @staticmethod
    def _check_targets(graph: Graph, placement: Placement) -> None:
        missing = sorted({p.target.node for p in placement.points if p.target.node not in graph})
        if missing:
            raise GraphError(
                f"The placement names nodes the graph '{graph.name}' does not have: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )


def _limited(items: Iterable[Any], n: int | None) -> Iterator[Any]:
    return iter(items) if n is None else itertools.islice(items, n)
