"""The TensorFlow/Keras implementation of ``BackendAdapter``: Keras models with fake quantizers.

- ``build_graph``: ``graph_builder.build_index`` (names, weights, biases: see there).
- ``collect_statistics``: the model is rebuilt as a functional model sharing its layers, with
  fused activations split out (so a convolution's output before its activation exists), and
  the tensors asked for as extra outputs; it runs once per calibration item
  (one ``tf.function``) and each tensor is reduced with ``statistics.reduce_batch``. In a
  quantized model a statistic at a quantized tensor sees the tensor going *into* its quantizer.
- ``apply``: a copy of the model (``keras.models.clone_model`` + weights) rebuilt as a
  functional model with ``FakeQuantize`` layers at the target points (``OUTPUT``: read by every
  consumer, model outputs included; ``INPUT``: only by that consumer) and ``QuantizedLayer``
  calls for quantized weights. The user's model is not changed; the inputs keep their names.
  A ``SeparableConv1D/2D`` becomes a depthwise and a 1x1 convolution (``split_separable``), with
  the quantizers its two graph nodes get.
- weights and biases are the layers' variables, read and assigned in place.

Activations are quantized per tensor: a per-channel activation quantizer on a channels-last
tensor of rank 3 or more is refused (the core's statistics assume channels on axis 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from nncompress.errors import DatasetError, GraphError, QuantizationError
from nncompress.graph import Graph
from nncompress.quantization.backend_api import StatisticRequest
from nncompress.quantization.feeding import cast_input, describe_item
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, TargetPoint, TargetType
from nncompress.quantization.statistics import reduce_batch
from nncompress.tensorflow.graph_builder import KerasTensor, Walk, build_index, walk
from nncompress.tensorflow.layers import (
    CORE_OPS,
    FakeQuantize,
    QuantizedLayer,
    SplitActivation,
    core_key,
    is_depthwise,
    safe_name,
    split_separable,
    weight_variable,
)

PLACEMENT_ATTRIBUTE = "_nncompress_placement"


# ---------------------------------------------------------------------------------------------
# calibration inputs
# ---------------------------------------------------------------------------------------------
def to_array(value: Any) -> np.ndarray:
    """A numpy array of a tf.Tensor, a torch tensor or an array-like."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            return np.asarray(value.numpy())
        except Exception:  # a torch tensor that needs detaching: let cast_input handle it
            pass
    return value


def make_feed(w: Walk, item: Any, position: int = 0) -> list[np.ndarray]:
    """One calibration item -> a list of arrays, one per model input (in the model's order).

    An item is an array (the first input), a tuple/list (inputs in order) or a dict (by input
    name). Floats are cast to the input's float dtype, integers to its integer dtype.
    """
    names = w.input_names
    if isinstance(item, Mapping):
        unknown = [k for k in item if k not in names]
        if unknown:
            raise DatasetError(
                f"Calibration item {position} names inputs {unknown} the Keras model does not have; inputs: {names}"
            )
        values = {names.index(k): v for k, v in item.items()}
    elif isinstance(item, (tuple, list)):
        if len(item) > len(names):
            raise DatasetError(
                f"Calibration item {position} has {len(item)} values, the Keras model takes {len(names)} inputs "
                f"{names}; pick the model inputs with the Dataset's transform_fn"
            )
        values = dict(enumerate(item))
    else:
        values = {0: item}
    missing = [names[i] for i in range(len(names)) if i not in values]
    if missing:
        raise DatasetError(f"Calibration item {position} gives no value for the Keras model inputs {missing}")
    feed = []
    for i, t in enumerate(w.inputs):
        arr = cast_input(to_array(values[i]), np.dtype(str(t.dtype)), position, f"'{names[i]}'", "Keras")
        expected = tuple(t.shape)
        if arr.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, arr.shape)):
            raise DatasetError(
                f"Calibration item {position}: input '{names[i]}' has shape {arr.shape}, the Keras model expects "
                f"{expected} (None: any size; the first axis is the batch)"
            )
        feed.append(arr)
    return feed


# ---------------------------------------------------------------------------------------------
# rebuilding a model (split activations, quantizers)
# ---------------------------------------------------------------------------------------------
@dataclass
class Rebuilt:
    """A rebuilt functional model and the tensors of its graph ports (before quantizers)."""

    model: keras.Model
    outputs_of: dict[tuple[str, int], Any]  # (node, output port) -> tensor
    inputs_of: dict[tuple[str, int], Any]  # (node, input port) -> tensor


