"""``openvino.Model`` -> ``nncompress.graph.Graph``.

OpenVINO op types already are op kinds (the hardware rules are written in them); a few are
refined: GroupConvolution with one input channel per group is a ``DepthWiseConvolution``, a
Gather from a constant table with axis 0 an ``Embedding``. Types this backend does not know are
``Unknown`` (left in float) with one warning; ops with bodies (If, Loop, TensorIterator) too.

Names are friendly names (``aten::relu/Relu``...), made unique with a ``_<k>`` suffix in
topological order. Nodes this backend inserts (marked with the ``nncompress`` rt_info key) are
skipped, so a model ``Adapter.apply`` returned resolves to the same names as its float model.

Weights: the constant sub-graph fed to a weight port (a Constant, possibly behind the
FP16/INT8 decompression chain ``Convert`` [``Subtract``] [``Multiply``] or a ``Reshape``) is a
``WeightInfo`` named by its largest Constant; those ops are not graph nodes. ``WeightInfo.shape``
is the *logical* shape: ``[C_out, C_in / groups, k...]`` for GroupConvolution (stored as
``[groups, C_out / groups, C_in / groups, k...]``), so every backend has the same weight layout.

Biases: OpenVINO convolutions and MatMuls have none; the ``Add`` of a constant with one value
per output channel that follows them is the bias. The weighted op's ``bias`` names that
Constant (a graph node that feeds the Add, which stays in the graph); ``Adapter.get_bias`` /
``set_bias`` read and replace it, so bias correction works on the Add's constant.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openvino as ov

from nncompress.errors import GraphError, NNCompressWarning
from nncompress.graph import Edge, Graph, Node, TensorInfo, WeightInfo
from nncompress.graph import op_kinds as K

MARK = "nncompress"  # rt_info key on every node this backend inserts

_OP_KIND_VALUES = frozenset(v for k, v in vars(K).items() if k.isupper() and isinstance(v, str))
_EXTRA_KINDS = frozenset(
    {
        "GroupConvolutionBackpropData",
        "DeformableConvolution",
        "ReadValue",
        "Cos",
        "Sin",
        "SquaredDifference",
        "SoftPlus",
    }
)
_NEUTRAL = frozenset(
    {
        "Select",
        "TopK",
        "Range",
        "NonZero",
        "ScatterUpdate",
        "ScatterNDUpdate",
        "ScatterElementsUpdate",
        "Einsum",
        "DepthToSpace",
        "SpaceToDepth",
        "CumSum",
        "GatherND",
        "GatherElements",
        "OneHot",
        "ReduceProd",
        "ReduceLogicalAnd",
        "ReduceLogicalOr",
        "ReduceL1",
        "FakeQuantize",
        "FakeConvert",
        "Ceiling",
        "Floor",
        "Round",
        "Sign",
        "Assign",
        "SoftSign",
        "Selu",
        "Mod",
        "IsNaN",
        "IsInf",
        "IsFinite",
        "Bucketize",
        "Roll",
        "Reverse",
        "ReverseSequence",
        "GridSample",
        "ROIAlign",
        "ROIPooling",
        "NonMaxSuppression",
        "Unique",
        "Eye",
        "RandomUniform",
        "Acos",
        "Asin",
        "Atan",
        "Cosh",
        "Sinh",
        "Tan",
        "Acosh",
        "Asinh",
        "Atanh",
        "BitwiseAnd",
        "BitwiseOr",
        "BitwiseXor",
        "BitwiseNot",
        "ConvertPromoteTypes",
        "DetectionOutput",
        "PriorBox",
        "PriorBoxClustered",
        "Proposal",
        "RegionYolo",
        "ReorgYolo",
        "CTCGreedyDecoder",
        "CTCGreedyDecoderSeqLen",
        "Erf",
        "ExtractImagePatches",
        "HardSigmoid",
        "LRN",
        "Negative",
        "PSROIPooling",
        "SpaceToBatch",
        "BatchToSpace",
        "Sqrt",
        "Squeeze",
        "StringTensorPack",
        "StringTensorUnpack",
        "RMS",
    }
)
_RENAMED = {"AdaptiveAvgPool": K.AVG_POOL, "AdaptiveMaxPool": K.MAX_POOL, "SoftMax": K.SOFTMAX}
_BODY_OPS = frozenset({"If", "Loop", "TensorIterator"})
# ops through which a weight is still "a constant" (folded in numpy by ``fold``)
FOLDABLE = frozenset(
    {
        "Constant",
        "Convert",
        "Multiply",
        "Subtract",
        "Add",
        "Reshape",
        "Unsqueeze",
        "Squeeze",
        "Transpose",
        "FakeQuantize",
    }
)
_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "i16": "int16",
    "i8": "int8",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "boolean": "bool",
    "i4": "int4",
    "u4": "uint4",
    "u1": "uint1",
    "nf4": "nf4",
    "f8e4m3": "float8_e4m3",
    "f8e5m2": "float8_e5m2",
    "string": "string",
    "dynamic": "undefined",
}


def dtype_name(t: ov.Type) -> str:
    name = t.get_type_name()
    return _TYPES.get(name, name)


def tensor_info(out: ov.Output) -> TensorInfo:
    ps = out.get_partial_shape()
    shape = None
    if ps.rank.is_static:
        shape = tuple(int(d.get_length()) if d.is_static else None for d in ps)
    return TensorInfo(shape=shape, dtype=dtype_name(out.get_element_type()))


def is_inserted(op: ov.Node) -> bool:
    return MARK in op.get_rt_info()


def key(op: ov.Node) -> int:
    return op.get_instance_id()


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelIndex:
    """Graph names of a model's ops (inserted quantization ops excluded)."""

    model: ov.Model
    ops: dict[str, ov.Node] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # instance id -> name

    def op(self, name: str) -> ov.Node:
        try:
            return self.ops[name]
        except KeyError:
            raise GraphError(f"The OpenVINO model has no op named '{name}'") from None

    def name(self, op: ov.Node) -> str:
        return self.names[key(op)]


