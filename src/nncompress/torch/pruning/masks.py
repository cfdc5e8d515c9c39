"""Binary channel masks applied to weights during training, through the hook runtime.

A :class:`ChannelMask` sits on a weight port (``TargetType.WEIGHT``) of an op and multiplies the
weight by a 0/1 vector along one axis before the op uses it. The masks of a pruned channel are:

- the producer's filter (weight rows) and bias: the filter's output is zero;
- the BatchNorm (or depthwise convolution) that follows it, when ``prune_batch_norms``: its scale
  and shift for that channel are zero, so the channel stays zero after normalization;
- every consumer's input weights for that channel: whatever reaches the consumer on that channel
  (e.g. ``sigmoid(0) = 0.5``) is ignored, so the masked model computes exactly what the model
  with the channel physically removed computes.

The parameters themselves are never changed; the masks are buffers, saved in ``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nncompress.graph import Graph
from nncompress.graph import op_kinds as K
from nncompress.pruning.channels import ChannelDependencies
from nncompress.quantization.spec import TargetPoint, TargetType

__all__ = ["ChannelMask", "MaskPoint", "insert_masks", "plan_masks", "target_units", "update_masks"]

# ops whose bias argument comes right after the weight (so its tensor port is the weight's + 1)
_BIAS_AFTER_WEIGHT = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "batch_norm",
        "instance_norm",
    }
)
_NORM_KINDS = frozenset({K.BATCH_NORM, K.INSTANCE_NORM})


class ChannelMask(nn.Module):
    """``forward(w) = w * mask`` with ``mask`` (a 0/1 buffer) broadcast along ``axis``."""

    def __init__(self, size: int, axis: int):
        super().__init__()
        self.axis = int(axis)
        self.register_buffer("mask", torch.ones(int(size)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = [1] * weight.dim()
        shape[self.axis] = -1
        return weight * self.mask.to(device=weight.device, dtype=weight.dtype).view(shape)

    def extra_repr(self) -> str:
        kept = int(self.mask.sum().item())
        return f"axis={self.axis}, kept={kept}/{self.mask.numel()}"


@dataclass(frozen=True)
class MaskPoint:
    """Where one mask goes and which unit each of its positions belongs to."""

    target: TargetPoint
    axis: int
    units: np.ndarray
    role: str  # "filters", "bias", "inputs", "follower"

    def keep(self, keep: np.ndarray) -> np.ndarray:
        return (self.units < 0) | keep[np.maximum(self.units, 0)]


def plan_masks(graph: Graph, deps: ChannelDependencies, *, prune_batch_norms: bool) -> list[MaskPoint]:
    """Mask points for every op touching a prunable channel (see the module docstring)."""
    points: list[MaskPoint] = []
    prunable = ~deps.unit_fixed

    def touches(units: np.ndarray | None) -> bool:
        if units is None:
            return False
        ok = units[units >= 0]
        return bool(len(ok)) and bool(prunable[ok].any())

    for name, lay in deps.layers.items():
        node = graph.node(name)
        if not node.weights:
            continue
        port = min(node.weights)
        bias_port = port + 1 if node.bias and node.op_type in _BIAS_AFTER_WEIGHT else None
        if lay.channel_units is not None:
            if not touches(lay.channel_units) or (node.kind in _NORM_KINDS and not prune_batch_norms):
                continue
            points.append(
                MaskPoint(
                    TargetPoint(TargetType.WEIGHT, name, port), lay.out_axis, lay.channel_units, "follower"
                )
            )
            if bias_port is not None:
                points.append(
                    MaskPoint(TargetPoint(TargetType.WEIGHT, name, bias_port), 0, lay.channel_units, "bias")
                )
            continue
        if touches(lay.out_units):
            points.append(
                MaskPoint(TargetPoint(TargetType.WEIGHT, name, port), lay.out_axis, lay.out_units, "filters")
            )
            if bias_port is not None:
                points.append(
                    MaskPoint(TargetPoint(TargetType.WEIGHT, name, bias_port), 0, lay.out_units, "bias")
                )
        if touches(lay.in_units):
            points.append(
                MaskPoint(
                    TargetPoint(TargetType.WEIGHT, name, port),
                    lay.in_axis,
                    _per_weight_inputs(lay.in_units, node.weights[port].shape[lay.in_axis]),
                    "inputs",
                )
            )
    return points


def _per_weight_inputs(in_units: np.ndarray, width: int) -> np.ndarray:
    """The unit of each input position of a weight: a grouped convolution's weight has
    ``cin / groups`` input positions, each read in every group; the analysis joins the channels at
    one offset of every group (or removes whole groups, and then the filters' mask suffices), so
    a position takes the unit found at it in any group."""
    if len(in_units) == width or width <= 0 or len(in_units) % width:
        return in_units
    rows = in_units.reshape(-1, width)
    return rows.max(axis=0)


def target_units(
    graph: Graph, deps: ChannelDependencies, target: TargetPoint, axis: int, ndim: int
) -> np.ndarray | None:
    """The unit of each position along ``axis`` of the tensor at ``target`` (FIXED where fixed),
    or None when the analysis put no unit there (the axis keeps all its channels).

    Weight ports follow the op's weight (``out_axis``/``in_axis``) or bias (axis 0), as the masks
    do; input and output ports follow the channel map of the tensor. ``ndim`` is the tensor's
    rank (to compare negative axes). Per-channel hooks on a pruned tensor (a quantizer on a
    pruned weight) are cut to the kept positions of these units.
    """
    axis = axis % ndim
    if target.type is TargetType.WEIGHT:
        lay = deps.layers.get(target.node)
        node = graph.node(target.node) if lay is not None else None
        if node is None or not node.weights:
            return None
        port = min(node.weights)
        own = lay.channel_units if lay.channel_units is not None else lay.out_units
        if target.port == port:
            if axis == lay.out_axis % ndim:
                return own
            if axis == lay.in_axis % ndim and lay.channel_units is None:
                return lay.in_units
            return None
        if node.bias and node.op_type in _BIAS_AFTER_WEIGHT and target.port == port + 1 and axis == 0:
            return own
        return None
    if target.type is TargetType.OUTPUT:
        key = (target.node, target.port)
    else:
        edges = [e for e in graph.in_edges(target.node) if e.dst_port == target.port]
        if not edges:
            return None
        key = (edges[0].src, edges[0].src_port)
    entry = deps.tensor_units.get(key)
    if entry is None or entry[0] % ndim != axis:
        return None
    return entry[1]


def insert_masks(model: nn.Module, points: list[MaskPoint]) -> list[ChannelMask]:
    """A :class:`ChannelMask` (all ones) at every point of the wrapped ``model``."""
    masks = []
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    for p in points:
        mask = ChannelMask(len(p.units), p.axis).to(device)
        model.nncf.insert(p.target, mask)
        masks.append(mask)
    return masks


def update_masks(points: list[MaskPoint], masks: list[ChannelMask], keep: np.ndarray) -> None:
    """Set every mask from ``keep`` (a mask over units)."""
    with torch.no_grad():
        for p, m in zip(points, masks):
            m.mask.copy_(torch.from_numpy(p.keep(keep).astype(np.float32)))
