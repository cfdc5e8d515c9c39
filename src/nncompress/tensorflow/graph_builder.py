"""Keras 3 functional / Sequential models -> ``nncompress.graph.Graph``, and back.

``walk(model)`` lists the model's layer calls in execution order (``Step``), flattening nested
functional and Sequential models (their layers are named ``outer/inner``); subclassed models
and unbuilt Sequential models are refused with a ``GraphError``. A layer called several times
gets ``_<k>`` suffixes from its second call on.

Graph nodes:

- one node per layer call, named by the layer (``Step.name``), with the op kind from the
  ``LAYER_KINDS`` table (class name -> kind, or a function of the layer); ``keras.ops`` calls in a
  functional model (``Add``, ``Reshape``...) are nodes too. Unknown layers are ``Unknown``;
- a ``SeparableConv1D/2D`` is two nodes, ``sep/depthwise`` (a depthwise convolution) and
  ``sep`` (the pointwise 1x1 convolution and the bias), as torch and ONNX have them;
- a weighted layer with a fused ``activation=`` is two nodes, ``conv`` (the convolution and its
  bias) and ``conv/relu`` (the activation), so the graph has torch's and ONNX's structure;
- inputs are ``Parameter`` nodes named like the Keras input, outputs ``Result`` nodes
  ``output_<i>``.

Weights: a Conv kernel ``[k..., C_in, C_out]`` has ``out_channel_axis=-1`` (last) and
``in_channel_axis=-2``; a Dense kernel ``[C_in, C_out]`` too; a depthwise kernel
``[k..., C_in, M]`` is seen as ``[k..., 1, C_in * M]``; a transposed convolution's kernel
``[k..., C_out, C_in]`` has ``out_channel_axis=-2``; an Embedding table ``[V, D]`` has its
rows (axis 0) as channels, as ONNX's Gather. ``Node.bias`` is the bias variable's path. Nodes of
convolutions carry ``channel_axis`` (-1 for channels_last) so per-channel statistics are taken
on the right axis.

Layers this backend inserts (``FakeQuantize``) are not graph nodes: a statistic at a quantized
tensor sees the tensor going into the quantizer; ``QuantizedLayer`` and ``SplitActivation`` carry
the graph name of the node they stand for, so a quantized model resolves to the float model's
names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import tree

from nncompress.errors import GraphError, NNCompressWarning
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph import op_kinds as K
from nncompress.tensorflow.layers import (
    CORE_OPS,
    SEPARABLE,
    FakeQuantize,
    QuantizedLayer,
    core_key,
    has_core,
    is_depthwise,
    weight_variable,
)

KerasTensor = keras.KerasTensor

# -- activations (functions and the layers that wrap them) -------------------------------------
ACTIVATION_KINDS = {
    "relu": K.RELU,
    "relu6": K.CLAMP,
    "sigmoid": K.SIGMOID,
    "tanh": K.TANH,
    "softmax": K.SOFTMAX,
    "log_softmax": K.LOG_SOFTMAX,
    "swish": K.SWISH,
    "silu": K.SWISH,
    "gelu": K.GELU,
    "elu": K.ELU,
    "selu": "Selu",
    "hard_sigmoid": K.HSIGMOID,
    "hard_silu": K.HSWISH,
    "hard_swish": K.HSWISH,
    "leaky_relu": K.PRELU,
    "mish": K.MISH,
    "softplus": "SoftPlus",
    "softsign": "SoftSign",
    "exponential": K.EXP,
    "linear": K.IDENTITY,
}


def activation_name(fn: Any) -> str | None:
    """The Keras name of an activation function (None for none / linear)."""
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or keras.activations.serialize(fn)
    name = str(name)
    return None if name == "linear" else name


def _activation_kind(layer: Any) -> str:
    return ACTIVATION_KINDS.get(activation_name(layer.activation) or "linear", K.UNKNOWN)


def _relu_kind(layer: Any) -> str:
    if getattr(layer, "negative_slope", 0.0):
        return K.PRELU
    return K.CLAMP if getattr(layer, "max_value", None) is not None else K.RELU


def _conv_kind(layer: Any) -> str:
    groups = int(getattr(layer, "groups", 1) or 1)
    return K.GROUP_CONVOLUTION if groups > 1 else K.CONVOLUTION


def _const(kind: str) -> Callable[[Any], str]:
    return lambda layer: kind


# layer / operation class name -> kind (a function of the layer)
LAYER_KINDS: dict[str, Callable[[Any], str]] = {
    **{n: _conv_kind for n in ("Conv1D", "Conv2D", "Conv3D")},
    **{n: _const(K.DEPTHWISE_CONVOLUTION) for n in ("DepthwiseConv1D", "DepthwiseConv2D")},
    **{n: _const(K.CONVOLUTION_TRANSPOSE) for n in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")},
    "Dense": _const(K.MATMUL),
    "Embedding": _const(K.EMBEDDING),
    "BatchNormalization": _const(K.BATCH_NORM),
    "LayerNormalization": _const(K.LAYER_NORM),
    "GroupNormalization": _const(K.GROUP_NORM),
    "Activation": _activation_kind,
    "SplitActivation": _activation_kind,
    "ReLU": _relu_kind,
    "LeakyReLU": _const(K.PRELU),
    "PReLU": _const(K.PRELU),
    "ELU": _const(K.ELU),
    "Softmax": _const(K.SOFTMAX),
    **{n: _const(K.MAX_POOL) for n in ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D")},
    **{n: _const(K.AVG_POOL) for n in ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")},
    **{
        n: _const(K.ADAPTIVE_AVG_POOL)
        for n in ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D")
    },
    **{n: _const(K.REDUCE_MAX) for n in ("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")},
    "Flatten": _const(K.FLATTEN),
    "Reshape": _const(K.RESHAPE),
    "Permute": _const(K.TRANSPOSE),
    **{n: _const(K.DROPOUT) for n in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise")},
    "Identity": _const(K.IDENTITY),
    # affine maps with constants (input scaling in keras.applications models)
    "Rescaling": _const(K.MULTIPLY),
    "Normalization": _const(K.MULTIPLY),
    **{n: _const(K.PAD) for n in ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")},
    **{n: _const(K.CROP) for n in ("Cropping1D", "Cropping2D", "Cropping3D")},
    **{n: _const(K.INTERPOLATE) for n in ("UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing")},
    "Add": _const(K.ADD),
    "Subtract": _const(K.SUBTRACT),
    "Multiply": _const(K.MULTIPLY),
    "Divide": _const(K.DIVIDE),
    "TrueDivide": _const(K.DIVIDE),
    "Maximum": _const(K.MAXIMUM),
    "Minimum": _const(K.MINIMUM),
    "Concatenate": _const(K.CONCAT),
    "Matmul": _const(K.MATMUL),
    "Transpose": _const(K.TRANSPOSE),
    "Mean": _const(K.REDUCE_MEAN),
    "Relu": _const(K.RELU),
    "Sigmoid": _const(K.SIGMOID),
    "Tanh": _const(K.TANH),
}


def layer_kind(op: Any) -> str:
    fn = LAYER_KINDS.get(type(op).__name__)
    return fn(op) if fn is not None else K.UNKNOWN


# ---------------------------------------------------------------------------------------------
# walking a model
# ---------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One layer / operation call of a (flattened) model.

    ``args``/``kwargs`` hold the call's arguments with the *canonical* KerasTensors (those of
    the outermost model, or of the layer that produced them); ``inputs`` are those tensors
    flattened (input port ``i`` = ``inputs[i]``) and ``outputs`` the call's outputs.
    ``inserted``: a ``FakeQuantize`` this backend added (not a graph node).
    """

    name: str
    op: Any
    args: tuple
    kwargs: dict
    inputs: list[Any]
    outputs: list[Any]
    inserted: bool = False

    @property
    def layer(self) -> Any:
        """The layer whose weights this step uses (the wrapped one for ``QuantizedLayer``)."""
        return self.op.layer if isinstance(self.op, QuantizedLayer) else self.op

    @property
    def separable(self) -> bool:
        """A separable convolution not split yet (it is two graph nodes)."""
        return type(self.op).__name__ in SEPARABLE

    @property
    def fused_activation(self) -> str | None:
        """The name of a fused activation split into its own node (None if there is none)."""
        if isinstance(self.op, QuantizedLayer) or not has_core(self.op):
            return None
        return activation_name(getattr(self.op, "activation", None))


