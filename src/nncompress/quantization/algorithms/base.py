"""Pieces shared by the PTQ algorithms: calibration input handling, progress, layer queries.

Everything here is numpy and ``Graph`` only; backends are reached solely through the
``BackendAdapter`` protocol (``nncompress.quantization.backend_api``) plus the two extensions
SmoothQuant needs (``SmoothQuantAdapter`` in ``smooth_quant.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from nncompress.errors import DatasetError
from nncompress.graph import Graph, Node, WeightInfo, op_kinds
from nncompress.quantization.spec import Placement, TargetPoint, TargetType

# (stage description, items done, items expected or None). The lead wires tqdm onto this.
ProgressCallback = Callable[[str, int, "int | None"], None]

InputFactory = Callable[[], Iterable[Any]]


def stage_progress(progress: ProgressCallback | None, stage: str) -> Callable[[int, int | None], None] | None:
    """Bind a stage name to a progress callback (None stays None)."""
    if progress is None:
        return None

    def report(done: int, total: int | None) -> None:
        progress(stage, done, total)

    return report


def calibration_iterations(dataset_inputs: Any, subset_size: int | None) -> int | None:
    """How many items (model calls) ``subset_size`` samples take.

    A source that knows its batch size (``get_batch_size()``, as ``nncompress.Dataset``) gives
    ``ceil(subset_size / batch_size)`` model calls, as NNCF counts samples, not batches.
    """
    if subset_size is None:
        return _length(dataset_inputs)
    if subset_size <= 0:
        raise DatasetError(f"subset_size must be a positive number of samples, got {subset_size}")
    batch = None
    get_bs = getattr(dataset_inputs, "get_batch_size", None)
    if callable(get_bs):
        batch = get_bs()
    n = math.ceil(subset_size / batch) if batch and batch > 1 else subset_size
    length = _length(dataset_inputs)
    return n if length is None else min(n, length)


def _length(source: Any) -> int | None:
    getter = getattr(source, "get_length", None)
    if callable(getter):
        return getter()
    try:
        return len(source)
    except TypeError:
        return None


def input_factory(dataset_inputs: Any, subset_size: int | None) -> InputFactory:
    """A function giving a fresh iterable over the first calibration items, each call.

    Accepts ``nncompress.Dataset`` (its ``get_inference_data()``), a zero-argument callable that
    returns an iterable, a re-iterable collection (list, tuple), or a one-shot iterator, which is
    cached (up to the subset) the first time so several passes see the same items.
    """
    if dataset_inputs is None:
        raise DatasetError("No calibration dataset was given, but this algorithm needs activation statistics")
    n = calibration_iterations(dataset_inputs, subset_size)

    def limit(it: Iterable[Any]) -> Iterator[Any]:
        return iter(it) if n is None else itertools.islice(it, n)

    getter = getattr(dataset_inputs, "get_inference_data", None)
    if callable(getter):
        return lambda: limit(getter())
    if callable(dataset_inputs) and not hasattr(dataset_inputs, "__iter__"):
        return lambda: limit(dataset_inputs())
    if not hasattr(dataset_inputs, "__iter__"):
        raise DatasetError(f"Calibration inputs of type {type(dataset_inputs).__name__} are not iterable")
    if iter(dataset_inputs) is dataset_inputs:  # a one-shot iterator: cache the subset
        cache: list[Any] | None = None

        def cached() -> Iterator[Any]:
            nonlocal cache
            if cache is None:
                cache = list(limit(dataset_inputs))
            return iter(cache)

        return cached
    return lambda: limit(dataset_inputs)


# -- layers ------------------------------------------------------------------------------------
def activation_port(graph: Graph, node: Node) -> int | None:
    """The lowest input port of ``node`` fed by an edge and not by one of its weights."""
    ports = sorted(e.dst_port for e in graph.in_edges(node.name) if e.dst_port not in node.weights)
    return ports[0] if ports else None


def activation_channel_axis(node: Node) -> int:
    """Channel axis of the activations of ``node``: ``attrs['channel_axis']`` if the backend set
    it, else 1 for convolutions (NC...) and -1 (last) for MatMul/Linear and the rest."""
    axis = node.attrs.get("channel_axis")
    if isinstance(axis, int):
        return axis
    return 1 if node.kind in op_kinds.CONVOLUTION_KINDS else -1


def quantized_weight_nodes(placement: Placement | None) -> set[str] | None:
    if placement is None:
        return None
    return {p.target.node for p in placement.weight_points}


def bias_carrier(graph: Graph, node: Node) -> Node | None:
    """The node whose bias shifts the output of the weighted op ``node``: ``node`` itself when it
    has a bias, else the BatchNorm that alone reads its output (torch keeps Conv-BN pairs apart,
    the convolution without a bias; ONNX and OpenVINO fold the BatchNorm into it). None: neither.
    """
    if node.bias is not None:
        return node
    readers = graph.out_edges(node.name)
    if len(readers) != 1 or readers[0].dst_port != 0:
        return None
    reader = graph.node(readers[0].dst)
    return reader if reader.kind == op_kinds.BATCH_NORM and reader.bias is not None else None


def bias_correction_layers(graph: Graph, placement: Placement | None) -> list[Node]:
    """Weighted ops with a bias or a BatchNorm after them (``bias_carrier``), whose weight is
    quantized when a placement is given, in topological order."""
    quantized = quantized_weight_nodes(placement)
    out = []
    for node in graph.topological_order():
        if not node.has_weights or node.kind in (
            op_kinds.EMBEDDING,
            op_kinds.EMBEDDING_BAG,
            op_kinds.BATCH_NORM,
        ):
            continue
        if bias_carrier(graph, node) is None:
            continue
        if quantized is not None and node.name not in quantized:
            continue
        out.append(node)
    return out


def main_weight(node: Node) -> tuple[int, WeightInfo] | None:
    """The weight of a single-weight op (port, info); None when it has zero or several."""
    if len(node.weights) != 1:
        return None
    port, info = next(iter(node.weights.items()))
    return port, info


def input_statistic_target(graph: Graph, placement: Placement | None, node: Node, port: int) -> TargetPoint:
    """Where to observe the input of ``node:port`` *before* the quantizer that feeds it.

    If an activation quantizer serves this input and sits on the same tensor (this input port,
    or the producer's output port of the edge into it), its target is returned: statistics at a
    quantizer's target observe the value entering the quantizer. Otherwise the input port itself.
    """
    here = TargetPoint(TargetType.INPUT, node.name, port)
    if placement is None:
        return here
    producers = {(e.src, e.src_port) for e in graph.in_edges(node.name) if e.dst_port == port}
    for p in placement.activation_points:
        if p.target == here:
            return here
        serves = (node.name, port) in p.consumers
        if serves and p.target.type == TargetType.OUTPUT and (p.target.node, p.target.port) in producers:
            return p.target
    return here


class BlockDiagonal:
    """A block-diagonal (out, in) matrix kept as its ``(groups, out/groups, in/groups)`` blocks.

    A grouped convolution's ``M``: dense, a depthwise layer of 1152 channels would be a
    1152 x 1152 float64 matrix (10 MiB; EfficientNet-Lite0's 16 of them held 57 MiB during
    fast bias correction). ``m @ x``, ``m.shape`` and ``np.asarray(m)`` work as for the dense one.
    """

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    @property
    def shape(self) -> tuple[int, int]:
        g, o, i = self.blocks.shape
        return g * o, g * i

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        g, _, i = self.blocks.shape
        return np.einsum("goi,gi->go", self.blocks, np.asarray(x).reshape(g, i)).reshape(-1)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        g, o, i = self.blocks.shape
        full = np.zeros(self.shape, dtype=dtype or self.blocks.dtype)
        for k in range(g):
            full[k * o : (k + 1) * o, k * i : (k + 1) * i] = self.blocks[k]
        return full


def mean_transfer_matrix(
    weight: np.ndarray, info: WeightInfo, groups: int = 1, coverage: np.ndarray | None = None
) -> np.ndarray | BlockDiagonal | None:
    """Matrix ``M`` (out, in) with ``mean(y)[o] = sum_i M[o, i] * mean(x)[i]`` for a linear op.

    Exact for MatMul/Linear. For convolutions the kernel taps are summed, each weighted by
    ``coverage`` (the share of output positions where that tap reads the input and not padding,
    ``conv_tap_coverage``; without it every tap counts fully, which overstates the border taps of
    small feature maps). Grouped convolutions give a ``BlockDiagonal``. None when the layout is
    not understood.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 2:
        return None
    out_ax, in_ax = info.out_channel_axis % w.ndim, info.in_channel_axis % w.ndim
    if out_ax == in_ax:
        return None
    if coverage is not None:
        if coverage.ndim > w.ndim - 2 or w.shape[w.ndim - coverage.ndim :] != coverage.shape:
            return None
        if w.ndim - coverage.ndim <= max(out_ax, in_ax):
            return None  # the kernel taps are not the trailing axes
        w = w * coverage
    other = tuple(a for a in range(w.ndim) if a not in (out_ax, in_ax))
    summed = w.sum(axis=other) if other else w
    # axes left: (min(out, in), max(out, in)) in that order
    m = summed if out_ax < in_ax else summed.T
    if groups <= 1:
        return m
    out_total, in_per_group = m.shape
    if out_total % groups:
        return None
    return BlockDiagonal(m.reshape(groups, out_total // groups, in_per_group))


def node_groups(node: Node) -> int:
    groups = node.attrs.get("groups", 1)
    try:
        return max(int(groups), 1)
    except (TypeError, ValueError):
        return 1


def _per_dim(value: Any, nd: int, default: int) -> tuple[int, ...] | None:
    if value is None:
        return (default,) * nd
    if isinstance(value, (int, np.integer)):
        return (int(value),) * nd
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == nd else None


def _pads_begin(padding: Any, nd: int, kernel, stride, dilation, in_sp, out_sp) -> tuple[int, ...] | None:
    """Leading padding per spatial dim: from ``(begins...)``, ``(begins..., ends...)`` or an int;
    ``"valid"`` is 0; missing or ``"same"`` is derived from the shapes (the extra pad at the end,
    as torch and ONNX's SAME_UPPER do)."""
    if isinstance(padding, str) and padding.lower() == "valid":
        return (0,) * nd
    if padding is not None and not isinstance(padding, str):
        if isinstance(padding, (tuple, list)) and len(padding) == 2 * nd:
            padding = padding[:nd]
        return _per_dim(padding, nd, 0)
    begins = []
    for k, s, d, i, o in zip(kernel, stride, dilation, in_sp, out_sp):
        total = (o - 1) * s + (k - 1) * d + 1 - i
        begins.append(max(total, 0) // 2)
    return tuple(begins)


def conv_tap_coverage(node: Node, in_shape: Any, out_shape: Any) -> np.ndarray | None:
    """Per kernel tap, the share of output positions where the tap reads the input rather than
    padding, for a (non-transposed) convolution with channels-first activations of static
    spatial shape; None when not known. A 3x3 "same" convolution on a 4x4 map reads padding at
    the border taps for a quarter of its positions each: a constant input shift moves the output
    mean by the covered taps only."""
    if node.kind not in op_kinds.CONVOLUTION_KINDS or node.kind == op_kinds.CONVOLUTION_TRANSPOSE:
        return None
    if node.attrs.get("transpose") or activation_channel_axis(node) != 1:
        return None
    kernel = node.attrs.get("kernel_size")
    if not kernel or in_shape is None or out_shape is None:
        return None
    nd = len(kernel)
    in_sp, out_sp = tuple(in_shape)[2:], tuple(out_shape)[2:]
    if len(in_sp) != nd or len(out_sp) != nd:
        return None
    if not all(isinstance(v, (int, np.integer)) and v > 0 for v in in_sp + out_sp):
        return None  # dynamic spatial dims
    stride = _per_dim(node.attrs.get("stride"), nd, 1)
    dilation = _per_dim(node.attrs.get("dilation"), nd, 1)
    if stride is None or dilation is None:
        return None
    pads = _pads_begin(node.attrs.get("padding"), nd, kernel, stride, dilation, in_sp, out_sp)
    if pads is None:
        return None
    coverage = np.ones(())
    for k, s, d, p, i, o in zip(kernel, stride, dilation, pads, in_sp, out_sp):
        read = np.arange(o)[None, :] * s - p + np.arange(k)[:, None] * d  # (tap, output position)
        share = ((read >= 0) & (read < i)).mean(axis=1)
        coverage = np.multiply.outer(coverage, share)
    return coverage


def layer_transfer_matrix(
    node: Node, weight: np.ndarray, info: WeightInfo, in_shape: Any = None, out_shape: Any = None
) -> np.ndarray | BlockDiagonal | None:
    """``mean_transfer_matrix`` for the weighted op ``node`` (groups from its attributes; a
    depthwise convolution without a ``groups`` attribute is one group per channel), padding-aware
    when the activation shapes are given (``conv_tap_coverage``). Grouped transposed convolutions
    are not handled (None)."""
    groups = node_groups(node)
    transposed = node.kind == op_kinds.CONVOLUTION_TRANSPOSE or bool(node.attrs.get("transpose"))
    if transposed and groups > 1:
        return None
    if node.kind == op_kinds.DEPTHWISE_CONVOLUTION and groups == 1:
        w = np.asarray(weight)
        groups = w.shape[info.out_channel_axis] if w.ndim >= 2 and w.shape[info.in_channel_axis] == 1 else 1
    return mean_transfer_matrix(weight, info, groups, conv_tap_coverage(node, in_shape, out_shape))
