"""FastBiasCorrection: remove the mean output shift that quantization adds to each biased layer.

Two statistics passes, whatever the depth of the model: one over the float model, one over the
quantized model (``adapter.apply``'s result), on the same calibration inputs. The float pass is
usually not a pass of its own: ``float_statistics`` hands its collector to MinMax's statistics
pass (``nncompress.quantize`` does), which fills it from the same first items. For every weighted
op with a bias whose weight is quantized it collects, per output channel, the mean of the op's
output (before any activation function; ``keep_axis`` 1 for convolutions, -1 for MatMul/Linear)
and, per input channel, the mean of its input. Then

    shift = (fp_out - q_out) - M @ (fp_in - q_in)          bias_q += shift

where ``M`` maps input-channel means to output-channel means (exact for MatMul; for a
convolution the weight summed over kernel taps, each tap weighted by the share of output positions
where it reads the input rather than padding, when the graph knows the spatial shapes:
``conv_tap_coverage``; a 3x3 tap at the border of a 4x4 map reads padding at a quarter of them).
The second term removes the part of the output shift that came in through the layer's input from
upstream layers: those layers get their own correction in the same pass, so without it the shift
would be corrected twice. The input mean is observed before the layer's own input quantizer (at
that quantizer's target point), so the layer's correction covers its input quantizer and its
weight quantizer. Set ``compensate_input_shift=False`` for the plain ``bias += fp_out - q_out``.
NNCF estimates the shift differently (the float input's channel means, as a constant input, through
the quantized layer); on small maps its estimate is dominated by padding (DigitsCNN, 8x8 to 2x2
maps: |shift / bias| 16-62 on its three convolutions, so it corrects none; ours 0.05-0.85).

A weighted op without a bias whose output only a BatchNorm reads (torch keeps Conv-BatchNorm
pairs apart; ONNX and OpenVINO fold them) is corrected through the BatchNorm's bias, measured at
the BatchNorm's output, with ``M`` scaled by the BatchNorm's per-channel factor and the gate
judged against the pair's folded bias (``adapter.batch_norm_affine``), so torch gets the
corrections the folded ONNX/OpenVINO graph gets: EfficientNet-Lite0 torch PTQ 16.9 -> 19.7 dB.

A correction is applied only when every channel's relative change ``|shift / bias|`` is below
``threshold`` (default 2.0), and never to a bias with a zero entry: NNCF's rule. A larger change
means the mean shift is not a small drift but the output of a clipped or rarely active channel
(a quantizer whose range the calibration data did not cover, a channel that is ~0 on most
items), where moving the bias helps the average item and hurts the rare ones that matter. An
earlier, looser rule (``||shift|| / ||bias||``) cost 2.6 dB SQNR on EfficientNet-Lite0 and 0.7 dB
on silero-vad (``benchmarks/ptq_onnx_openvino.py``). Skipped layers are recorded with the reason.
``BiasCorrection`` (bias_correction.py) is the slower variant that re-measures after each level of
layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncompress.graph import Graph, Node
from nncompress.quantization.algorithms.base import (
    BlockDiagonal,
    ProgressCallback,
    activation_channel_axis,
    activation_port,
    bias_carrier,
    bias_correction_layers,
    calibration_iterations,
    input_factory,
    input_statistic_target,
    layer_transfer_matrix,
    main_weight,
    stage_progress,
)
from nncompress.quantization.spec import Placement, TargetPoint, TargetType
from nncompress.quantization.statistics import MEAN_OF_MEAN, StatisticKey, StatisticsCollector


@dataclass
class BiasCorrectionRecord:
    """What happened to one layer's bias."""

    node: str
    applied: bool
    reason: str = ""
    magnitude: float = 0.0  # max over channels of |shift / bias|
    shift: np.ndarray | None = None

    def __str__(self) -> str:
        state = "corrected" if self.applied else "skipped"
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.node}: {state}, max |shift / bias| = {self.magnitude:.3g}{why}"


def bias_correction_report(records: list[BiasCorrectionRecord]) -> str:
    applied = sum(r.applied for r in records)
    lines = [f"Bias correction: {applied} of {len(records)} layers corrected"]
    lines += [f"  {r}" for r in records]
    return "\n".join(lines)


