"""``onnx.ModelProto`` -> ``nncompress.graph.Graph``.

Naming (stable across runs and between a float model and the model ``Adapter.apply`` returns):

- an op node is named by its ONNX node name; a node without a name gets ``<OpType>_<index>``
  (index in ``graph.node``), a repeated name gets a ``_<k>`` suffix;
- a graph input is a ``Parameter`` node named by the input tensor; a graph output a ``Result``
  node named by the output tensor; an initializer (or ``Constant`` op) read at a non-weight
  port is a ``Constant`` node named by the tensor (suffixed when it collides with an op name).

Weights are not nodes: the initializer (or ``Constant`` op output) fed to the weight port of
Conv / ConvTranspose / Gemm / MatMul / Gather-as-embedding is a ``WeightInfo`` named by that
tensor, and the node's ``bias`` names the bias initializer (Conv/ConvTranspose/Gemm input 2, or
the constant of the single ``Add`` that follows a MatMul). Edge shapes and dtypes come from
``onnx.shape_inference`` (dynamic dimensions are None). Ops with subgraphs (If, Loop, Scan) and
ops this table does not know are of kind ``Unknown`` (left in float) with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nncompress.errors import GraphError, NNCompressWarning
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph import op_kinds as K

# ONNX op type -> op kind (Conv and Gather are refined by their attributes and inputs)
_KINDS: dict[str, str] = {
    "Conv": K.CONVOLUTION,
    "ConvTranspose": K.CONVOLUTION_TRANSPOSE,
    "Gemm": K.MATMUL,
    "MatMul": K.MATMUL,
    "Add": K.ADD,
    "Sum": K.ADD,
    "Sub": K.SUBTRACT,
    "Mul": K.MULTIPLY,
    "Div": K.DIVIDE,
    "Pow": K.POWER,
    "Max": K.MAXIMUM,
    "Min": K.MINIMUM,
    "Mod": K.FLOOR_MOD,
    "Less": K.LESS,
    "LessOrEqual": K.LESS_EQUAL,
    "Greater": K.GREATER,
    "GreaterOrEqual": K.GREATER_EQUAL,
    "Equal": K.EQUAL,
    "Not": K.LOGICAL_NOT,
    "And": K.LOGICAL_AND,
    "Or": K.LOGICAL_OR,
    "Xor": K.LOGICAL_XOR,
    "Relu": K.RELU,
    "Clip": K.CLAMP,
    "LeakyRelu": K.LEAKY_RELU,
    "PRelu": K.PRELU,
    "Elu": K.ELU,
    "Selu": K.ELU,
    "Celu": K.ELU,
    "Gelu": K.GELU,
    "Sigmoid": K.SIGMOID,
    "HardSigmoid": K.HSIGMOID,
    "HardSwish": K.HSWISH,
    "Mish": K.MISH,
    "Tanh": K.TANH,
    "Softplus": "SoftPlus",
    "Softmax": K.SOFTMAX,
    "LogSoftmax": K.LOG_SOFTMAX,
    "Exp": K.EXP,
    "Log": K.LOG,
    "Sqrt": K.SQRT,
    "Abs": K.ABS,
    "Neg": K.NEGATIVE,
    "Erf": K.ERF,
    "Sin": "Sin",
    "Cos": "Cos",
    "BatchNormalization": K.BATCH_NORM,
    "LayerNormalization": K.LAYER_NORM,
    "MeanVarianceNormalization": K.LAYER_NORM,
    "InstanceNormalization": K.INSTANCE_NORM,
    "GroupNormalization": K.GROUP_NORM,
    "LpNormalization": K.NORMALIZE_L2,
    "Concat": K.CONCAT,
    "MaxPool": K.MAX_POOL,
    "GlobalMaxPool": K.MAX_POOL,
    "AveragePool": K.AVG_POOL,
    "GlobalAveragePool": K.AVG_POOL,
    "ReduceMean": K.REDUCE_MEAN,
    "ReduceMax": K.REDUCE_MAX,
    "ReduceMin": K.REDUCE_MIN,
    "ReduceSum": K.REDUCE_SUM,
    "ReduceL2": K.REDUCE_L2,
    "Reshape": K.RESHAPE,
    "Flatten": K.FLATTEN,
    "Transpose": K.TRANSPOSE,
    "Squeeze": K.SQUEEZE,
    "Unsqueeze": K.UNSQUEEZE,
    "Slice": K.SLICE,
    "Gather": K.GATHER,
    "Split": K.SPLIT,
    "Tile": K.TILE,
    "Expand": K.BROADCAST,
    "Pad": K.PAD,
    "Identity": K.IDENTITY,
    "Dropout": K.DROPOUT,
    "DepthToSpace": "DepthToSpace",
    "SpaceToDepth": "SpaceToDepth",
    "Resize": K.INTERPOLATE,
    "Upsample": K.INTERPOLATE,
    "Shape": K.SHAPE_OF,
    "Size": K.SHAPE_OF,
    "Constant": K.CONSTANT,
    "Cast": K.CONVERT,
    "CastLike": K.CONVERT_LIKE,
    "LSTM": K.LSTM,
    "GRU": K.GRU,
    "RNN": K.RNN,
}
# ops with a meaning here but no kind of their own: kind = ONNX op type, no rule, no warning
_NEUTRAL = frozenset(
    {
        "ConstantOfShape",
        "Range",
        "Where",
        "TopK",
        "NonZero",
        "ArgMax",
        "ArgMin",
        "CumSum",
        "Einsum",
        "ScatterND",
        "ScatterElements",
        "GatherND",
        "GatherElements",
        "OneHot",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Reciprocal",
        "ReduceProd",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "ReduceL1",
        "Trilu",
        "IsNaN",
        "IsInf",
        "Hardmax",
        "Softsign",
        "ThresholdedRelu",
        "Shrink",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "NonMaxSuppression",
        "RoiAlign",
        "GridSample",
        "Compress",
        "ReverseSequence",
        "EyeLike",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Mean",
        "Det",
        "BitShift",
        "Unique",
    }
)
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
WEIGHTED_ONNX_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"})


def dtype_name(elem_type: int) -> str:
    """ONNX element type -> numpy-style dtype name ("float32", "int64", "bfloat16"...)."""
    if elem_type == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    if elem_type == onnx.TensorProto.UNDEFINED:
        return "undefined"
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # float8, int4...: no numpy dtype of their own
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------------
# index: names, producers, consumers, constants
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """What a graph node name stands for in a ModelProto."""

    kind: str  # "node" | "input" | "output" | "const"
    tensor: str = ""  # the tensor of an input / output / const
    index: int = -1  # node index in graph.node (kind "node", and "const" made by a Constant op)


@dataclass
class ModelIndex:
    """Names and wiring of one ModelProto's main graph (built in one pass, never mutated)."""

    model: onnx.ModelProto
    names: dict[str, Ref] = field(default_factory=dict)
    node_names: list[str] = field(default_factory=list)  # graph.node index -> graph name
    producer: dict[str, tuple[int, int]] = field(default_factory=dict)  # tensor -> (node, port)
    consumers: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    constant_nodes: dict[str, int] = field(default_factory=dict)  # tensor -> Constant node index
    inputs: list[str] = field(default_factory=list)  # graph inputs that are not initializers
    outputs: list[str] = field(default_factory=list)
    const_names: dict[str, str] = field(default_factory=dict)  # const tensor -> graph name

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph

    def node(self, name: str) -> onnx.NodeProto:
        ref = self.ref(name)
        if ref.kind != "node":
            raise GraphError(f"'{name}' is a graph {ref.kind}, not an ONNX node")
        return self.graph.node[ref.index]

    def ref(self, name: str) -> Ref:
        try:
            return self.names[name]
        except KeyError:
            raise GraphError(f"The ONNX model has no node '{name}'") from None

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.initializers or tensor in self.constant_nodes

    def constant_value(self, tensor: str) -> np.ndarray:
        if tensor in self.initializers:
            return to_array(self.initializers[tensor])
        if tensor in self.constant_nodes:
            return constant_node_value(self.graph.node[self.constant_nodes[tensor]])
        raise GraphError(f"Tensor '{tensor}' of the ONNX model is not a constant")

    def constant_dtype_shape(self, tensor: str) -> tuple[str, tuple[int, ...]]:
        if tensor in self.initializers:
            t = self.initializers[tensor]
            return dtype_name(t.data_type), tuple(int(d) for d in t.dims)
        v = self.constant_value(tensor)
        return v.dtype.name, tuple(v.shape)


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """Initializer -> numpy, with a clear error when its external data was not loaded."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data:
        raise GraphError(
            f"Initializer '{tensor.name}' keeps its data in an external file that was not loaded; load the "
            "model with onnx.load(path) (load_external_data=True) or nncompress.onnx.load_model(path)"
        )
    return numpy_helper.to_array(tensor)


def constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.asarray(onnx.helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.asarray(list(onnx.helper.get_attribute_value(a)))
    raise GraphError(f"Constant node '{node.name}' has no value this backend can read")


class _Namer:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def index_model(model: onnx.ModelProto) -> ModelIndex:
    """Names and wiring of ``model`` (see the module docstring for the naming rules)."""
    g = model.graph
    idx = ModelIndex(model)
    idx.initializers = {t.name: t for t in g.initializer}
    idx.inputs = [i.name for i in g.input if i.name not in idx.initializers]
    idx.outputs = [o.name for o in g.output]
    namer = _Namer()
    for t in idx.inputs:
        idx.names[namer(t)] = Ref("input", t)
    for i, node in enumerate(g.node):
        name = namer(node.name or f"{node.op_type}_{i}")
        idx.names[name] = Ref("node", index=i)
        idx.node_names.append(name)
        for p, t in enumerate(node.output):
            if t:
                idx.producer[t] = (i, p)
        for p, t in enumerate(node.input):
            if t:
                idx.consumers.setdefault(t, []).append((i, p))
        if node.op_type == "Constant" and node.output:
            idx.constant_nodes[node.output[0]] = i
    for t in idx.outputs:
        idx.names[namer(t)] = Ref("output", t)
    for t in idx.initializers:
        name = namer(t)
        idx.names[name] = Ref("const", t)
        idx.const_names[t] = name
    return idx


# ---------------------------------------------------------------------------------------------
# shapes and dtypes
# ---------------------------------------------------------------------------------------------
LARGE_MODEL_BYTES = 1_800_000_000  # protobuf serializes at most 2 GiB


def model_bytes(model: onnx.ModelProto) -> int:
    """Approximate size of ``model`` (initializers dominate) without serializing it."""
    return sum(t.ByteSize() for t in model.graph.initializer) + sum(n.ByteSize() for n in model.graph.node)


def _skeleton(model: onnx.ModelProto, limit: int = 1 << 16) -> onnx.ModelProto:
    """A copy whose big initializers became typed graph inputs: small enough to serialize."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    keep = []
    for t in light.graph.initializer:
        if t.ByteSize() > limit:
            light.graph.input.append(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, [int(d) for d in t.dims])
            )
        else:
            keep.append(t)
    del light.graph.initializer[:]
    light.graph.initializer.extend(keep)
    return light


