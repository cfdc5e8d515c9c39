"""Filter pruning of Keras models: channel groups, masks during training, physical removal.

The backend-neutral core (:mod:`nncompress.pruning`) analyses the graph of the Keras model
(``analyze_channels``: residual adds join their producers, depthwise convolutions and BatchNorm
follow, the next Conv/Dense reads), ranks filters (``L1``, ``L2``, ``geometric_median``), selects
channels for a level or a FLOPs reduction and follows the schedule. This module ties it to Keras:

- which layers can be cut (:func:`keras_supports`): Conv1D/2D/3D (grouped ones too, as torch's:
  whole groups removed, or the same channels of every group, see
  :func:`nncompress.pruning.rules.grouped_conv_mode`), Dense, DepthwiseConv1D/2D and
  BatchNormalization on channels-last tensors, each called once; anything else keeps its
  channels (printed by ``ctrl.describe_groups()``);
- during training a ``ChannelMask`` zeroes the output channels of every producer and follower of a
  pruned channel (after a fused activation), which is what the smaller model computes;
- :func:`prune_keras_model` rebuilds the functional graph with smaller layers (``filters`` /
  ``units`` reduced; the next layers take their input sizes from the new shapes) and sliced
  weights: the parameter count and the exported IR really shrink.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import tree

from nncompress.errors import PruningError
from nncompress.graph import Graph, Node
from nncompress.pruning.channels import ChannelDependencies, analyze_channels
from nncompress.pruning.cost import ModelCost, count_cost
from nncompress.pruning.grouped import grouped_kept_parts
from nncompress.pruning.importance import unit_importance
from nncompress.pruning.params import FilterPruningParams
from nncompress.pruning.selection import ChannelSelection, select_channels, select_for_flops
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.scopes import IgnoredScope
from nncompress.tensorflow.graph_builder import KerasTensor, Walk, walk
from nncompress.tensorflow.layers import safe_name
from nncompress.tensorflow.masking import ChannelMask

__all__ = ["KerasFilterPruning", "keras_supports", "kept_indices", "prune_keras_model"]

logger = logging.getLogger("nncompress")

_CONV = ("Conv1D", "Conv2D", "Conv3D")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
# layer class -> roles it can be cut in
_ROLES: dict[str, tuple[str, ...]] = {
    **{c: ("producer", "consumer") for c in _CONV},
    "Dense": ("producer", "consumer"),
    **{c: ("follower",) for c in _DEPTHWISE},
    "BatchNormalization": ("follower",),
}


def keras_supports(w: Walk):
    """``supports(node, role)`` for the channel analysis: the reason a node cannot be cut, or None."""
    counts: dict[int, int] = {}
    for step in w.steps:
        counts[id(step.layer)] = counts.get(id(step.layer), 0) + 1

    def supports(node: Node, role: str) -> str | None:
        step = w.by_name.get(node.name)
        if step is None:
            return f"'{node.name}' is part of a layer this backend does not cut (a separable convolution)"
        layer = step.layer
        cls = type(layer).__name__
        roles = _ROLES.get(cls)
        if cls in _CONV and int(getattr(layer, "groups", 1) or 1) > 1:
            roles = ("producer", "consumer", "follower")  # whole groups follow their producers
        if roles is None:
            return f"'{node.name}' is a {cls}, which filter pruning cannot cut in Keras models"
        if role not in roles:
            return f"'{node.name}' ({cls}) cannot be pruned as a {role}"
        if counts.get(id(layer), 0) > 1:
            return f"'{node.name}' ({cls}) is called several times: its channels stay"
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            return f"'{node.name}' ({cls}) is channels_first: only channels_last layers are cut"
        if cls == "BatchNormalization" and int(
            layer.axis if np.ndim(layer.axis) == 0 else layer.axis[0]
        ) not in (
            -1,
            len(step.inputs[0].shape) - 1,
        ):
            return f"'{node.name}' (BatchNormalization) does not normalize the last axis"
        return None

    return supports


def excluded_nodes(graph: Graph, params: FilterPruningParams, where: str = "compression") -> dict[str, str]:
    """Node -> reason for the layers ``ignored_scopes`` / ``target_scopes`` keep whole."""
    nodes = [n for n in graph.nodes if n.kind not in ("Parameter", "Result")]
    result: dict[str, str] = {}
    if params.ignored_scopes:
        scope = IgnoredScope.from_nncf_scopes(params.ignored_scopes, validate=params.validate_scopes)
        for name in scope.matches(nodes, f"{where}.ignored_scopes"):
            result[name] = f"'{name}' matches ignored_scopes"
    if params.target_scopes is not None:
        scope = IgnoredScope.from_nncf_scopes(params.target_scopes, validate=params.validate_scopes)
        targeted = scope.matches(nodes, f"{where}.target_scopes")
        for node in nodes:
            if node.weights and node.name not in targeted and node.name not in result:
                result[node.name] = f"'{node.name}' is not in target_scopes"
    return result


def kept_indices(units: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Positions along a layer's axis that stay (fixed channels always stay)."""
    return np.flatnonzero((units < 0) | keep[np.maximum(units, 0)])