def apply_bias_shift(
    adapter: Any,
    model: Any,
    node: str,
    shift: np.ndarray,
    threshold: float,
    note: str = "",
    bias_node: str | None = None,
    reference: np.ndarray | None = None,
) -> BiasCorrectionRecord:
    """Add ``shift`` to the bias of ``node`` (of ``bias_node``, the BatchNorm after it, when
    given) in ``model`` if it passes the threshold, judged against ``reference`` when given (a
    Conv-BatchNorm pair's folded bias) instead of the bias itself."""
    if bias_node is not None and bias_node != node:
        note = f"{note}; " if note else ""
        note += f"the bias of '{bias_node}'"
        node_of_bias = bias_node
    else:
        node_of_bias = node
    bias = adapter.get_bias(model, node_of_bias)
    if bias is None:
        return BiasCorrectionRecord(node, False, "the layer has no bias in the quantized model")
    bias = np.asarray(bias)
    shift = np.asarray(shift, dtype=np.float64)
    if shift.shape != bias.shape:
        if shift.size != bias.size:
            return BiasCorrectionRecord(
                node, False, f"output statistic has {shift.size} channels, the bias {bias.size}", shift=shift
            )
        shift = shift.reshape(bias.shape)
    if not np.all(np.isfinite(shift)):
        return BiasCorrectionRecord(node, False, "the output statistics are not finite", shift=shift)
    if not np.any(shift):
        return BiasCorrectionRecord(node, False, "no shift measured", 0.0, shift)
    b = (
        bias.astype(np.float64)
        if reference is None
        else np.asarray(reference, np.float64).reshape(bias.shape)
    )
    if not np.all(b):
        return BiasCorrectionRecord(node, False, "the bias has a zero entry", float("inf"), shift)
    magnitude = float(np.max(np.abs(shift / b)))
    if not magnitude < threshold:
        return BiasCorrectionRecord(
            node,
            False,
            f"a channel would change by threshold ({threshold:g}) times its bias or more",
            magnitude,
            shift,
        )
    adapter.set_bias(model, node_of_bias, (bias.astype(np.float64) + shift).astype(bias.dtype))
    return BiasCorrectionRecord(node, True, note, magnitude, shift)


@dataclass
class _LayerPlan:
    node: Node
    carrier: Node  # the node whose bias is corrected: ``node`` or the BatchNorm after it
    out_key: StatisticKey
    in_key: StatisticKey | None = None
    # makes the layer's transfer matrix when the shift is computed: held for every layer from the
    # first pass to the last, the matrices of EfficientNet-Lite0 took 80 MiB
    transfer: Callable[[], Any] | None = None


def plan_layer_statistics(
    graph: Graph,
    placement: Placement | None,
    layers: list[Node],
    model: Any,
    adapter: Any,
    collectors: list[StatisticsCollector],
    compensate_input_shift: bool,
) -> list[_LayerPlan]:
    """Register output (and, for compensation, input) mean statistics in every collector."""
    plans = []
    for node in layers:
        carrier = bias_carrier(graph, node) or node
        out_tp = output_statistic_target(graph, carrier)
        axis = activation_channel_axis(node)
        keys = [c.add(out_tp, MEAN_OF_MEAN, axis) for c in collectors]
        plan = _LayerPlan(node, carrier, keys[0])
        port, weight = activation_port(graph, node), main_weight(node)
        if compensate_input_shift and port is not None and weight is not None:
            transfer = _transfer_of(graph, node, port, weight, adapter, model)
            if carrier is not node:
                transfer = _through_batch_norm(transfer, adapter, model, carrier)
            if transfer() is not None:
                in_tp = input_statistic_target(graph, placement, node, port)
                plan.in_key = [c.add(in_tp, MEAN_OF_MEAN, axis) for c in collectors][0]
                plan.transfer = transfer
        plans.append(plan)
    return plans


def _transfer_of(
    graph: Graph, node: Node, port: int, weight: tuple, adapter: Any, model: Any
) -> Callable[[], Any]:
    """``layer_transfer_matrix`` of ``node``, made from the float model's weight on each call."""
    w_port, info = weight
    in_edges = [e for e in graph.in_edges(node.name) if e.dst_port == port]
    out_edges = graph.out_edges(node.name, 0)
    in_shape = in_edges[0].tensor.shape if in_edges else None
    out_shape = out_edges[0].tensor.shape if out_edges else None
    return lambda: layer_transfer_matrix(
        node, adapter.get_weight(model, node.name, w_port), info, in_shape, out_shape
    )


def _through_batch_norm(
    transfer: Callable[[], Any], adapter: Any, model: Any, batch_norm: Node
) -> Callable[[], Any]:
    """``transfer`` followed by the BatchNorm's per-channel scale (``adapter.batch_norm_affine``;
    without it, or for a BatchNorm the adapter cannot read, there is no compensation)."""
    read = getattr(adapter, "batch_norm_affine", None)

    def scaled() -> Any:
        affine = read(model, batch_norm.name) if read is not None else None
        matrix = transfer() if affine is not None else None
        if matrix is None or matrix.shape[0] != affine[0].size:
            return None
        scale = affine[0]
        if isinstance(matrix, BlockDiagonal):
            g, o, _ = matrix.blocks.shape
            return BlockDiagonal(matrix.blocks * scale.reshape(g, o, 1))
        return matrix * scale[:, None]

    return scaled


def folded_bias(adapter: Any, model: Any, plan: _LayerPlan) -> np.ndarray | None:
    """The bias a Conv-BatchNorm pair of ``plan`` has once folded (None for a layer with its own
    bias, or when the adapter cannot read the BatchNorm): what a correction is judged against."""
    read = getattr(adapter, "batch_norm_affine", None)
    if plan.carrier is plan.node or read is None:
        return None
    affine = read(model, plan.carrier.name)
    return None if affine is None else affine[1]