def _info_of(vi: onnx.ValueInfoProto) -> TensorInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    return TensorInfo(shape=shape, dtype=dtype_name(tt.elem_type))


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Shape and dtype of every tensor shape inference can type (dynamic dims as None)."""
    source = model
    if model_bytes(model) > LARGE_MODEL_BYTES or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    ):
        source = _skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(source, strict_mode=False, data_prop=True)
    except Exception:  # a model shape inference cannot read: keep what the model itself declares
        inferred = source
    infos: dict[str, TensorInfo] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        info = _info_of(vi)
        if info is not None:
            infos[vi.name] = info
    for t in model.graph.initializer:
        infos[t.name] = TensorInfo(tuple(int(d) for d in t.dims), dtype_name(t.data_type))
    untyped = [t for n in model.graph.node for t in n.output if t and t not in infos]
    if untyped:  # outputs of ops ONNX does not know (contrib ops...): ask ONNX Runtime
        infos.update(_runtime_infos(source, untyped))
    return infos


def _runtime_infos(model: onnx.ModelProto, tensors: list[str]) -> dict[str, TensorInfo]:
    """Types ONNX Runtime gives ``tensors`` when it loads the model (empty if it cannot)."""
    try:
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        present = {o.name for o in probe.graph.output}
        for t in tensors:
            if t not in present:
                probe.graph.output.append(onnx.ValueInfoProto(name=t))
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # a custom op ONNX Runtime does not have either: types stay unknown
        return {}
    wanted = set(tensors)
    infos = {}
    for arg in session.get_outputs():
        if arg.name not in wanted or not arg.type.startswith("tensor("):
            continue
        elem = arg.type[len("tensor(") : -1]
        dtype = {"float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16"}.get(
            elem, elem
        )
        shape = None if arg.shape is None else tuple(d if isinstance(d, int) else None for d in arg.shape)
        infos[arg.name] = TensorInfo(shape, dtype)
    return infos


# ---------------------------------------------------------------------------------------------
# weights and biases
# ---------------------------------------------------------------------------------------------
@dataclass
class _Weighted:
    weights: dict[int, WeightInfo]
    bias: str | None = None  # tensor name
    bias_port: int | None = None  # input port of the bias (None: the bias is in a following Add)


def _weight_info(idx: ModelIndex, tensor: str, out_axis: int, in_axis: int) -> WeightInfo:
    dtype, shape = idx.constant_dtype_shape(tensor)
    return WeightInfo(
        name=tensor, shape=shape, dtype=dtype, out_channel_axis=out_axis, in_channel_axis=in_axis
    )


def _matmul_bias(idx: ModelIndex, node_index: int, channels: int | None) -> str | None:
    """The constant of the one Add that follows a MatMul, when it is a per-output-channel bias."""
    out = idx.graph.node[node_index].output[0]
    users = idx.consumers.get(out, [])
    if len(users) != 1 or out in idx.outputs:
        return None
    add = idx.graph.node[users[0][0]]
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    other = add.input[1 - users[0][1]]
    if not idx.is_constant(other):
        return None
    _, shape = idx.constant_dtype_shape(other)
    size = int(np.prod(shape)) if shape else 1
    if channels is None or size != channels or (shape and shape[-1] != channels):
        return None
    return other


def weighted_inputs(idx: ModelIndex, i: int) -> _Weighted | None:
    """Weights (by input port) and bias of node ``i`` when it is a weighted op with constant weights."""
    node = idx.graph.node[i]
    ins = list(node.input)
    const = [bool(t) and idx.is_constant(t) for t in ins]
    op = node.op_type
    if op in ("Conv", "ConvTranspose") and len(ins) > 1 and const[1]:
        out_axis, in_axis = (0, 1) if op == "Conv" else (1, 0)
        w = _Weighted({1: _weight_info(idx, ins[1], out_axis, in_axis)})
        if len(ins) > 2 and const[2]:
            w.bias, w.bias_port = ins[2], 2
        return w
    if op == "Gemm" and len(ins) > 1 and const[1] and not const[0]:
        trans_b = int(_attr(node, "transB", 0))
        w = _Weighted({1: _weight_info(idx, ins[1], 0 if trans_b else 1, 1 if trans_b else 0)})
        if len(ins) > 2 and const[2]:
            w.bias, w.bias_port = ins[2], 2
        return w
    if op == "MatMul" and len(ins) == 2 and const[1] and not const[0]:
        _, shape = idx.constant_dtype_shape(ins[1])
        if len(shape) < 2:
            return None
        r = len(shape)
        w = _Weighted({1: _weight_info(idx, ins[1], r - 1, r - 2)})
        w.bias = _matmul_bias(idx, i, shape[-1])
        return w
    if op == "Gather" and len(ins) == 2 and const[0] and not const[1] and int(_attr(node, "axis", 0)) == 0:
        _, shape = idx.constant_dtype_shape(ins[0])
        if len(shape) == 2:
            return _Weighted({0: _weight_info(idx, ins[0], 0, 1)})
    return None


def _conv_attrs(node: onnx.NodeProto, weight: WeightInfo | None) -> dict[str, Any]:
    groups = int(_attr(node, "group", 1))
    attrs: dict[str, Any] = {"groups": groups, "transpose": node.op_type == "ConvTranspose"}
    for key, name in (("stride", "strides"), ("padding", "pads"), ("dilation", "dilations")):
        value = _attr(node, name)
        if value is not None:
            attrs[key] = tuple(int(v) for v in value)
    if weight is not None and len(weight.shape) >= 2:
        s = weight.shape
        if node.op_type == "Conv":
            attrs.update(in_channels=s[1] * groups, out_channels=s[0])
        else:
            attrs.update(in_channels=s[0], out_channels=s[1] * groups)
        attrs["kernel_size"] = tuple(s[2:])
    return attrs


def _kind(node: onnx.NodeProto, attrs: dict[str, Any]) -> str | None:
    """The op kind of ``node`` (None: unknown op)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Conv":
        groups, cin = attrs.get("groups", 1), attrs.get("in_channels")
        if groups > 1:
            return K.DEPTHWISE_CONVOLUTION if cin is not None and groups == cin else K.GROUP_CONVOLUTION
        return K.CONVOLUTION
    kind = _KINDS.get(node.op_type)
    if kind is not None:
        return kind
    return node.op_type if node.op_type in _NEUTRAL else None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    op = node.op_type
    if op in ("Resize", "Upsample"):
        attrs["mode"] = _text(_attr(node, "mode", "nearest"))
    elif op == "Gemm":
        attrs.update(
            transpose_a=bool(_attr(node, "transA", 0)),
            transpose_b=bool(_attr(node, "transB", 0)),
            alpha=float(_attr(node, "alpha", 1.0)),
            beta=float(_attr(node, "beta", 1.0)),
        )
    elif op in ("Concat", "Softmax", "LogSoftmax", "Flatten", "Gather", "Split", "LayerNormalization"):
        axis = _attr(node, "axis")
        if axis is not None:
            attrs["axis"] = int(axis)
    elif op in ("MaxPool", "AveragePool"):
        attrs["kernel_size"] = tuple(int(v) for v in _attr(node, "kernel_shape", ()))
    elif op == "BatchNormalization":
        attrs["eps"] = float(_attr(node, "epsilon", 1e-5))
    return attrs