class KerasFilterPruning:
    """Analysis, importance, selection and masks of one Keras model (see the module docstring).

    ``base`` is the model of the original architecture whose layers the compressed model uses;
    ``weights_of(node)`` reads a weight in the graph's layout from the compressed model.
    """

    def __init__(
        self, base: keras.Model, graph: Graph, params: FilterPruningParams, where: str = "compression"
    ):
        self.base = base
        self.graph = graph
        self.params = params
        self.walk = walk(base)
        self.deps: ChannelDependencies = analyze_channels(
            graph,
            prune_first_conv=params.prune_first_conv,
            prune_downsample_convs=params.prune_downsample_convs,
            excluded=excluded_nodes(graph, params, where),
            supports=keras_supports(self.walk),
        )
        self.original_cost: ModelCost = count_cost(graph)
        self._keep = np.ones(self.deps.num_units, dtype=bool)
        self.selection = ChannelSelection(self._keep.copy(), 0.0)
        self.mask_nodes: list[tuple[str, np.ndarray]] = []  # (node, units of its output channels)
        self.masks: list[ChannelMask] = []
        self.weights_of: Any = None  # set by the builder: node -> np.ndarray (graph layout)

    def require_prunable(self) -> None:
        if not self.deps.prunable_groups:
            raise PruningError(
                "filter_pruning: no layer of the Keras model can be pruned; every channel group is left out:\n"
                + self.deps.describe()
            )

    # -- masks -------------------------------------------------------------------------------
    def plan_masks(self) -> dict[TargetPoint, ChannelMask]:
        """One ``ChannelMask`` at the output of every producer / follower of a prunable channel
        (after its fused activation, if any): target point -> mask."""
        result: dict[TargetPoint, ChannelMask] = {}
        self.mask_nodes, self.masks = [], []
        prunable = ~self.deps.unit_fixed
        for lay in self.deps.layers.values():
            units = lay.out_units if lay.out_units is not None else lay.channel_units
            if units is None or not prunable[units[units >= 0]].any():
                continue
            step = self.walk.by_name[lay.node]
            act = step.fused_activation
            at = f"{lay.node}/{act}" if act is not None else lay.node
            mask = ChannelMask(
                len(units),
                -1,
                graph_name=f"{lay.node}/pruning_mask",
                name=safe_name(f"{lay.node}/pruning_mask"),
            )
            result[TargetPoint(TargetType.OUTPUT, at, 0)] = mask
            self.mask_nodes.append((lay.node, units))
            self.masks.append(mask)
        return result

    @property
    def keep(self) -> np.ndarray:
        """Kept units, read from the masks (they may come from a checkpoint's weights)."""
        if not self.masks:
            return self._keep
        keep = np.ones(self.deps.num_units, dtype=bool)
        for (_, units), mask in zip(self.mask_nodes, self.masks):
            off = np.asarray(mask.mask.numpy()) < 0.5
            keep[units[off & (units >= 0)]] = False
        return keep

    # -- importance and selection --------------------------------------------------------------
    def importance(self) -> np.ndarray:
        """Unit importance as NNCF 2.x ranks filters (see ``TorchFilterPruning.importance``); units
        already removed rank lowest, so they stay removed while the level grows."""
        weights: dict[str, np.ndarray] = {}
        for lay in self.deps.producers():
            if lay.weight is not None and lay.weight not in weights:
                weights[lay.weight] = np.asarray(self.weights_of(lay.node), dtype=np.float64)
        global_ranking = self.params.all_weights
        imp = unit_importance(
            self.deps,
            weights,
            self.params.filter_importance,
            normalize=global_ranking,
            reduce="sum" if global_ranking else "mean",
        )
        imp[~self.keep] = -np.inf
        return imp

    def select(self, level: float) -> ChannelSelection:
        return select_channels(self.deps, self.importance(), level, all_weights=self.params.all_weights)

    def select_flops(self, reduction: float) -> ChannelSelection:
        return select_for_flops(
            self.graph, self.deps, self.importance(), reduction, all_weights=self.params.all_weights
        )

    def apply(self, selection: ChannelSelection) -> None:
        self.selection = selection
        self._keep = selection.keep.copy()
        for note in selection.notes:
            logger.warning("filter_pruning: %s", note)
        for (_, units), mask in zip(self.mask_nodes, self.masks):
            mask.set_mask(((units < 0) | self._keep[np.maximum(units, 0)]).astype(np.float32))

    def cost(self) -> ModelCost:
        return count_cost(self.graph, self.deps, self.keep)

    def cuts(self) -> dict[str, dict[str, np.ndarray]]:
        """Node -> {"out": kept output channels, "in": kept input channels} for layers that change."""
        keep = self.keep
        result: dict[str, dict[str, np.ndarray]] = {}
        for lay in self.deps.layers.values():
            axes: dict[str, np.ndarray] = {}
            out_units = lay.channel_units if lay.channel_units is not None else lay.out_units
            if out_units is not None:
                idx = kept_indices(out_units, keep)
                if len(idx) < len(out_units):
                    axes["out"] = idx
            if lay.in_units is not None:
                idx = kept_indices(lay.in_units, keep)
                if len(idx) < len(lay.in_units):
                    axes["in"] = idx
            for axis, idx in axes.items():
                if len(idx) == 0:
                    raise PruningError(f"pruning would leave '{lay.node}' without {axis}put channels")
            if axes:
                result[lay.node] = axes
        return result