def _output_names(w: Walk) -> list[str]:
    taken = set(w.by_name) | set(w.input_names)
    names = []
    for i in range(len(w.outputs)):
        name = f"output_{i}"
        while name in taken:
            name += "_"
        names.append(name)
    return names


def rebuild(
    w: Walk,
    activation_quantizers: Mapping[TargetPoint, FakeQuantize] | None = None,
    weight_quantizers: Mapping[str, FakeQuantize] | None = None,
    name: str | None = None,
) -> Rebuilt:
    """``w``'s model as a new functional model sharing its layers (see the module docstring)."""
    act_q = dict(activation_quantizers or {})
    w_q = dict(weight_quantizers or {})
    tmap: dict[int, Any] = {}
    raw: dict[int, Any] = {}  # id(new tensor) -> the tensor before inserted quantizers
    outputs_of: dict[tuple[str, int], Any] = {}
    inputs_of: dict[tuple[str, int], Any] = {}
    used: set[TargetPoint] = set()

    def quantized(target: TargetPoint, x: Any) -> Any:
        fq = act_q.get(target)
        if fq is None:
            return x
        used.add(target)
        y = fq(x)
        raw[id(y)] = raw.get(id(x), x)
        return y

    new_inputs = []
    for input_name, t in zip(w.input_names, w.inputs):
        x = keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=input_name)
        new_inputs.append(x)
        outputs_of[(input_name, 0)] = x
        tmap[id(t)] = quantized(TargetPoint(TargetType.OUTPUT, input_name, 0), x)

    for step in w.steps:
        port = 0
        first = f"{step.name}/depthwise" if step.separable else step.name  # the node reading the inputs

        def substitute(x: Any, step_name: str = first) -> Any:
            nonlocal port
            if not isinstance(x, KerasTensor):
                return x
            new = tmap[id(x)]
            inputs_of[(step_name, port)] = raw.get(id(new), new)
            new = quantized(TargetPoint(TargetType.INPUT, step_name, port), new)
            port += 1
            return new

        args, kwargs = tree.map_structure(substitute, (step.args, step.kwargs))
        if step.inserted:
            out = step.op(*args, **kwargs)
            raw[id(out)] = raw.get(id(args[0]), args[0])
            tmap[id(step.outputs[0])] = out
            continue
        op = step.op
        act = step.fused_activation
        wq = w_q.pop(step.name, None)
        if wq is not None and isinstance(op, QuantizedLayer) and op.weight_quantizer is not None:
            raise QuantizationError(f"Layer '{step.name}' already has quantized weights")
        if step.separable:  # two calls, with the quantizers of the tensor between them
            half = f"{step.name}/depthwise"
            dw_layer, pw_layer = split_separable(step.layer, tuple(step.inputs[0].shape))
            dw = QuantizedLayer(dw_layer, w_q.pop(half, None), graph_name=half, name=safe_name(half))
            y = dw(*args, **kwargs)
            outputs_of[(half, 0)] = y
            y = quantized(TargetPoint(TargetType.OUTPUT, half, 0), y)
            inputs_of[(step.name, 0)] = raw.get(id(y), y)
            args, kwargs = (quantized(TargetPoint(TargetType.INPUT, step.name, 0), y),), {}
            op = QuantizedLayer(pw_layer, wq, graph_name=step.name, name=safe_name(step.name))
        elif act is not None or wq is not None:
            if type(step.layer).__name__ not in CORE_OPS:
                raise QuantizationError(
                    f"Layer '{step.name}' ({type(step.layer).__name__}) has no quantized form for its weights"
                )
            op = QuantizedLayer(step.layer, wq, graph_name=step.name, name=safe_name(step.name))
        outs = tree.flatten(op(*args, **kwargs))
        last = step.name
        if act is not None:
            outputs_of[(step.name, 0)] = outs[0]
            last = f"{step.name}/{act}"
            outs = [SplitActivation(act, graph_name=last, name=safe_name(last))(outs[0])] + outs[1:]
        for p, (old, new) in enumerate(zip(step.outputs, outs)):
            outputs_of[(last, p)] = new
            tmap[id(old)] = quantized(TargetPoint(TargetType.OUTPUT, last, p), new)

    outputs = []
    for out_name, t in zip(_output_names(w), w.outputs):
        new = tmap[id(t)]
        inputs_of[(out_name, 0)] = raw.get(id(new), new)
        outputs.append(quantized(TargetPoint(TargetType.INPUT, out_name, 0), new))
    unused = [str(t) for t in act_q if t not in used] + [f"{n}:weight" for n in w_q]
    if unused:
        raise GraphError(f"Quantizer target(s) not found in the Keras model: {', '.join(unused[:5])}")
    struct = w.output_structure
    if struct is not None and len(tree.flatten(struct)) == len(outputs):
        packed = tree.pack_sequence_as(struct, outputs)
    else:
        packed = outputs[0] if len(outputs) == 1 else outputs
    in_struct = w.input_structure
    if in_struct is not None and len(tree.flatten(in_struct)) == len(new_inputs):
        model_inputs = tree.pack_sequence_as(in_struct, new_inputs)
    else:
        model_inputs = new_inputs if len(new_inputs) > 1 else new_inputs[0]
    model = keras.Model(model_inputs, packed, name=name or w.model.name)
    return Rebuilt(model, outputs_of, inputs_of)