def index_model(model: ov.Model) -> ModelIndex:
    idx = ModelIndex(model)
    for op in model.get_ordered_ops():
        if is_inserted(op):
            continue
        base = op.get_friendly_name()
        name, k = base, 0
        while name in idx.ops:
            k += 1
            name = f"{base}_{k}"
        idx.ops[name] = op
        idx.names[key(op)] = name
    return idx


# ---------------------------------------------------------------------------------------------
# constant folding (weights behind decompression chains)
# ---------------------------------------------------------------------------------------------
def constant_chain(out: ov.Output) -> list[ov.Node] | None:
    """The ops computing ``out`` from Constants only through ``FOLDABLE`` ops (None otherwise)."""
    op = out.get_node()
    kind = op.get_type_name()
    if kind == "Constant":
        return [op]
    if kind not in FOLDABLE:
        return None
    chain = [op]
    for inp in op.inputs():
        sub = constant_chain(inp.get_source_output())
        if sub is None:
            return None
        chain.extend(s for s in sub if all(key(s) != key(c) for c in chain))
    return chain


def root_constant(chain: list[ov.Node]) -> ov.Node:
    """The Constant holding the weight values: the largest one of the chain."""
    consts = [op for op in chain if op.get_type_name() == "Constant"]
    return max(
        consts,
        key=lambda c: int(np.prod(c.get_output_shape(0))) if c.get_output_partial_shape(0).is_static else 0,
    )


def constant_value(op: ov.Node) -> np.ndarray:
    t = op.get_output_element_type(0).get_type_name()
    data = np.array(op.get_data(), copy=True)
    if t == "bf16":  # numpy has no bfloat16: the data comes as raw 16-bit words
        data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif t in ("i4", "u4", "u1", "nf4"):
        raise GraphError(f"Constant '{op.get_friendly_name()}' is {t}, which this backend cannot read")
    return data