def output_statistic_target(graph: Graph, node: Node) -> TargetPoint:
    """Where to observe the output mean of ``node``: after its bias ``Add`` when the backend keeps
    the bias as a separate graph node (OpenVINO, ONNX MatMul + Add), else the node's output.

    The shift ``fp - q`` is the same at both places (both models add the same bias while they are
    measured), but a runtime keeps the Add fused into the op when the statistic reads the Add's
    output (OpenVINO's CPU plugin is 2-3x slower per item with results between op and bias).
    """
    here = TargetPoint(TargetType.OUTPUT, node.name, 0)
    if node.bias is None or node.bias not in graph:
        return here
    readers = graph.out_edges(node.name, 0)
    if len(readers) != 1:
        return here
    add = graph.node(readers[0].dst)
    bias_readers = graph.out_edges(node.bias)
    fed = {e.src for e in graph.in_edges(add.name)}
    if add.op_type != "Add" or fed != {node.name, node.bias} or {e.dst for e in bias_readers} != {add.name}:
        return here
    return TargetPoint(TargetType.OUTPUT, add.name, 0)


class _CorrectsBias:
    """What both bias corrections share: ``apply`` corrects ``quantized_model`` in place."""

    records: list[BiasCorrectionRecord]
    correct: Any  # each subclass's own correction pass

    def apply(
        self,
        model: Any,
        graph: Graph,
        adapter: Any,
        dataset_inputs: Any,
        *,
        quantized_model: Any,
        placement: Placement | None = None,
    ) -> Any:
        self.correct(
            model, graph, adapter, dataset_inputs, quantized_model=quantized_model, placement=placement
        )
        return quantized_model

    def report(self) -> str:
        return bias_correction_report(self.records)


@dataclass
class FastBiasCorrection(_CorrectsBias):
    """One-pass bias correction (see the module docstring). ``apply`` returns the quantized model
    with corrected biases; ``records`` holds what was done to each layer."""

    subset_size: int = 100
    threshold: float = 2.0
    compensate_input_shift: bool = True
    progress: ProgressCallback | None = None
    records: list[BiasCorrectionRecord] = field(default_factory=list, init=False)
    _prepared: tuple | None = field(default=None, init=False, repr=False)

    def float_statistics(
        self, model: Any, graph: Graph, adapter: Any, dataset_inputs: Any, placement: Placement | None
    ) -> tuple[StatisticsCollector, int | None] | None:
        """The float-model statistics this correction needs, to be collected by another pass.

        Returns ``(collector, items)``, a collector to fill from the first ``items`` calibration
        items of ``model`` (e.g. as a companion of MinMax's statistics pass:
        ``StatisticsCollector.collect(..., companions=[...])``), or None when no layer qualifies.
        ``correct`` then runs only the quantized model; if the collector was never filled, it
        runs the float pass itself, as without this call.
        """
        layers = bias_correction_layers(graph, placement)
        if not layers:
            self._prepared = None
            return None
        fp, q = StatisticsCollector(), StatisticsCollector()
        plans = plan_layer_statistics(
            graph, placement, layers, model, adapter, [fp, q], self.compensate_input_shift
        )
        self._prepared = (graph, placement, plans, fp, q)
        return fp, calibration_iterations(dataset_inputs, self.subset_size)

    def correct(
        self,
        model: Any,
        graph: Graph,
        adapter: Any,
        dataset_inputs: Any,
        *,
        quantized_model: Any,
        placement: Placement | None = None,
    ) -> list[BiasCorrectionRecord]:
        self.records = []
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is graph and prepared[1] is placement:
            plans, fp, q = prepared[2:]
        else:
            layers = bias_correction_layers(graph, placement)
            if not layers:
                return self.records
            fp, q = StatisticsCollector(), StatisticsCollector()
            plans = plan_layer_statistics(
                graph, placement, layers, model, adapter, [fp, q], self.compensate_input_shift
            )
        make_inputs = input_factory(dataset_inputs, self.subset_size)
        total = calibration_iterations(dataset_inputs, self.subset_size)
        if not fp.collected:
            fp.collect(
                adapter,
                model,
                make_inputs(),
                stage_progress(self.progress, "Bias correction: float model"),
                total,
            )
        q.collect(
            adapter,
            quantized_model,
            make_inputs(),
            stage_progress(self.progress, "Bias correction: quantized model"),
            total,
        )
        for plan in plans:
            shift = fp.result(plan.out_key) - q.result(plan.out_key)
            note = ""
            if plan.in_key is not None:
                d_in = fp.result(plan.in_key) - q.result(plan.in_key)
                matrix = plan.transfer()
                if matrix.shape == (shift.size, d_in.size):
                    shift = shift - matrix @ d_in
                else:
                    note = "input-shift compensation skipped: channel counts differ"
            self.records.append(
                apply_bias_shift(
                    adapter,
                    quantized_model,
                    plan.node.name,
                    shift,
                    self.threshold,
                    note,
                    plan.carrier.name,
                    folded_bias(adapter, model, plan),
                )
            )
        return self.records
