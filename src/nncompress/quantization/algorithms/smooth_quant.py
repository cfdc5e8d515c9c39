"""SmoothQuant: move activation outliers into the weights before quantization.

For a MatMul ``y = x @ W.T`` (weight input channels along ``WeightInfo.in_channel_axis``) and a
positive vector ``s`` over the input channels, ``(x / s) @ (W * s).T == y``: the float function is
unchanged, but the per-channel activation ranges shrink where ``s`` is large and the weights absorb
them. With ``a_j = max |x_j|`` (over the calibration data) and ``w_j = max |W[:, j]|``:

    s_j = a_j ** alpha / w_j ** (1 - alpha),   clipped to [min_scale, max_scale]

(``s_j = 1`` where ``a_j == 0``). ``alpha`` defaults to 0.95, NNCF's default for MatMul; the
SmoothQuant paper's default is 0.5. Larger alpha moves more of the range into the weights.

Ops that read the same activation tensor (Q, K and V projections of one LayerNorm output) form one
group and share one ``s``: the divided activation is what all of them read. Only the edges into
the group are scaled; other consumers of the same tensor (a residual branch) see the original.

Run it on the float model *before* placement statistics: ``MinMaxQuantization`` then measures the
smoothed activations. The backend needs two operations beyond ``BackendAdapter``
(``SmoothQuantAdapter`` below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nncompress.graph import Graph, op_kinds
from nncompress.quantization.algorithms.base import (
    ProgressCallback,
    activation_channel_axis,
    activation_port,
    calibration_iterations,
    input_factory,
    main_weight,
    stage_progress,
)
from nncompress.quantization.spec import Placement, TargetPoint, TargetType
from nncompress.quantization.statistics import MAX_OF_ABS_MAX, StatisticsCollector, reduction_axes


class SmoothQuantAdapter(Protocol):
    """The two operations SmoothQuant needs on top of ``BackendAdapter``."""

    def set_weight(self, model: Any, node: str, port: int, value: np.ndarray) -> None:
        """Replace the weight fed to ``node``'s input ``port`` (same shape and dtype)."""
        ...

    def scale_activation(
        self,
        model: Any,
        source: tuple[str, int],
        consumers: Sequence[tuple[str, int]],
        scale: np.ndarray,
        axis: int,
    ) -> Any:
        """Multiply the tensor produced at output ``source = (node, port)`` by ``scale`` (1-D,
        broadcast along ``axis`` of that tensor) on its way into each ``(node, input_port)`` of
        ``consumers`` only; other consumers keep the original tensor. Returns the model (may be the
        same object). Statistics and quantizers later placed at those consumer inputs must see the
        scaled tensor; a backend may instead fold ``scale`` into the producer when the producer
        feeds nothing else."""
        ...

    def cannot_scale_activation(
        self, model: Any, source: tuple[str, int], consumers: Sequence[tuple[str, int]]
    ) -> str | None:
        """Optional: why ``scale_activation`` cannot be done for this group (None when it can).

        A backend that only folds scales into producers says so here; the group is then skipped
        and the reason recorded."""
        ...


@dataclass(frozen=True)
class SmoothQuantGroup:
    """Ops reading one activation tensor: they share one smoothing vector."""

    source: tuple[str, int]  # (producer node, output port)
    consumers: tuple[tuple[str, int], ...]  # (op, activation input port)
    weights: tuple[tuple[str, int], ...]  # (op, weight input port)
    axis: int  # channel axis of the activation (the axis W's input channels meet)


@dataclass
class SmoothQuantRecord:
    source: tuple[str, int]
    consumers: tuple[str, ...]
    applied: bool
    reason: str = ""
    act_range_before: float = 0.0  # max over channels of max |x_j|
    act_range_after: float = 0.0
    scale: np.ndarray | None = None

    def __str__(self) -> str:
        ops = ", ".join(self.consumers)
        if not self.applied:
            return f"{self.source[0]} -> [{ops}]: skipped ({self.reason})"
        return (
            f"{self.source[0]} -> [{ops}]: max |x| {self.act_range_before:.4g} -> {self.act_range_after:.4g}"
        )


def smoothing_scales(
    act_absmax: np.ndarray,
    weight_absmax: np.ndarray,
    alpha: float,
    min_scale: float = 1e-5,
    max_scale: float = 1e5,
) -> np.ndarray:
    """``s = a**alpha / w**(1 - alpha)`` per channel, 1 where ``a == 0``, clipped."""
    a = np.abs(np.asarray(act_absmax, dtype=np.float64))
    w = np.abs(np.asarray(weight_absmax, dtype=np.float64))
    tiny = np.finfo(np.float64).tiny
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = np.power(a, alpha) / np.power(np.maximum(w, tiny), 1.0 - alpha)
    s = np.where((a > 0) & np.isfinite(a) & ~np.isnan(s), s, 1.0)
    return np.clip(s, min_scale, max_scale)


def weight_input_absmax(weight: np.ndarray, in_channel_axis: int) -> np.ndarray:
    """``max |W|`` per input channel (all other axes reduced)."""
    w = np.abs(np.asarray(weight, dtype=np.float64))
    return w.max(axis=reduction_axes(w.ndim, in_channel_axis))