def fold(out: ov.Output) -> np.ndarray:
    """The value of a constant sub-graph output, computed in numpy."""
    op = out.get_node()
    kind = op.get_type_name()
    if kind == "Constant":
        return constant_value(op)
    args = [fold(i.get_source_output()) for i in op.inputs()]
    if kind == "Convert":
        target = dtype_name(op.get_output_element_type(0))
        return args[0].astype(np.float32 if target == "bfloat16" else target)
    if kind == "Multiply":
        return np.multiply(args[0], args[1])
    if kind == "Subtract":
        return np.subtract(args[0], args[1])
    if kind == "Add":
        return np.add(args[0], args[1])
    if kind in ("Reshape", "Unsqueeze", "Squeeze"):
        return args[0].reshape(tuple(op.get_output_shape(0)))
    if kind == "Transpose":
        return np.transpose(args[0], tuple(int(v) for v in args[1]))
    if kind == "FakeQuantize":
        x, il, ih, ol, oh = (a.astype(np.float64) for a in args)
        levels = int(op.get_attributes()["levels"])
        q = np.round((np.clip(x, il, ih) - il) / (ih - il) * (levels - 1))
        return (q / (levels - 1) * (oh - ol) + ol).astype(args[0].dtype)
    raise GraphError(f"Cannot fold {kind} '{op.get_friendly_name()}'")


# ---------------------------------------------------------------------------------------------
# weighted ops
# ---------------------------------------------------------------------------------------------
@dataclass
class WeightSite:
    """A weight port of a weighted op: logical shape/axes and the constants behind it."""

    port: int
    info: WeightInfo
    chain: list[ov.Node]
    physical_shape: tuple[int, ...]


def _static_shape(out: ov.Output) -> tuple[int, ...] | None:
    ps = out.get_partial_shape()
    return tuple(int(d) for d in out.get_shape()) if ps.is_static else None


def weight_sites(op: ov.Node) -> list[WeightSite]:
    """The constant weights of ``op`` (empty for ops without constant weights)."""
    kind = op.get_type_name()
    ports: list[tuple[int, int, int]] = []  # (port, out axis, in axis) in the logical layout
    if kind == "Convolution" or kind == "GroupConvolution":
        ports = [(1, 0, 1)]
    elif kind == "ConvolutionBackpropData":
        ports = [(1, 1, 0)]
    elif kind == "MatMul":
        if constant_chain(op.input(0).get_source_output()) is None:
            rank = op.get_input_partial_shape(1).rank
            if rank.is_static and rank.get_length() >= 2:
                r = rank.get_length()
                tb = bool(op.get_attributes().get("transpose_b", False))
                ports = [(1, r - 2, r - 1) if tb else (1, r - 1, r - 2)]
    elif kind == "Gather" and op.get_input_size() >= 3:
        indices = op.input(1).get_source_output()
        axis_chain = constant_chain(op.input(2).get_source_output())
        if (
            axis_chain is not None
            and constant_chain(indices) is None
            and int(np.asarray(fold(op.input(2).get_source_output())).ravel()[0]) == 0
            and op.get_input_partial_shape(0).rank.is_static
            and op.get_input_partial_shape(0).rank.get_length() == 2
        ):
            ports = [(0, 0, 1)]
    sites = []
    for port, out_axis, in_axis in ports:
        src = op.input(port).get_source_output()
        chain = constant_chain(src)
        physical = _static_shape(src)
        if chain is None or physical is None:
            continue
        logical = physical
        if kind == "GroupConvolution":
            logical = (physical[0] * physical[1], *physical[2:])
        root = root_constant(chain)
        root_type = dtype_name(root.get_output_element_type(0))
        # an integer weight behind a decompression chain is compressed already: not requantized
        dtype = (
            root_type
            if root_type not in ("float16", "bfloat16", "float32", "float64")
            else (dtype_name(src.get_element_type()))
        )
        info = WeightInfo(root.get_friendly_name(), tuple(logical), dtype, out_axis, in_axis)
        sites.append(WeightSite(port, info, chain, physical))
    return sites


