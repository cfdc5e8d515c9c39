"""FLOPs and parameter counts of a graph, before and after removing channels.

FLOPs count the multiply-accumulates of convolutions and fully connected layers, twice (one
multiply and one add each), per sample (the batch dimension of the traced shapes is left out):

- convolution: ``2 * out_spatial * out_channels * in_channels / groups * prod(kernel)``;
- transposed convolution: ``2 * in_spatial * in_channels * out_channels / groups * prod(kernel)``;
- fully connected (``linear``): ``2 * tokens * in_features * out_features``.

Parameters are every weight and bias the graph records (convolutions, linear layers,
normalization layers, embeddings...), each counted once even when several ops share it.

With a ``keep`` mask over the units of a :class:`~nncompress.pruning.channels.ChannelDependencies`,
every layer is counted with the channels it would have after pruning: a producer's kept filters,
a consumer's kept input channels (features, after a flatten), a follower's kept channels, and a
depthwise (or grouped) convolution's kept groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nncompress.graph import Graph, Node
from nncompress.graph import op_kinds as K
from nncompress.pruning.channels import ChannelDependencies, LayerChannels

__all__ = ["LayerCost", "ModelCost", "count_cost", "kept_count"]


@dataclass(frozen=True)
class LayerCost:
    """One op: channels in and out (after pruning), FLOPs, and the parameters it owns."""

    in_channels: int
    out_channels: int
    flops: int
    params: int


@dataclass
class ModelCost:
    """FLOPs and parameters of a whole graph, and per op."""

    flops: int = 0
    params: int = 0
    layers: dict[str, LayerCost] = field(default_factory=dict)


def kept_count(units: np.ndarray | None, keep: np.ndarray | None, default: int) -> int:
    """How many of a layer's channels remain (FIXED channels always remain)."""
    if units is None:
        return default
    if keep is None:
        return len(units)
    return int(((units < 0) | keep[np.maximum(units, 0)]).sum())


def _shape(graph: Graph, node: Node, out: bool) -> tuple | None:
    edges = graph.out_edges(node.name) if out else [e for e in graph.in_edges(node.name) if e.dst_port == 0]
    for e in edges:
        shape = e.tensor.shape
        if shape is not None and shape and shape[0] is None:  # an unknown batch (Keras): count one sample
            shape = (1, *shape[1:])
        if shape is not None and all(isinstance(d, int) for d in shape):
            return tuple(shape)
    return None


def _spatial(shape: tuple | None, kernel_dims: int, channel_axis: int | None = None) -> int:
    if shape is None or kernel_dims == 0:
        return 1
    if channel_axis is not None:  # channels-last layouts (Keras) name their channel axis
        axis = channel_axis % len(shape)
        shape = (*shape[:axis], *shape[axis + 1 :])
    return math.prod(shape[len(shape) - kernel_dims :])


def _conv_cost(
    graph: Graph, node: Node, lay: LayerChannels | None, keep: np.ndarray | None
) -> LayerCost | None:
    w = node.weights[min(node.weights)]
    cin, cout = node.attrs.get("in_channels"), node.attrs.get("out_channels")
    groups = int(node.attrs.get("groups", 1) or 1)
    kernel = node.attrs.get("kernel_size") or tuple(w.shape[2:])
    if cin is None or cout is None:
        return None
    k = math.prod(kernel)
    if lay is not None and lay.channel_units is not None:
        # depthwise, or grouped with whole groups removed: the kept groups follow the channels
        groups = max(groups, 1)
        cin_g, cout_g = cin // groups, max(cout // groups, 1)
        cout = kept_count(lay.channel_units, keep, cout)
        groups = cout // cout_g
        cin = groups * cin_g
    elif lay is not None:
        cin = kept_count(lay.in_units, keep, cin)
        cout = kept_count(lay.out_units, keep, cout)
    groups = max(groups, 1)
    axis = node.attrs.get("channel_axis")
    if node.attrs.get("transpose"):
        macs = _spatial(_shape(graph, node, out=False), len(kernel), axis) * cin * (cout // groups) * k
        weight_params = cin * (cout // groups) * k
    else:
        macs = _spatial(_shape(graph, node, out=True), len(kernel), axis) * cout * (cin // groups) * k
        weight_params = cout * (cin // groups) * k
    return LayerCost(cin, cout, 2 * macs, weight_params + (cout if node.bias else 0))


def _linear_cost(graph: Graph, node: Node, lay: LayerChannels | None, keep: np.ndarray | None) -> LayerCost:
    port = min(node.weights)
    w = node.weights[port]
    cin, cout = w.shape[w.in_channel_axis], w.shape[w.out_channel_axis]
    extra = math.prod(d for i, d in enumerate(w.shape) if i not in (w.in_channel_axis, w.out_channel_axis))
    if lay is not None:
        cin = kept_count(lay.in_units, keep, cin)
        cout = kept_count(lay.out_units, keep, cout)
    out = _shape(graph, node, out=True)
    tokens = math.prod(out[1:-1]) if out is not None and len(out) > 2 else 1
    return LayerCost(
        cin, cout, 2 * tokens * cin * cout * extra, cin * cout * extra + (cout if node.bias else 0)
    )


def _other_cost(node: Node, lay: LayerChannels | None, keep: np.ndarray | None) -> LayerCost:
    """Normalization layers, embeddings, PReLU...: parameters only."""
    params = 0
    channels = 0
    for w in node.weights.values():
        n = math.prod(w.shape)
        if lay is not None and lay.channel_units is not None and w.shape:
            axis = lay.out_axis
            kept = kept_count(lay.channel_units, keep, w.shape[axis])
            n = n // w.shape[axis] * kept
            channels = kept
        elif lay is not None and lay.out_units is not None and w.shape:
            axis = lay.out_axis
            kept = kept_count(lay.out_units, keep, w.shape[axis])
            n = n // w.shape[axis] * kept
            channels = kept
        else:
            channels = w.shape[0] if w.shape else 1
        params += n
    if node.bias:
        params += channels
    return LayerCost(channels, channels, 0, params)


def count_cost(
    graph: Graph, deps: ChannelDependencies | None = None, keep: np.ndarray | None = None
) -> ModelCost:
    """FLOPs and parameters of ``graph``; with ``deps`` and ``keep``, as if pruned by ``keep``."""
    result = ModelCost()
    seen: set[str] = set()
    layers = deps.layers if deps is not None else {}
    for node in graph.nodes:
        if not node.weights:
            continue
        lay = layers.get(node.name)
        cost: LayerCost | None
        if node.kind in K.CONVOLUTION_KINDS:
            cost = _conv_cost(graph, node, lay, keep)
        elif node.kind == K.MATMUL and len(node.weights[min(node.weights)].shape) >= 2:
            cost = _linear_cost(graph, node, lay, keep)
        else:
            cost = _other_cost(node, lay, keep)
        if cost is None:
            continue
        names = [w.name for w in node.weights.values()] + ([node.bias] if node.bias else [])
        shared = any(n in seen for n in names)
        seen.update(names)
        if shared:  # a module called again: its FLOPs count, its parameters do not
            cost = LayerCost(cost.in_channels, cost.out_channels, cost.flops, 0)
        result.layers[node.name] = cost
        result.flops += cost.flops
        result.params += cost.params
    return result