def scale_weight(weight: np.ndarray, scale: np.ndarray, in_channel_axis: int) -> np.ndarray:
    """``W * s`` along the input-channel axis, in the weight's dtype."""
    w = np.asarray(weight)
    shape = [1] * w.ndim
    shape[in_channel_axis] = -1
    return (w.astype(np.float64) * np.asarray(scale, dtype=np.float64).reshape(shape)).astype(w.dtype)


@dataclass
class SmoothQuant:
    """Finds groups, measures ``max |x_j|`` in one pass, rescales weights and activations."""

    alpha: float = 0.95
    subset_size: int = 300
    kinds: tuple[str, ...] = (op_kinds.MATMUL,)
    min_scale: float = 1e-5
    max_scale: float = 1e5
    progress: ProgressCallback | None = None
    records: list[SmoothQuantRecord] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {self.alpha}")

    def groups(self, graph: Graph, placement: Placement | None = None) -> list[SmoothQuantGroup]:
        """Ops of ``kinds`` with one weight, grouped by the activation they read. With a placement,
        only ops whose activation input is quantized there."""
        quantized_inputs = None
        if placement is not None:
            quantized_inputs = set()
            for p in placement.activation_points:
                quantized_inputs.update(p.consumers)
                if p.target.type == TargetType.INPUT:
                    quantized_inputs.add((p.target.node, p.target.port))
        by_source: dict[tuple[tuple[str, int], int], list[tuple[tuple[str, int], tuple[str, int]]]] = {}
        for node in graph.topological_order():
            if node.kind not in self.kinds:
                continue
            weight, port = main_weight(node), activation_port(graph, node)
            if weight is None or port is None:
                continue
            if quantized_inputs is not None and (node.name, port) not in quantized_inputs:
                continue
            edge = next(e for e in graph.in_edges(node.name) if e.dst_port == port)
            axis = activation_channel_axis(node)
            by_source.setdefault(((edge.src, edge.src_port), axis), []).append(
                ((node.name, port), (node.name, weight[0]))
            )
        return [
            SmoothQuantGroup(
                source=source,
                consumers=tuple(c for c, _ in members),
                weights=tuple(w for _, w in members),
                axis=axis,
            )
            for (source, axis), members in by_source.items()
        ]

    def apply(
        self, model: Any, graph: Graph, adapter: Any, dataset_inputs: Any, placement: Placement | None = None
    ) -> Any:
        """Smooth ``model`` in place where the backend allows; returns the (possibly new) model."""
        self.records = []
        groups = self.groups(graph, placement)
        if not groups:
            return model
        collector = StatisticsCollector()
        keys = {}
        for g in groups:
            node, port = g.consumers[0]
            keys[g] = collector.add(TargetPoint(TargetType.INPUT, node, port), MAX_OF_ABS_MAX, g.axis)
        collector.collect(
            adapter,
            model,
            input_factory(dataset_inputs, self.subset_size)(),
            stage_progress(self.progress, "SmoothQuant statistics"),
            calibration_iterations(dataset_inputs, self.subset_size),
        )
        for g in groups:
            model = self._smooth_group(model, graph, adapter, g, np.asarray(collector.result(keys[g])))
        return model

    def _smooth_group(
        self, model: Any, graph: Graph, adapter: Any, g: SmoothQuantGroup, act: np.ndarray
    ) -> Any:
        names = tuple(n for n, _ in g.consumers)
        record = SmoothQuantRecord(
            g.source, names, False, act_range_before=float(np.max(act)) if act.size else 0.0
        )
        self.records.append(record)
        if act.ndim != 1 or not np.all(np.isfinite(act)):
            record.reason = "activation statistics are not a finite per-channel vector"
            return model
        check = getattr(adapter, "cannot_scale_activation", None)
        reason = check(model, g.source, g.consumers) if check is not None else None
        if reason:
            record.reason = reason
            return model
        weights, w_absmax = [], np.zeros_like(act)
        for node_name, port in g.weights:
            info = graph.node(node_name).weights[port]
            w = np.asarray(adapter.get_weight(model, node_name, port))
            if w.ndim < 1 or w.shape[info.in_channel_axis] != act.size:
                record.reason = (
                    f"{node_name}: weight input channels do not match the {act.size} activation channels"
                )
                return model
            weights.append((node_name, port, w, info.in_channel_axis))
            w_absmax = np.maximum(w_absmax, weight_input_absmax(w, info.in_channel_axis))
        s = smoothing_scales(act, w_absmax, self.alpha, self.min_scale, self.max_scale)
        for node_name, port, w, in_axis in weights:
            adapter.set_weight(model, node_name, port, scale_weight(w, s, in_axis))
        inv = (1.0 / s).astype(np.float32)
        model = adapter.scale_activation(model, g.source, g.consumers, inv, g.axis)
        record.applied = True
        record.scale = s
        record.act_range_after = float(np.max(act / s))
        return model

    def report(self) -> str:
        applied = sum(r.applied for r in self.records)
        lines = [f"SmoothQuant (alpha={self.alpha}): {applied} of {len(self.records)} groups smoothed"]
        lines += [f"  {r}" for r in self.records]
        return "\n".join(lines)