def target_tensor(r: Rebuilt, target: TargetPoint) -> Any:
    """The tensor a statistic at ``target`` observes in the rebuilt model."""
    key = (target.node, target.port)
    table = r.outputs_of if target.type is TargetType.OUTPUT else r.inputs_of
    if target.type is TargetType.WEIGHT:
        raise GraphError(f"{target}: weights are read with get_weight, not collected")
    if key not in table:
        raise GraphError(f"{target}: the Keras model has no such tensor")
    return table[key]


# ---------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------
class Adapter:
    """TensorFlow/Keras backend for the core algorithms (graph, statistics, weights, fake quantizers)."""

    def __init__(self) -> None:
        self.graph: Graph | None = None

    # -- graph --------------------------------------------------------------------------------
    def build_graph(self, model: keras.Model, example_input: Any = None) -> Graph:
        index = build_index(model, warn_unknown=False)  # quantize() names unknown layers
        if example_input is not None:
            make_feed(index.walk, example_input)
        self.graph = index.graph
        return self.graph

    # -- statistics ---------------------------------------------------------------------------
    def collect_statistics(
        self,
        model: keras.Model,
        inputs: Iterable[Any],
        sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]],
    ) -> int:
        w = walk(model)
        r = rebuild(w, name="nncompress_statistics")
        by_tensor: dict[int, tuple[Any, list]] = {}
        for request, sink in sinks.items():
            t = target_tensor(r, request.target)
            by_tensor.setdefault(id(t), (t, []))[1].append((request, sink))
        wanted = [(t, reqs) for t, reqs in by_tensor.values() if str(t.dtype).startswith(("float", "bfloat"))]
        run = None
        if wanted:
            stats_model = keras.Model(r.model.inputs, [t for t, _ in wanted])
            # one traced function for all batches (shapes may vary: no retracing per batch size)
            run = tf.function(lambda xs: stats_model(xs, training=False), reduce_retracing=True)
        count = 0
        for item in inputs:
            feed = make_feed(w, item, count)
            if run is not None:
                try:
                    outs = run(feed if len(feed) > 1 else feed[0])
                except Exception as exc:
                    raise DatasetError(
                        f"Keras failed on calibration item {count} ({describe_item(item)}): {type(exc).__name__}: {exc}"
                    ) from exc
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                for (_, reqs), x in zip(wanted, outs):
                    x = x.numpy()
                    for request, sink in reqs:
                        sink(reduce_batch(x, request.reducer, request.keep_axis, request.q))
            count += 1
        return count

    # -- weights and biases -------------------------------------------------------------------
    def _layer(self, model: keras.Model, node: str) -> tuple[Any, str | None]:
        """The layer holding ``node``'s variables, and which half of a separable convolution it is."""
        w = walk(model)
        if node in w.by_name:
            step = w.by_name[node]
            return step.layer, "pointwise" if step.separable else None
        base, _, half = node.rpartition("/")
        if half == "depthwise" and base in w.by_name and w.by_name[base].separable:
            return w.by_name[base].layer, "depthwise"
        return w.step(node).layer, None  # raises GraphError naming the node

    def get_weight(self, model: keras.Model, node: str, port: int) -> np.ndarray:
        layer, part = self._layer(model, node)
        if core_key(layer, part) not in CORE_OPS:
            raise GraphError(f"Layer '{node}' ({type(layer).__name__}) has no weight this backend reads")
        value = np.array(weight_variable(layer, part).numpy())
        if is_depthwise(layer, part):
            value = value.reshape((*value.shape[:-2], 1, value.shape[-2] * value.shape[-1]))
        return value

    def set_weight(self, model: keras.Model, node: str, port: int, value: np.ndarray) -> None:
        layer, part = self._layer(model, node)
        var = weight_variable(layer, part)
        var.assign(np.asarray(value, dtype=np.float32).reshape(tuple(var.shape)))

    def _bias(self, model: keras.Model, node: str) -> Any:
        layer, part = self._layer(model, node)
        if part == "depthwise" or not getattr(layer, "use_bias", False):
            return None
        return getattr(layer, "bias", None)

    def get_bias(self, model: keras.Model, node: str) -> np.ndarray | None:
        bias = self._bias(model, node)
        return None if bias is None else np.array(bias.numpy())

    def set_bias(self, model: keras.Model, node: str, value: np.ndarray) -> None:
        bias = self._bias(model, node)
        if bias is None:
            raise GraphError(f"Layer '{node}' has no bias to correct")
        bias.assign(np.asarray(value, dtype=np.float32).reshape(tuple(bias.shape)))

    def copy_model(self, model: keras.Model) -> keras.Model:
        """An independent copy: same architecture, its own variables holding the same values."""
        try:
            copy = keras.models.clone_model(model)
        except Exception as exc:
            raise GraphError(
                f"Cannot copy Keras model '{model.name}' to quantize it ({type(exc).__name__}: {exc}); custom layers "
                "need get_config()/from_config() (register them with keras.saving.register_keras_serializable)"
            ) from exc
        copy.set_weights(model.get_weights())
        return copy

    # -- quantizers ---------------------------------------------------------------------------
    def apply(
        self,
        model: keras.Model,
        placement: Placement,
        params: dict[TargetPoint, QuantizerParams],
        trainable: bool = False,
    ) -> keras.Model:
        """A new Keras model: a copy of ``model`` with ``FakeQuantize`` layers at the placement's points
        (their ranges are variables that train when ``trainable``, for QAT)."""
        missing = [p.target for p in placement.points if p.target not in params]
        if missing:
            raise GraphError(f"No quantizer parameters were computed for {missing[0]}")
        graph = self.graph if self.graph is not None else build_index(model, warn_unknown=False).graph
        copy = self.copy_model(model)
        acts: dict[TargetPoint, FakeQuantize] = {}
        weights: dict[str, FakeQuantize] = {}
        for p in placement.points:
            qp = params[p.target]
            where = str(p.target)
            if p.is_weight or p.target.type is TargetType.WEIGHT:
                if p.target.node in weights:
                    raise QuantizationError(f"{where}: a second weight quantizer for one layer call")
                weights[p.target.node] = make_fake_quantize(
                    qp, f"{p.target.node}/fq_weights", qp.channel_axis, p.spec.mode, trainable
                )
                continue
            axis = None
            if qp.per_channel:
                rank = _rank_at(graph, p.target)
                if rank is not None and rank >= 3 and keras.config.image_data_format() == "channels_last":
                    raise QuantizationError(
                        f"{where}: per-channel activation quantizers on channels-last Keras tensors are not "
                        "supported; quantize activations per tensor"
                    )
                axis = qp.channel_axis
            acts[p.target] = make_fake_quantize(
                qp, f"{p.target.node}/fq_{p.target.type.value}_{p.target.port}", axis, p.spec.mode, trainable
            )
        w = walk(copy)
        w.input_names = walk(model).input_names  # clone_model renames unnamed inputs: keep the graph's names
        r = rebuild(w, acts, weights, name=model.name)
        setattr(r.model, PLACEMENT_ATTRIBUTE, json.dumps(placement.to_dict()))
        return r.model