def to_logical(op: ov.Node, value: np.ndarray) -> np.ndarray:
    if op.get_type_name() == "GroupConvolution":
        return value.reshape((value.shape[0] * value.shape[1], *value.shape[2:]))
    return value


def to_physical(op: ov.Node, port: int, value: np.ndarray) -> np.ndarray:
    return (
        value.reshape(tuple(op.input(port).get_source_output().get_shape()))
        if op.get_type_name() == ("GroupConvolution")
        else value
    )


def out_channels(op: ov.Node, sites: list[WeightSite]) -> int | None:
    if not sites:
        return None
    info = sites[0].info
    return int(info.shape[info.out_channel_axis])


def bias_constant(op: ov.Node, sites: list[WeightSite]) -> ov.Node | None:
    """The Constant of the ``Add`` right after ``op`` holding one value per output channel."""
    channels = out_channels(op, sites)
    if channels is None or op.get_type_name() == "Gather":
        return None
    targets = list(op.output(0).get_target_inputs())
    if len(targets) != 1:
        return None
    add = targets[0].get_node()
    if add.get_type_name() != "Add" or is_inserted(add):
        return None
    other = add.input(1 - targets[0].get_index()).get_source_output()
    chain = constant_chain(other)
    if chain is None or any(c.get_type_name() not in ("Constant", "Convert") for c in chain):
        return None
    shape = _static_shape(other)
    if shape is None or int(np.prod(shape)) != channels:
        return None
    out_rank = op.get_output_partial_shape(0).rank
    if shape and out_rank.is_static:
        axis = 1 if op.get_type_name() != "MatMul" else out_rank.get_length() - 1
        aligned = (1,) * (out_rank.get_length() - len(shape)) + tuple(shape)
        if len(aligned) != out_rank.get_length() or aligned[axis] != channels:
            return None
    return root_constant(chain)


def _conv_attrs(op: ov.Node, sites: list[WeightSite]) -> dict[str, Any]:
    a = op.get_attributes()
    kind = op.get_type_name()
    attrs: dict[str, Any] = {"transpose": kind.endswith("BackpropData")}
    for k, name in (("stride", "strides"), ("dilation", "dilations")):
        if name in a:
            attrs[k] = tuple(int(v) for v in a[name])
    if "pads_begin" in a:
        attrs["padding"] = tuple(int(v) for v in a["pads_begin"]) + tuple(
            int(v) for v in a.get("pads_end", ())
        )
    groups = 1
    if sites:
        phys = sites[0].physical_shape
        if kind == "GroupConvolution":
            groups = phys[0]
            attrs.update(
                in_channels=phys[0] * phys[2], out_channels=phys[0] * phys[1], kernel_size=tuple(phys[3:])
            )
        elif kind == "Convolution":
            attrs.update(in_channels=phys[1], out_channels=phys[0], kernel_size=tuple(phys[2:]))
        elif kind == "ConvolutionBackpropData":
            attrs.update(in_channels=phys[0], out_channels=phys[1], kernel_size=tuple(phys[2:]))
    attrs["groups"] = groups
    return attrs


def _kind(op: ov.Node, sites: list[WeightSite], attrs: dict[str, Any]) -> str | None:
    t = op.get_type_name()
    if t == "GroupConvolution":
        groups, cin = attrs.get("groups", 1), attrs.get("in_channels")
        return K.DEPTHWISE_CONVOLUTION if groups > 1 and cin == groups else K.GROUP_CONVOLUTION
    if t == "Gather" and sites:
        return K.EMBEDDING
    if t in _RENAMED:
        return _RENAMED[t]
    if t in _OP_KIND_VALUES or t in _EXTRA_KINDS or t in _NEUTRAL:
        return t
    return None