@dataclass
class Walk:
    """A model as a flat list of steps between its input and output tensors."""

    model: Any
    inputs: list[Any]
    input_names: list[str]
    steps: list[Step]
    outputs: list[Any]
    output_structure: Any = None
    input_structure: Any = None
    by_name: dict[str, Step] = field(default_factory=dict)

    def step(self, name: str) -> Step:
        try:
            return self.by_name[name]
        except KeyError:
            raise GraphError(f"The Keras model has no layer call named '{name}'") from None


def functional_of(model: Any) -> Any:
    """The functional graph of a Sequential or functional model (clear error otherwise)."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise GraphError(
                f"Sequential model '{model.name}' has no known input shape: start it with "
                "keras.Input(shape) or call model.build(input_shape) first"
            )
        return fn
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise GraphError(
            f"Keras model '{getattr(model, 'name', '?')}' ({type(model).__name__}) is a subclassed model: "
            "nncompress needs a functional or Sequential model (its layer graph is not known otherwise)"
        )
    return model


def walk(model: Any) -> Walk:
    """The flat list of layer calls of ``model`` (see the module docstring)."""
    if not isinstance(model, keras.Model):
        raise GraphError(f"The TensorFlow backend takes a keras.Model, got {type(model).__name__}")
    fn = functional_of(model)
    inputs = list(fn.inputs)
    canon = {id(t): t for t in inputs}
    steps: list[Step] = []
    counts: dict[str, int] = {}
    _walk_into(fn, "", canon, steps, counts)
    outputs = [canon[id(t)] for t in tree.flatten(fn.outputs)]
    names = []
    for i, t in enumerate(inputs):  # the InputLayer's name (keras.Input(name=...)), stable across runs
        history = getattr(t, "_keras_history", None)
        layer = getattr(history, "operation", None) if history is not None else None
        names.append(getattr(layer, "name", None) or getattr(t, "name", None) or f"input_{i}")
    w = Walk(
        model,
        inputs,
        names,
        steps,
        outputs,
        getattr(fn, "_outputs_struct", None),
        getattr(fn, "_inputs_struct", None),
    )
    w.by_name = {s.name: s for s in steps}
    return w


def _walk_into(
    fn: Any, prefix: str, canon: dict[int, Any], steps: list[Step], counts: dict[str, int]
) -> None:
    by_depth = fn._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            missing = [t for t in node.arguments.keras_tensors if id(t) not in canon]
            if missing:
                raise GraphError(
                    f"Layer '{prefix}{op.name}' reads a tensor the model does not compute: {missing[0]}"
                )
            args, kwargs = node.arguments.fill_in(canon)
            if isinstance(op, keras.Model):
                inner = functional_of(op)
                flat = [x for x in tree.flatten((args, kwargs)) if isinstance(x, KerasTensor)]
                if len(flat) != len(inner.inputs):
                    raise GraphError(
                        f"Nested model '{prefix}{op.name}' takes {len(inner.inputs)} inputs, is called with {len(flat)}"
                    )
                sub = dict(canon)
                for t_in, t in zip(inner.inputs, flat):
                    sub[id(t_in)] = t
                _walk_into(inner, f"{prefix}{op.name}/", sub, steps, counts)
                inner_outs = [sub[id(t)] for t in tree.flatten(inner.outputs)]
                for o, t in zip(node.outputs, inner_outs):
                    canon[id(o)] = t
                # tensors computed inside are canonical for later inner-model layers only
                continue
            name = getattr(op, "graph_name", "") or f"{prefix}{op.name}"
            k = counts.get(name, 0)
            counts[name] = k + 1
            if k:
                name = f"{name}_{k}"
            inputs = [x for x in tree.flatten((args, kwargs)) if isinstance(x, KerasTensor)]
            outs = list(node.outputs)
            for o in outs:
                canon[id(o)] = o
            steps.append(Step(name, op, args, kwargs, inputs, outs, inserted=isinstance(op, FakeQuantize)))


# ---------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------
def _info(t: Any) -> TensorInfo:
    shape = tuple(None if d is None else int(d) for d in t.shape) if t.shape is not None else None
    return TensorInfo(shape=shape, dtype=str(t.dtype))


def _weights(layer: Any, part: str | None, port: int) -> tuple[dict[int, WeightInfo], str | None]:
    """The weight (at input ``port``, after the activations) and bias path of a layer (or half)."""
    cls = type(layer).__name__
    if core_key(layer, part) not in CORE_OPS or not layer.built:
        return {}, None
    w = weight_variable(layer, part)
    shape = tuple(int(d) for d in w.shape)
    if is_depthwise(layer, part):
        shape = (*shape[:-2], 1, shape[-2] * shape[-1])
    if cls == "Embedding":
        info = WeightInfo(w.path, shape, str(w.dtype), 0, 1)
    elif cls.endswith("Transpose"):  # [k..., C_out, C_in]
        info = WeightInfo(w.path, shape, str(w.dtype), len(shape) - 2, len(shape) - 1)
    else:
        info = WeightInfo(w.path, shape, str(w.dtype), len(shape) - 1, len(shape) - 2)
    bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", False) else None
    if part == "depthwise":
        bias = None  # a separable convolution's bias is added after its pointwise half
    return {port: info}, (bias.path if bias is not None else None)


def _attrs(layer: Any, part: str | None = None) -> dict[str, Any]:
    cls = type(layer).__name__
    attrs: dict[str, Any] = {}
    if (
        core_key(layer, part) in CORE_OPS
        and cls.startswith(("Conv", "Depthwise", "Separable"))
        and layer.built
    ):
        kernel = weight_variable(layer, part)
        groups = int(getattr(layer, "groups", 1) or 1)
        cin, cout = int(kernel.shape[-2]) * groups, int(kernel.shape[-1])
        kernel_size = tuple(int(k) for k in layer.kernel_size)
        stride = tuple(int(st) for st in layer.strides)
        dilation = tuple(int(d) for d in layer.dilation_rate)
        padding = str(layer.padding)
        if is_depthwise(layer, part):
            cin = groups = int(kernel.shape[-2])
            cout = cin * int(kernel.shape[-1])
        if part == "pointwise":
            kernel_size = stride = dilation = (1,) * len(kernel_size)
            padding = "valid"
        transpose = cls.endswith("Transpose")
        if transpose:
            cin, cout = int(kernel.shape[-1]), int(kernel.shape[-2])
        attrs.update(
            in_channels=cin,
            out_channels=cout,
            groups=groups,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            padding=padding,
            transpose=transpose,
            channel_axis=-1 if layer.data_format == "channels_last" else 1,
        )
    elif cls == "Dense" and layer.built:
        attrs.update(in_features=int(layer.kernel.shape[0]), out_features=int(layer.kernel.shape[1]))
    elif cls == "Concatenate":
        attrs["axis"] = int(layer.axis)
    elif cls == "BatchNormalization":
        attrs.update(eps=float(layer.epsilon), channel_axis=int(layer.axis))
    elif cls.startswith(("MaxPooling", "AveragePooling")):
        attrs["kernel_size"] = tuple(int(k) for k in layer.pool_size)
    elif cls in ("Softmax",):
        attrs["axis"] = layer.axis
    elif cls == "ReLU" and layer.max_value is not None:
        attrs.update(min=0.0, max=float(layer.max_value))
    return attrs


def _node_kind(layer: Any, part: str | None) -> str:
    if part == "depthwise":
        return K.DEPTHWISE_CONVOLUTION
    if part == "pointwise":
        return K.CONVOLUTION
    return layer_kind(layer)


def depthwise_half_info(step: Step) -> TensorInfo:
    """The tensor between the two halves of a separable convolution (C_in * M channels)."""
    layer = step.op
    channels = int(layer.depthwise_kernel.shape[-2]) * int(layer.depthwise_kernel.shape[-1])
    out = _info(step.outputs[0])
    if out.shape is None:
        return out
    shape = list(out.shape)
    shape[-1 if layer.data_format == "channels_last" else 1] = channels
    return TensorInfo(tuple(shape), out.dtype)


@dataclass
class GraphIndex:
    """A walked model with, for every graph node, the KerasTensors of its ports."""

    walk: Walk
    graph: Graph
    # (node, output port) -> the tensor the node produces (before any inserted quantizer)
    node_outputs: dict[tuple[str, int], Any]
    # id(tensor) -> the tensor before inserted quantizers (itself when not quantized)
    unquantized: dict[int, Any]


def build_index(model: Any, *, warn_unknown: bool = True) -> GraphIndex:
    """Walk ``model`` and build its ``Graph`` (see the module docstring)."""
    w = walk(model)
    graph = Graph(getattr(model, "name", "model") or "model")
    producer: dict[int, tuple[str, int]] = {}
    unquantized: dict[int, Any] = {}
    node_outputs: dict[tuple[str, int], Any] = {}
    for name, t in zip(w.input_names, w.inputs):
        graph.add_node(
            Node(name, "InputLayer", K.INPUT, attrs={"shape": _info(t).shape, "dtype": str(t.dtype)})
        )
        producer[id(t)] = (name, 0)
        node_outputs[(name, 0)] = t

    def source(t: Any) -> tuple[str, int] | None:
        return producer.get(id(unquantized.get(id(t), t)))

    unknown: dict[str, list[str]] = {}
    for step in w.steps:
        if step.inserted:  # FakeQuantize: its output stands for its input
            unquantized[id(step.outputs[0])] = unquantized.get(id(step.inputs[0]), step.inputs[0])
            continue
        halves = [("depthwise", f"{step.name}/depthwise"), ("pointwise", step.name)] if step.separable else []
        first = halves[0][1] if halves else step.name
        for part, name in halves or [(None, step.name)]:
            kind = _node_kind(step.layer, part)
            if kind == K.UNKNOWN:
                unknown.setdefault(type(step.op).__name__, []).append(step.name)
            port = len(step.inputs) if name == first else 1
            weights, bias = _weights(step.layer, part, port)
            graph.add_node(
                Node(
                    name,
                    type(step.layer).__name__,
                    kind,
                    module_scope=step.name.rpartition("/")[0],
                    attrs=_attrs(step.layer, part),
                    weights=weights,
                    bias=bias,
                )
            )
        for port, t in enumerate(step.inputs):
            src = source(t)
            if src is not None:
                graph.add_edge(Edge(src[0], src[1], first, port, _info(t)))
        if halves:
            graph.add_edge(Edge(first, 0, step.name, 0, depthwise_half_info(step)))
        last = step.name
        act = step.fused_activation
        if act is not None:
            last = f"{step.name}/{act}"
            graph.add_node(Node(last, "Activation", ACTIVATION_KINDS.get(act, K.UNKNOWN), attrs={}))
            graph.add_edge(Edge(step.name, 0, last, 0, _info(step.outputs[0])))
            if last in w.by_name:
                raise GraphError(f"Layer name '{last}' clashes with the split activation of '{step.name}'")
        for port, o in enumerate(step.outputs):
            producer[id(o)] = (last, port)
            node_outputs[(last, port)] = o
    for i, t in enumerate(w.outputs):
        name = f"output_{i}"
        while name in graph:
            name += "_"
        graph.add_node(Node(name, "Output", K.OUTPUT))
        src = source(t)
        if src is not None:
            graph.add_edge(Edge(src[0], src[1], name, 0, _info(t)))
    if warn_unknown and unknown:
        listed = "; ".join(
            f"{c} ({', '.join(n[:3])}{' ...' if len(n) > 3 else ''})" for c, n in unknown.items()
        )
        warnings.warn(
            f"Keras layers unknown to nncompress are left in float: {listed}", NNCompressWarning, stacklevel=3
        )
    return GraphIndex(w, graph, node_outputs, unquantized)


def build_graph(model: Any, *, warn_unknown: bool = True) -> Graph:
    """The backend-neutral ``Graph`` of a functional or Sequential Keras model."""
    return build_index(model, warn_unknown=warn_unknown).graph
