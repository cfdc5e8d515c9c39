"""FastBiasCorrection: remove the mean output shift that quantization adds to each biased layer.

Two statistics passes, whatever the depth of the model: one over the float model, one over the
quantized model (``adapter.apply``'s result), on the same calibration inputs, then a short third
one (below). The float pass is usually not a pass of its own: ``float_statistics`` hands its
collectors to MinMax's statistics pass (``nncompress.quantize`` does), which fills them from the
same first items. For every weighted op with a bias whose weight is quantized it collects, per
output channel, the mean of the op's output (before any activation function; ``keep_axis`` 1 for
convolutions, -1 for MatMul/Linear) and, per input channel, the mean of its input. Then

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
Then one more pass (``output_residual``, on the first ``residual_subset_size`` = 32 items): the
layers corrected above with no corrected layer downstream (a classifier, or the last convolution
when the classifier was skipped) get the mean shift still left at their output, measured on the
corrected model (``bias += fp_out - q_out``; gate ``residual_threshold``, BiasCorrection's 1000).
That is what the first pass cannot see: a nonlinearity turns the quantization noise of its
input into a mean shift of its output (ReLU of zero-mean noise has a positive mean), which no
upstream correction removes and which the compensation leaves out. No layer downstream corrects
it again, so all of them are measured in one pass. Held-out SQNR (benchmarks/
ptq_onnx_openvino.py files): EfficientNet-Lite0 ONNX 19.76 -> 20.42 dB, OpenVINO 19.74 -> 20.36,
DigitsCNN 28.85 -> 29.13. A layer whose output goes into a squashing function (Sigmoid, Tanh,
Softmax) is left out: its output mean is dominated by items deep in a flat tail, where a shift
changes nothing (silero-vad's speech logit: a residual of 1.04 measured, and 5.97 -> 3.86 dB
with it). ``BiasCorrection`` (bias_correction.py) is the slower variant that re-measures after
each level of layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncompress.graph import Graph, Node, op_kinds
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

# the gate of a shift measured on the corrected model rather than estimated (NNCF's value for
# its BiasCorrection): BiasCorrection's levels and FastBiasCorrection's residual pass
MEASURED_SHIFT_THRESHOLD = 1000.0


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
    output_residual: bool = True
    residual_subset_size: int = 32
    residual_threshold: float = MEASURED_SHIFT_THRESHOLD  # the residual is measured, not estimated
    progress: ProgressCallback | None = None
    records: list[BiasCorrectionRecord] = field(default_factory=list, init=False)
    _prepared: tuple | None = field(default=None, init=False, repr=False)

    def float_statistics(
        self, model: Any, graph: Graph, adapter: Any, dataset_inputs: Any, placement: Placement | None
    ) -> list[tuple[StatisticsCollector, int | None]]:
        """The float-model statistics this correction needs, to be collected by another pass.

        Returns ``[(collector, items), ...]``, collectors to fill from the first ``items``
        calibration items of ``model`` (e.g. as companions of MinMax's statistics pass:
        ``StatisticsCollector.collect(..., companions=...)``), or ``[]`` when no layer qualifies.
        ``correct`` then runs only the quantized model; if they were never filled, it runs the
        float pass itself, as without this call.
        """
        layers = bias_correction_layers(graph, placement)
        if not layers:
            self._prepared = None
            return []
        plans, fp, q, head = self._plan(graph, placement, layers, model, adapter)
        self._prepared = (graph, placement, plans, fp, q, head)
        return self._float_companions(dataset_inputs, fp, head)

    def _plan(
        self, graph: Graph, placement: Placement | None, layers: list[Node], model: Any, adapter: Any
    ) -> tuple[list[_LayerPlan], StatisticsCollector, StatisticsCollector, StatisticsCollector | None]:
        """The layer plans and their collectors: float and quantized (``subset_size`` items), and
        float output means over the residual pass's items (None without that pass)."""
        fp, q = StatisticsCollector(), StatisticsCollector()
        plans = plan_layer_statistics(
            graph, placement, layers, model, adapter, [fp, q], self.compensate_input_shift
        )
        head = StatisticsCollector() if self.output_residual else None
        for plan in plans if head is not None else ():
            head.add(plan.out_key.target, plan.out_key.spec, plan.out_key.keep_axis)
        return plans, fp, q, head

    def _float_companions(
        self, dataset_inputs: Any, fp: StatisticsCollector, head: StatisticsCollector | None
    ) -> list[tuple[StatisticsCollector, int | None]]:
        out = [(fp, calibration_iterations(dataset_inputs, self.subset_size))]
        if head is not None:
            out.append((head, calibration_iterations(dataset_inputs, self._residual_items)))
        return out

    @property
    def _residual_items(self) -> int:
        return min(self.subset_size, self.residual_subset_size)

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
            plans, fp, q, head = prepared[2:]
        else:
            layers = bias_correction_layers(graph, placement)
            if not layers:
                return self.records
            plans, fp, q, head = self._plan(graph, placement, layers, model, adapter)
        make_inputs = input_factory(dataset_inputs, self.subset_size)
        total = calibration_iterations(dataset_inputs, self.subset_size)
        if not fp.collected:
            companions = self._float_companions(dataset_inputs, fp, head)
            fp.collect(
                adapter,
                model,
                make_inputs(),
                stage_progress(self.progress, "Bias correction: float model"),
                total,
                companions[1:],
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
        if head is not None:
            self._correct_output_residual(graph, plans, head, adapter, model, quantized_model, dataset_inputs)
        return self.records

    def _correct_output_residual(
        self,
        graph: Graph,
        plans: list[_LayerPlan],
        head: StatisticsCollector,
        adapter: Any,
        model: Any,
        quantized_model: Any,
        dataset_inputs: Any,
    ) -> None:
        """Correct the last corrected layers again by the shift measured on the corrected model
        (the module docstring says why); the record of each gets the whole change of its bias."""
        applied = {p.node.name: i for i, (p, r) in enumerate(zip(plans, self.records)) if r.applied}
        below = _corrected_below(graph, applied)
        last = []
        for name, i in applied.items():
            if below[name]:
                continue
            squash = _squashed_by(graph, plans[i].out_key.target.node)
            if squash is None:
                last.append(i)
            else:
                record = self.records[i]
                detail = f"no residual pass: its output goes into '{squash}' ({graph.node(squash).op_type})"
                record.reason = f"{record.reason}; {detail}" if record.reason else detail
        if not last:
            return
        q = StatisticsCollector()
        for i in last:
            key = plans[i].out_key
            q.add(key.target, key.spec, key.keep_axis)
        q.collect(
            adapter,
            quantized_model,
            input_factory(dataset_inputs, self._residual_items)(),
            stage_progress(self.progress, "Bias correction: output layers"),
            calibration_iterations(dataset_inputs, self._residual_items),
        )
        for i in last:
            plan, first = plans[i], self.records[i]
            reference = folded_bias(adapter, model, plan)
            if reference is None:  # the bias before the first correction
                bias = np.asarray(adapter.get_bias(quantized_model, plan.carrier.name), np.float64)
                reference = bias - np.asarray(first.shift).reshape(bias.shape)
            residual = head.result(plan.out_key) - q.result(plan.out_key)
            again = apply_bias_shift(
                adapter,
                quantized_model,
                plan.node.name,
                residual,
                self.residual_threshold,
                "",
                plan.carrier.name,
                reference,
            )
            if again.applied:
                total_shift = np.asarray(first.shift) + np.asarray(again.shift).reshape(np.shape(first.shift))
                first.shift = total_shift
                first.magnitude = float(np.max(np.abs(total_shift.ravel() / reference.ravel())))
                detail = "with the residual measured on the corrected model"
            else:
                detail = f"residual not applied: {again.reason}"
            first.reason = f"{first.reason}; {detail}" if first.reason else detail


# no residual pass into these (module docstring)
_SQUASHING = frozenset(
    {op_kinds.SIGMOID, op_kinds.HSIGMOID, op_kinds.TANH, op_kinds.SOFTMAX, op_kinds.LOG_SOFTMAX}
)
_SHAPE_ONLY = frozenset(
    {op_kinds.RESHAPE, op_kinds.FLATTEN, op_kinds.SQUEEZE, op_kinds.UNSQUEEZE, op_kinds.TRANSPOSE}
)


def _squashed_by(graph: Graph, name: str) -> str | None:
    """The squashing function that reads ``name``'s output, through shape-only ops, if any."""
    stack, seen = [name], {name}
    while stack:
        for node in graph.successors(stack.pop()):
            if node.kind in _SQUASHING:
                return node.name
            if node.kind in _SHAPE_ONLY and node.name not in seen:
                seen.add(node.name)
                stack.append(node.name)
    return None


def _corrected_below(graph: Graph, corrected: dict[str, int]) -> dict[str, bool]:
    """For every node, whether a layer in ``corrected`` is downstream of it (one reverse sweep)."""
    below: dict[str, bool] = {}
    for node in reversed(graph.topological_order()):
        below[node.name] = any(s.name in corrected or below[s.name] for s in graph.successors(node.name))
    return below