# ---------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------
def build_graph(model: onnx.ModelProto, *, warn_unknown: bool = True, warn_subgraphs: bool = True) -> Graph:
    """The ``Graph`` of ``model``'s main graph (see the module docstring).

    Warns (``NNCompressWarning``) about ops left in float: unknown ops (``warn_unknown``; the
    ``quantize`` pipeline names them itself) and ops with subgraphs (``warn_subgraphs``).
    """
    if not isinstance(model, onnx.ModelProto):
        raise GraphError(f"Expected an onnx.ModelProto, got {type(model).__name__}")
    idx = index_model(model)
    infos = tensor_infos(model)
    g = model.graph
    graph = Graph(g.name or "model")

    weighted = {i: w for i in range(len(g.node)) if (w := weighted_inputs(idx, i)) is not None}
    weight_ports = {(i, p) for i, w in weighted.items() for p in w.weights}
    weight_ports |= {(i, w.bias_port) for i, w in weighted.items() if w.bias_port is not None}
    # Constant ops whose value is read only at weight / bias ports are folded into their weights
    folded = {
        ci
        for t, ci in idx.constant_nodes.items()
        if idx.consumers.get(t) and all(c in weight_ports for c in idx.consumers[t]) and t not in idx.outputs
    }

    def info(t: str) -> TensorInfo:
        return infos.get(t, TensorInfo(None, "undefined"))

    for name, ref in idx.names.items():
        if ref.kind == "input":
            i = info(ref.tensor)
            graph.add_node(
                Node(
                    name,
                    "Parameter",
                    K.INPUT,
                    attrs={"tensor": ref.tensor, "shape": i.shape, "dtype": i.dtype},
                )
            )

    unknown: dict[str, list[str]] = {}
    subgraph_ops: list[str] = []
    made_consts: set[str] = set()
    for i, node in enumerate(g.node):
        if i in folded:
            continue
        name = idx.node_names[i]
        for p, t in enumerate(node.input):
            if t and t in idx.initializers and (i, p) not in weight_ports and t not in made_consts:
                dtype, shape = idx.constant_dtype_shape(t)
                graph.add_node(
                    Node(
                        idx.const_names[t],
                        "Initializer",
                        K.CONSTANT,
                        attrs={"tensor": t, "shape": shape, "dtype": dtype},
                    )
                )
                made_consts.add(t)
        w = weighted.get(i)
        attrs = _attrs(node)
        if node.op_type in ("Conv", "ConvTranspose"):
            attrs.update(_conv_attrs(node, w.weights.get(1) if w else None))
        if node.op_type == "MatMul" and w is not None:
            attrs["transpose_b"] = False
        kind = _kind(node, attrs)
        if node.op_type == "Gather" and w is not None:
            kind = K.EMBEDDING
        if kind is None or node.op_type in _SUBGRAPH_OPS:
            if node.op_type in _SUBGRAPH_OPS:
                subgraph_ops.append(name)
            else:
                label = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
                unknown.setdefault(label, []).append(name)
            kind = K.UNKNOWN
        graph.add_node(
            Node(
                name,
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}",
                kind,
                attrs=attrs,
                weights=dict(w.weights) if w else {},
                bias=w.bias if w else None,
            )
        )
    for name, ref in idx.names.items():
        if ref.kind == "output":
            graph.add_node(Node(name, "Result", K.OUTPUT, attrs={"tensor": ref.tensor}))

    def source(t: str) -> tuple[str, int] | None:
        if t in idx.producer:
            pi, port = idx.producer[t]
            if pi in folded:
                return None
            return idx.node_names[pi], port
        if t in idx.initializers:
            return (idx.const_names[t], 0) if t in made_consts else None
        if t in idx.inputs:
            return t, 0  # inputs are named first: a graph input's node has the tensor's name
        return None

    for i, node in enumerate(g.node):
        if i in folded:
            continue
        name = idx.node_names[i]
        for p, t in enumerate(node.input):
            if not t or (i, p) in weight_ports:
                continue
            src = source(t)
            if src is not None:
                graph.add_edge(Edge(src[0], src[1], name, p, info(t)))
        if node.op_type in _SUBGRAPH_OPS:
            for k, t in enumerate(outer_inputs(node)):
                src = source(t)
                if src is not None:
                    graph.add_edge(Edge(src[0], src[1], name, len(node.input) + k, info(t)))
    for name, ref in idx.names.items():
        if ref.kind == "output":
            src = source(ref.tensor)
            if src is not None:
                graph.add_edge(Edge(src[0], src[1], name, 0, info(ref.tensor)))

    if warn_subgraphs and subgraph_ops:
        warnings.warn(
            f"ONNX ops with subgraphs are left in float (subgraph not quantized): {', '.join(subgraph_ops[:10])}",
            NNCompressWarning,
            stacklevel=3,
        )
    if warn_unknown and unknown:
        listed = "; ".join(
            f"{op} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
            for op, names in unknown.items()
        )
        warnings.warn(
            f"ONNX ops unknown to nncompress are left in float: {listed}", NNCompressWarning, stacklevel=3
        )
    return graph


def outer_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors of the enclosing graph read inside ``node``'s subgraphs (in first-use order)."""
    seen: dict[str, None] = {}
    for a in node.attribute:
        graphs: Iterable[onnx.GraphProto] = ()
        if a.type == onnx.AttributeProto.GRAPH:
            graphs = [a.g]
        elif a.type == onnx.AttributeProto.GRAPHS:
            graphs = list(a.graphs)
        for sub in graphs:
            for t in _free_tensors(sub):
                seen.setdefault(t, None)
    return [t for t in seen if t not in node.input]


def _free_tensors(g: onnx.GraphProto) -> list[str]:
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    free: dict[str, None] = {}
    for n in g.node:
        for t in n.input:
            if t and t not in defined:
                free.setdefault(t, None)
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for sub in subs:
                for t in _free_tensors(sub):
                    if t not in defined:
                        free.setdefault(t, None)
        defined.update(o for o in n.output if o)
    return list(free)