# ---------------------------------------------------------------------------------------------
# physical removal
# ---------------------------------------------------------------------------------------------
def _slice_weights(layer: Any, values: list[np.ndarray], cut: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """``layer``'s weights with the kept channels of ``cut`` ("out": output / own channels, "in": inputs)."""
    cls = type(layer).__name__
    out, inp = cut.get("out"), cut.get("in")
    if cls in _CONV and int(getattr(layer, "groups", 1) or 1) > 1:
        return _slice_grouped(layer, values, cut)
    if cls in _CONV or cls == "Dense":
        kernel = values[0]
        if inp is not None:
            kernel = np.take(kernel, inp, axis=-2)
        if out is not None:
            kernel = np.take(kernel, out, axis=-1)
        rest = [np.take(v, out, axis=-1) if out is not None else v for v in values[1:]]
        return [kernel, *rest]
    if cls in _DEPTHWISE:
        kernel = values[0]  # [k..., C, M]; logical channel c * M + m
        channels = inp
        if channels is None and out is not None:
            channels = out[:: kernel.shape[-1]] // kernel.shape[-1]
        if channels is None:
            return values
        kernel = np.take(kernel, channels, axis=-2)
        rest = [v.reshape(-1, values[0].shape[-1])[channels].reshape(-1) for v in values[1:]]
        return [kernel, *rest]
    if cls == "BatchNormalization":
        return [np.take(v, out, axis=0) if out is not None else v for v in values]
    raise PruningError(f"'{layer.name}' ({cls}) has no channel-pruning function in the Keras backend")


def _grouped_parts(layer: Any, cut: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per kept group of a grouped convolution: its kept filters (global indices) and its kept
    inputs (offsets inside the group). Every kept group keeps as many of each as the others."""
    groups = int(layer.groups)
    kernel_shape = tuple(int(d) for d in layer.kernel.shape)
    cin_g, cout = kernel_shape[-2], kernel_shape[-1]
    cout_g = cout // groups
    in_keep = np.asarray(cut.get("in", np.arange(cin_g * groups)))
    out_keep = np.asarray(cut.get("out", np.arange(cout)))
    return grouped_kept_parts(f"grouped convolution '{layer.name}'", groups, cin_g, cout_g, in_keep, out_keep)


def _slice_grouped(layer: Any, values: list[np.ndarray], cut: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """A grouped Keras kernel ``[k..., C_in/groups, C_out]`` cut group by group (the output
    channels of group ``g`` are ``g * C_out/groups ...``, its inputs read the same range)."""
    rows, offsets = _grouped_parts(layer, cut)
    kernel = values[0]
    parts = [np.take(np.take(kernel, o, axis=-2), r, axis=-1) for r, o in zip(rows, offsets)]
    kept = np.concatenate(rows)
    return [np.concatenate(parts, axis=-1), *[np.take(v, kept, axis=-1) for v in values[1:]]]


def _resized_config(layer: Any, cut: Mapping[str, np.ndarray]) -> dict[str, Any]:
    config = layer.get_config()
    out = cut.get("out")
    cls = type(layer).__name__
    if cut and cls in _CONV and int(getattr(layer, "groups", 1) or 1) > 1:
        rows, _ = _grouped_parts(layer, cut)
        config["groups"] = len(rows)
        config["filters"] = sum(len(r) for r in rows)
    elif out is not None and cls in _CONV:
        config["filters"] = len(out)
    elif out is not None and cls == "Dense":
        config["units"] = len(out)
    return config


def prune_keras_model(
    model: keras.Model, cuts: Mapping[str, Mapping[str, np.ndarray]], name: str | None = None
) -> keras.Model:
    """A new functional Keras model: ``model`` with the channels of ``cuts`` removed.

    ``cuts`` maps layer-call names (the graph's node names) to kept indices (``"out"``, ``"in"``,
    as :meth:`KerasFilterPruning.cuts` gives). Every layer is a new instance (the result shares no
    variable with ``model``); a layer not in ``cuts`` gets its weights unchanged.
    """
    w = walk(model)
    tmap: dict[int, Any] = {}
    new_inputs = []
    for input_name, t in zip(w.input_names, w.inputs):
        x = keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=input_name)
        new_inputs.append(x)
        tmap[id(t)] = x
    pending = dict(cuts)
    for step in w.steps:
        args, kwargs = tree.map_structure(
            lambda x: tmap[id(x)] if isinstance(x, KerasTensor) else x, (step.args, step.kwargs)
        )
        op = step.op
        if isinstance(op, keras.layers.Layer) and not isinstance(op, keras.Model):
            cut = pending.pop(step.name, {})
            config = _resized_config(op, cut)
            config["name"] = safe_name(step.name)
            new = type(op).from_config(config)
            new.graph_name = step.name  # nested models are flattened: walks find the graph's names
            outs = new(*args, **kwargs)
            values = [np.asarray(v) for v in op.get_weights()]
            if cut:
                values = _slice_weights(op, values, cut)
            try:
                new.set_weights(values)
            except ValueError as exc:
                raise PruningError(
                    f"the pruned model cannot take the weights of '{step.name}' ({type(op).__name__}): {exc}. "
                    "It reads pruned channels in a way the graph does not show; add it to ignored_scopes"
                ) from exc
        else:
            outs = op(*args, **kwargs)
        for old, new_t in zip(step.outputs, tree.flatten(outs)):
            tmap[id(old)] = new_t
    if pending:
        raise PruningError(f"the Keras model has no layer calls named {sorted(pending)[:5]} to prune")
    outputs = [tmap[id(t)] for t in w.outputs]
    struct = w.output_structure
    if struct is not None and len(tree.flatten(struct)) == len(outputs):
        packed = tree.pack_sequence_as(struct, outputs)
    else:
        packed = outputs[0] if len(outputs) == 1 else outputs
    return keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0], packed, name=name or model.name)