def _rank_at(graph: Graph, target: TargetPoint) -> int | None:
    if target.node not in graph:
        return None
    if target.type is TargetType.OUTPUT:
        edges = graph.out_edges(target.node, target.port)
    else:
        edges = [e for e in graph.in_edges(target.node) if e.dst_port == target.port]
    return edges[0].tensor.rank if edges else None


def make_fake_quantize(
    params: QuantizerParams,
    graph_name: str,
    axis: int | None,
    mode: str = "symmetric",
    trainable: bool = False,
) -> FakeQuantize:
    """A ``FakeQuantize`` layer for ``params`` (per tensor when ``axis`` is None)."""
    low = np.asarray(params.input_low, dtype=np.float32)
    high = np.asarray(params.input_high, dtype=np.float32)
    if axis is None:
        low, high = low.reshape(()), high.reshape(())
    return FakeQuantize(
        low,
        high,
        params.levels,
        axis=axis,
        mode=mode,
        trainable_range=trainable,
        graph_name=graph_name,
        name=safe_name(graph_name),
    )


def placement_of(model: keras.Model) -> dict | None:
    """The placement ``apply`` recorded on ``model`` (``Placement.to_dict()`` form), or None."""
    stored = getattr(model, PLACEMENT_ATTRIBUTE, None)
    return None if stored is None else json.loads(stored)