def _attrs(op: ov.Node) -> dict[str, Any]:
    t = op.get_type_name()
    try:
        a = op.get_attributes()
    except Exception:  # attributes are best effort
        return {}
    attrs: dict[str, Any] = {}
    if t == "Interpolate":
        attrs["mode"] = str(a.get("mode", "nearest"))
    elif t == "MatMul":
        attrs.update(
            transpose_a=bool(a.get("transpose_a", False)), transpose_b=bool(a.get("transpose_b", False))
        )
    elif t in ("Concat", "Softmax", "LogSoftmax", "Gather"):
        if "axis" in a:
            attrs["axis"] = int(a["axis"])
    elif t in ("MaxPool", "AvgPool"):
        attrs["kernel_size"] = tuple(int(v) for v in a.get("kernel", ()))
    elif t == "Clamp":
        attrs.update(min=float(a.get("min", 0.0)), max=float(a.get("max", 0.0)))
    elif t == "GRUSequence":
        attrs["linear_before_reset"] = bool(a.get("linear_before_reset", False))
    return attrs


# ---------------------------------------------------------------------------------------------
# the graph
# ---------------------------------------------------------------------------------------------
def build_graph(model: ov.Model, *, warn_unknown: bool = True, warn_subgraphs: bool = True) -> Graph:
    """The ``Graph`` of ``model`` (see the module docstring).

    Warns (``NNCompressWarning``) about ops left in float: unknown ops (``warn_unknown``; the
    ``quantize`` pipeline names them itself) and ops with bodies (``warn_subgraphs``).
    """
    if not isinstance(model, ov.Model):
        raise GraphError(f"Expected an openvino.Model, got {type(model).__name__}")
    idx = index_model(model)
    ops = [op for op in model.get_ordered_ops() if not is_inserted(op)]
    sites = {key(op): weight_sites(op) for op in ops}
    weight_ports = {(key(op), s.port) for op in ops for s in sites[key(op)]}
    chained = {key(c): c for op in ops for s in sites[key(op)] for c in s.chain}
    absorbed: set[int] = set()
    for k, c in chained.items():
        readers = [t for out in c.outputs() for t in out.get_target_inputs()]
        if readers and all(
            key(t.get_node()) in chained or (key(t.get_node()), t.get_index()) in weight_ports
            for t in readers
        ):
            absorbed.add(k)

    graph = Graph(model.get_friendly_name() or "model")
    unknown: dict[str, list[str]] = {}
    bodies: list[str] = []
    for op in ops:
        if key(op) in absorbed:
            continue
        name = idx.name(op)
        t = op.get_type_name()
        s = sites[key(op)]
        attrs = _attrs(op)
        if t in ("Convolution", "GroupConvolution", "ConvolutionBackpropData"):
            attrs.update(_conv_attrs(op, s))
        if t == "Parameter":
            info = tensor_info(op.output(0))
            attrs.update(shape=info.shape, dtype=info.dtype)
        kind = _kind(op, s, attrs)
        if kind is None or t in _BODY_OPS:
            (bodies if t in _BODY_OPS else unknown.setdefault(t, [])).append(name)
            kind = K.UNKNOWN
        bias = bias_constant(op, s)
        graph.add_node(
            Node(
                name,
                t,
                kind,
                attrs=attrs,
                weights={w.port: w.info for w in s},
                bias=idx.name(bias) if bias is not None and key(bias) in idx.names else None,
            )
        )
    for op in ops:
        if key(op) in absorbed:
            continue
        name = idx.name(op)
        for inp in op.inputs():
            if (key(op), inp.get_index()) in weight_ports:
                continue
            src = inp.get_source_output()
            src_op = src.get_node()
            if key(src_op) in absorbed or key(src_op) not in idx.names:
                continue
            graph.add_edge(Edge(idx.name(src_op), src.get_index(), name, inp.get_index(), tensor_info(src)))

    if warn_subgraphs and bodies:
        warnings.warn(
            f"OpenVINO ops with bodies are left in float (subgraph not quantized): {', '.join(bodies[:10])}",
            NNCompressWarning,
            stacklevel=3,
        )
    if warn_unknown and unknown:
        listed = "; ".join(
            f"{t} ({', '.join(n[:3])}{' ...' if len(n) > 3 else ''})" for t, n in unknown.items()
        )
        warnings.warn(
            f"OpenVINO ops unknown to nncompress are left in float: {listed}", NNCompressWarning, stacklevel=3
        )
    return graph
