"""What the torch tracer knows about each op: its name, its op kind, its weights and attributes.

Both the tracer (``nncompress.torch.tracing``) and the hook runtime (``nncompress.torch.hooks``)
name ops with :func:`op_name`, so a name seen at trace time is the name seen at run time.

- :func:`op_name` turns the callable that reached ``__torch_function__`` into an op name
  (``conv2d``, ``linear``, ``__add__``, ``cat``...), or ``None`` for calls that are not ops
  (``x.size()``, ``x.shape``, ``x.dim()``, ``bool(x)``...): those are neither counted nor nodes.
  Tensor methods reached through operators get the operator's name (``x + y`` and ``x.add(y)``
  both arrive as ``Tensor.add`` and are named ``__add__``; ``torch.add`` stays ``add``).
- :data:`OP_TABLE` maps an op name to an :class:`OpSpec`: the normalized op kind, which argument is
  the weight and which the bias, the weight's axis layout and a function extracting attributes.
  Extend it with :func:`register_op`; ops missing from it get ``op_kinds.UNKNOWN``.
- :data:`EXPANDED_FUNCTIONS`: Python functions that are traced *through* (their inner ops become
  nodes) instead of being one opaque op, e.g. ``F.multi_head_attention_forward``, so the two
  linear layers of ``nn.MultiheadAttention`` are visible.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nncompress.graph import op_kinds as K

# ---------------------------------------------------------------------------------------------
# op names
# ---------------------------------------------------------------------------------------------

# calls that return shapes, flags or Python scalars, or manage state: never nodes, never counted
IGNORED_NAMES = frozenset(
    {
        "size",
        "dim",
        "numel",
        "nelement",
        "ndimension",
        "stride",
        "storage_offset",
        "element_size",
        "get_device",
        "data_ptr",
        "is_contiguous",
        "is_floating_point",
        "is_complex",
        "is_signed",
        "is_nonzero",
        "is_set_to",
        "is_pinned",
        "is_shared",
        "is_inference",
        "has_names",
        "dim_order",
        "item",
        "tolist",
        "numpy",
        "untyped_storage",
        "storage",
        "__len__",
        "__bool__",
        "__int__",
        "__float__",
        "__complex__",
        "__index__",
        "__hash__",
        "__repr__",
        "__str__",
        "__format__",
        "__contains__",
        "__reduce_ex__",
        "__reduce__",
        "__deepcopy__",
        "__getstate__",
        "__setstate__",
        "__array__",
        "__dlpack__",
        "__dlpack_device__",
        "__dir__",
        "__sizeof__",
        "register_hook",
        "retain_grad",
        "requires_grad_",
        "backward",
        "_set_grad_enabled",
    }
)

# tensor properties (``x.T``) that return a tensor; every other property (shape, dtype...) is ignored
TENSOR_PROPERTIES = frozenset({"T", "mT", "H", "mH", "data", "real", "imag"})

# Tensor methods reached through Python operators are named after the operator (NNCF style)
METHOD_ALIASES = {
    "add": "__add__",
    "add_": "__iadd__",
    "sub": "__sub__",
    "sub_": "__isub__",
    "mul": "__mul__",
    "mul_": "__imul__",
    "div": "__truediv__",
    "div_": "__itruediv__",
    "matmul": "__matmul__",
    "pow": "__pow__",
    "pow_": "__ipow__",
    "neg": "__neg__",
    "gt": "__gt__",
    "lt": "__lt__",
    "ge": "__ge__",
    "le": "__le__",
    "ne": "__ne__",
    "remainder": "__mod__",
}

_MISSING = object()
_NAME_CACHE: dict[Any, str | None] = {}


_F_THRESHOLD = F.threshold


def _compute_op_name(func: Any) -> str | None:
    name = getattr(func, "__name__", None)
    if name == "__get__":  # a tensor property: Tensor.T.__get__
        prop = getattr(getattr(func, "__self__", None), "__name__", None)
        return prop if prop in TENSOR_PROPERTIES else None
    if name is None:
        return type(func).__name__
    if name in IGNORED_NAMES:
        return None
    qualname = getattr(func, "__qualname__", "") or ""
    if qualname.startswith(("TensorBase.", "Tensor.")):
        return METHOD_ALIASES.get(name, name)
    if func is _F_THRESHOLD:  # F.threshold is defined as `_threshold`; NNCF names it 'threshold'
        return "threshold"
    return name


def op_name(func: Any) -> str | None:
    """The op name of a callable seen by ``__torch_function__``; ``None`` when it is not an op."""
    try:
        name = _NAME_CACHE.get(func, _MISSING)
    except TypeError:  # unhashable callable
        return _compute_op_name(func)
    if name is _MISSING:
        name = _compute_op_name(func)
        _NAME_CACHE[func] = name
    return name  # type: ignore[return-value]


def call_op_name(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The op name of one call: :func:`op_name`, except ``F.relu(x, inplace=True)``, which runs
    ``torch.relu_`` and is named ``relu_`` as NNCF does (``ReLU[relu]/relu__0``)."""
    name = op_name(func)
    if name == "relu" and (kwargs.get("inplace") or (len(args) > 1 and args[1] is True)):
        return "relu_"
    return name


# ---------------------------------------------------------------------------------------------
# expanded functions
# ---------------------------------------------------------------------------------------------


def _without_torch_function_gate(fn: types.FunctionType) -> types.FunctionType:
    """A copy of ``fn`` whose ``has_torch_function*`` checks answer False.

    Functions such as ``F.multi_head_attention_forward`` start with "if has_torch_function(...):
    return handle_torch_function(...)"; under a TorchFunctionMode that check is always true, so
    running the copy (with the mode active) executes the body and lets the mode see its ops. The
    copy has its own globals dict: nothing in torch is modified.
    """
    g = dict(fn.__globals__)
    for gate in ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic"):
        g[gate] = _never
    copy = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    return copy


def _never(*_args: Any, **_kwargs: Any) -> bool:
    return False


# callable seen by __torch_function__ -> implementation run with the mode still active
EXPANDED_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    F.multi_head_attention_forward: _without_torch_function_gate(F.multi_head_attention_forward),
}


# ---------------------------------------------------------------------------------------------
# op specs
# ---------------------------------------------------------------------------------------------


class CallArgs:
    """Positional and keyword arguments of one op call, read by position or name."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple, kwargs: dict):
        self.args = args
        self.kwargs = kwargs

    def get(self, pos: int | None, name: str | None, default: Any = None) -> Any:
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        if pos is not None and pos < len(self.args):
            return self.args[pos]
        return default


AttrsFn = Callable[[CallArgs, list], dict]
KindFn = Callable[[dict], str]


@dataclass(frozen=True)
class OpSpec:
    """What the tracer records for one op name.

    ``weight_arg`` / ``bias_arg`` are ``(position, keyword)`` of the weight and bias arguments;
    ``layout`` chooses the weight's (out, in) channel axes: "conv" (0, 1), "conv_transpose" (1, 0),
    "matmul" (from the weight's side of the product) or "default" (0, 1; 1-D weights 0, 0).
    ``attrs(call, outputs)`` returns layer attributes; ``refine(attrs)`` may return a more specific
    kind (depthwise convolution, gather for tensor indexing).
    """

    kind: str
    weight_arg: tuple[int, str] | None = None
    bias_arg: tuple[int, str] | None = None
    layout: str = "default"
    attrs: AttrsFn | None = None
    refine: KindFn | None = None


OP_TABLE: dict[str, OpSpec] = {}


def register_op(names: str | tuple[str, ...] | list[str], spec: OpSpec) -> None:
    """Register (or override) the spec of one or several op names."""
    for name in (names,) if isinstance(names, str) else names:
        OP_TABLE[name] = spec


def op_kind(name: str, attrs: dict | None = None) -> str:
    """The op kind of an op name (``op_kinds.UNKNOWN`` when the op is not in the table)."""
    spec = OP_TABLE.get(name)
    if spec is None:
        return K.UNKNOWN
    if spec.refine is not None and attrs is not None:
        return spec.refine(attrs)
    return spec.kind


def weight_axes(spec: OpSpec | None, weight: torch.Tensor, tensor_port: int) -> tuple[int, int]:
    """(out_channel_axis, in_channel_axis) of a weight fed at ``tensor_port``."""
    nd = weight.dim()
    layout = spec.layout if spec is not None else "default"
    if nd <= 1:
        return 0, 0
    if layout == "conv_transpose":
        return 1, 0
    if layout == "matmul":
        if tensor_port == 0:  # W @ x: rows of W are outputs
            return nd - 2, nd - 1
        return nd - 1, nd - 2  # x @ W: columns of W are outputs
    return 0, 1


# -- attribute extractors ---------------------------------------------------------------------


def _tuple(value: Any, n: int) -> tuple:
    if isinstance(value, (tuple, list, torch.Size)):
        return tuple(int(v) if isinstance(v, int) else v for v in value)
    return (value,) * n


def _axis(dim: Any, rank: int | None) -> Any:
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(_axis(d, rank) for d in dim)
    if isinstance(dim, int) and rank is not None and dim < 0:
        return dim + rank
    return dim


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _rank(value: Any) -> int | None:
    t = _first_tensor(value)
    return None if t is None else t.dim()


def _conv_attrs(nd: int, transpose: bool) -> AttrsFn:
    def attrs(call: CallArgs, _outputs: list) -> dict:
        w = call.get(1, "weight")
        if transpose:
            stride, padding = call.get(3, "stride", 1), call.get(4, "padding", 0)
            output_padding, groups = call.get(5, "output_padding", 0), call.get(6, "groups", 1)
            dilation = call.get(7, "dilation", 1)
        else:
            stride, padding = call.get(3, "stride", 1), call.get(4, "padding", 0)
            dilation, groups = call.get(5, "dilation", 1), call.get(6, "groups", 1)
        groups = int(groups)
        out: dict[str, Any] = {"groups": groups, "transpose": transpose}
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            if transpose:
                out["in_channels"], out["out_channels"] = int(w.shape[0]), int(w.shape[1]) * groups
            else:
                out["in_channels"], out["out_channels"] = int(w.shape[1]) * groups, int(w.shape[0])
            out["kernel_size"] = tuple(int(k) for k in w.shape[2:])
        out["stride"] = _tuple(stride, nd)
        out["padding"] = padding if isinstance(padding, str) else _tuple(padding, nd)
        out["dilation"] = _tuple(dilation, nd)
        if transpose:
            out["output_padding"] = _tuple(output_padding, nd)
        return out

    return attrs


def _conv_kind(attrs: dict) -> str:
    if attrs.get("transpose"):
        return K.CONVOLUTION_TRANSPOSE
    groups, cin = attrs.get("groups", 1), attrs.get("in_channels")
    if groups > 1 and cin is not None:
        if groups == cin:
            return K.DEPTHWISE_CONVOLUTION
        return K.GROUP_CONVOLUTION
    return K.CONVOLUTION


def _linear_attrs(call: CallArgs, _outputs: list) -> dict:
    w = call.get(1, "weight")
    if isinstance(w, torch.Tensor) and w.dim() == 2:
        return {"in_features": int(w.shape[1]), "out_features": int(w.shape[0])}
    return {}


def _embedding_attrs(call: CallArgs, _outputs: list) -> dict:
    w = call.get(1, "weight")
    out: dict[str, Any] = {"padding_idx": call.get(2, "padding_idx")}
    if isinstance(w, torch.Tensor) and w.dim() == 2:
        out["num_embeddings"], out["embedding_dim"] = int(w.shape[0]), int(w.shape[1])
    return out


def _dim_attrs(pos: int = 1, name: str = "dim", default: Any = None, stacked: bool = False) -> AttrsFn:
    def attrs(call: CallArgs, _outputs: list) -> dict:
        dim = call.get(pos, name, default)
        if dim is None and name == "dim":
            dim = call.kwargs.get("axis", default)
        rank = _rank(call.get(0, None))
        if rank is not None and stacked:
            rank += 1
        return {"axis": _axis(dim, rank)}

    return attrs


def _reduce_attrs(call: CallArgs, outputs: list) -> dict:
    out = _dim_attrs()(call, outputs)
    keepdim = call.get(2, "keepdim", False)
    out["keepdim"] = bool(keepdim) if isinstance(keepdim, bool) else keepdim
    return out


def _split_attrs(call: CallArgs, outputs: list) -> dict:
    out = _dim_attrs(2, "dim", 0)(call, outputs)
    out["num_splits"] = len(outputs)
    return out


def _index_str(index: Any) -> str:
    if isinstance(index, tuple):
        return ", ".join(_index_str(i) for i in index) if index else "()"
    if isinstance(index, slice):
        parts = ["" if v is None else _index_str(v) for v in (index.start, index.stop, index.step)]
        text = f"{parts[0]}:{parts[1]}"
        return text + (f":{parts[2]}" if index.step is not None else "")
    if index is Ellipsis:
        return "..."
    if index is None:
        return "None"
    if isinstance(index, torch.Tensor):
        return f"tensor{list(index.shape)}:{str(index.dtype).replace('torch.', '')}"
    if isinstance(index, list):
        return "[" + ", ".join(_index_str(i) for i in index) + "]"
    return repr(index)


def _contains_tensor(index: Any) -> bool:
    if isinstance(index, torch.Tensor):
        return True
    if isinstance(index, (tuple, list)):
        return any(_contains_tensor(i) for i in index)
    return False


def _getitem_attrs(call: CallArgs, _outputs: list) -> dict:
    index = call.get(1, None)
    return {"index": f"[{_index_str(index)}]", "gather": _contains_tensor(index)}


def _getitem_kind(attrs: dict) -> str:
    return K.GATHER if attrs.get("gather") else K.STRIDED_SLICE


def _interpolate_attrs(call: CallArgs, _outputs: list) -> dict:
    return {
        "mode": call.get(3, "mode", "nearest"),
        "size": call.get(1, "size"),
        "scale_factor": call.get(2, "scale_factor"),
        "align_corners": call.get(4, "align_corners"),
    }


def _pool_attrs(call: CallArgs, _outputs: list) -> dict:
    return {
        "kernel_size": call.get(1, "kernel_size"),
        "stride": call.get(2, "stride"),
        "padding": call.get(3, "padding", 0),
    }


def _adaptive_pool_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"output_size": call.get(1, "output_size")}


def _transpose_attrs(call: CallArgs, _outputs: list) -> dict:
    rank = _rank(call.get(0, None))
    return {"dims": (_axis(call.get(1, "dim0"), rank), _axis(call.get(2, "dim1"), rank))}


def _permute_attrs(call: CallArgs, _outputs: list) -> dict:
    dims = call.kwargs.get("dims", call.args[1:])
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return {"dims": tuple(dims)}


def _flatten_attrs(call: CallArgs, _outputs: list) -> dict:
    rank = _rank(call.get(0, None))
    return {
        "start_dim": _axis(call.get(1, "start_dim", 0), rank),
        "end_dim": _axis(call.get(2, "end_dim", -1), rank),
    }


def _batch_norm_attrs(call: CallArgs, _outputs: list) -> dict:
    mean = call.get(1, "running_mean")
    w = call.get(3, "weight")
    ref = mean if isinstance(mean, torch.Tensor) else w
    out: dict[str, Any] = {"eps": call.get(7, "eps", 1e-5)}
    if isinstance(ref, torch.Tensor):
        out["num_features"] = int(ref.shape[0])
    return out


def _layer_norm_attrs(call: CallArgs, _outputs: list) -> dict:
    shape = call.get(1, "normalized_shape")
    return {
        "normalized_shape": tuple(shape) if isinstance(shape, (list, tuple)) else shape,
        "eps": call.get(4, "eps", 1e-5),
    }


def _group_norm_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"num_groups": call.get(1, "num_groups"), "eps": call.get(4, "eps", 1e-5)}


def _hardtanh_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"min_val": call.get(1, "min_val", -1.0), "max_val": call.get(2, "max_val", 1.0)}


def _clamp_attrs(call: CallArgs, _outputs: list) -> dict:
    lo, hi = call.get(1, "min"), call.get(2, "max")
    return {
        "min_val": lo if not isinstance(lo, torch.Tensor) else None,
        "max_val": hi if not isinstance(hi, torch.Tensor) else None,
    }


def _leaky_relu_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"negative_slope": call.get(1, "negative_slope", 0.01)}


def _dropout_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"p": call.get(1, "p", 0.5)}


def _pad_attrs(call: CallArgs, _outputs: list) -> dict:
    pad = call.get(1, "pad")
    return {
        "pads": tuple(pad) if isinstance(pad, (list, tuple)) else pad,
        "mode": call.get(2, "mode", "constant"),
    }


def _sdpa_attrs(call: CallArgs, _outputs: list) -> dict:
    return {"is_causal": call.get(5, "is_causal", False), "scale": call.kwargs.get("scale")}


def _rnn_attrs(call: CallArgs, outputs: list) -> dict:
    # _VF.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    hx = call.get(1, None)
    h0 = _first_tensor(hx)
    out: dict[str, Any] = {}
    if isinstance(call.get(2, None), (list, tuple)):
        out.update(
            has_biases=call.get(3, None),
            num_layers=call.get(4, None),
            bidirectional=call.get(7, None),
            batch_first=call.get(8, None),
        )
    if h0 is not None:
        out["hidden_size"] = int(h0.shape[-1])
    return out


def _softmax_attrs(call: CallArgs, outputs: list) -> dict:
    return _dim_attrs(1, "dim")(call, outputs)


_CONV = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
for _nd, _name in _CONV.items():
    register_op(
        _name,
        OpSpec(K.CONVOLUTION, (1, "weight"), (2, "bias"), "conv", _conv_attrs(_nd, False), _conv_kind),
    )
    register_op(
        f"conv_transpose{_nd}d",
        OpSpec(K.CONVOLUTION_TRANSPOSE, (1, "weight"), (2, "bias"), "conv_transpose", _conv_attrs(_nd, True)),
    )
register_op("linear", OpSpec(K.MATMUL, (1, "weight"), (2, "bias"), "default", _linear_attrs))
register_op(
    ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum", "mv"), OpSpec(K.MATMUL, layout="matmul")
)
register_op(("addmm", "baddbmm", "addmv"), OpSpec(K.MATMUL, bias_arg=(0, "input"), layout="matmul"))
register_op("bilinear", OpSpec(K.MATMUL, (2, "weight"), (3, "bias")))
register_op("embedding", OpSpec(K.EMBEDDING, (1, "weight"), attrs=_embedding_attrs))
register_op("embedding_bag", OpSpec(K.EMBEDDING_BAG, (1, "weight")))
register_op("lstm", OpSpec(K.LSTM, attrs=_rnn_attrs))
register_op("gru", OpSpec(K.GRU, attrs=_rnn_attrs))
register_op(("rnn_tanh", "rnn_relu"), OpSpec(K.RNN, attrs=_rnn_attrs))

# normalization
register_op("batch_norm", OpSpec(K.BATCH_NORM, (3, "weight"), (4, "bias"), attrs=_batch_norm_attrs))
register_op("instance_norm", OpSpec(K.INSTANCE_NORM, (3, "weight"), (4, "bias")))
register_op("layer_norm", OpSpec(K.LAYER_NORM, (2, "weight"), (3, "bias"), attrs=_layer_norm_attrs))
register_op("rms_norm", OpSpec(K.LAYER_NORM, (2, "weight"), attrs=_layer_norm_attrs))
register_op("group_norm", OpSpec(K.GROUP_NORM, (2, "weight"), (3, "bias"), attrs=_group_norm_attrs))
register_op("normalize", OpSpec(K.NORMALIZE_L2, attrs=_dim_attrs(2, "dim", 1)))

# activations
register_op(("relu", "relu_", "threshold"), OpSpec(K.RELU))
register_op(("hardtanh", "hardtanh_", "relu6"), OpSpec(K.CLAMP, attrs=_hardtanh_attrs))
register_op(
    ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max"), OpSpec(K.CLAMP, attrs=_clamp_attrs)
)
register_op(("leaky_relu", "leaky_relu_", "rrelu"), OpSpec(K.LEAKY_RELU, attrs=_leaky_relu_attrs))
register_op("prelu", OpSpec(K.PRELU, (1, "weight")))
register_op(("elu", "elu_", "selu", "celu"), OpSpec(K.ELU))
register_op("gelu", OpSpec(K.GELU))
register_op(("sigmoid", "sigmoid_"), OpSpec(K.SIGMOID))
register_op(("hardsigmoid", "hardsigmoid_"), OpSpec(K.HSIGMOID))
register_op(("hardswish", "hardswish_"), OpSpec(K.HSWISH))
register_op(("silu", "silu_"), OpSpec(K.SWISH))
register_op("mish", OpSpec(K.MISH))
register_op(("tanh", "tanh_"), OpSpec(K.TANH))
register_op(("softmax", "_softmax"), OpSpec(K.SOFTMAX, attrs=_softmax_attrs))
register_op("log_softmax", OpSpec(K.LOG_SOFTMAX, attrs=_softmax_attrs))
register_op(("exp", "exp_"), OpSpec(K.EXP))
register_op(("log", "log_"), OpSpec(K.LOG))
register_op(("sqrt", "sqrt_", "rsqrt"), OpSpec(K.SQRT))
register_op(("abs", "abs_", "__abs__"), OpSpec(K.ABS))
register_op(("neg", "__neg__", "negative"), OpSpec(K.NEGATIVE))
register_op("erf", OpSpec(K.ERF))

# elementwise binary
register_op(("add", "__add__", "__radd__", "__iadd__", "add_"), OpSpec(K.ADD))
register_op(("sub", "subtract", "__sub__", "__rsub__", "__isub__", "sub_", "rsub"), OpSpec(K.SUBTRACT))
register_op(("mul", "multiply", "__mul__", "__rmul__", "__imul__", "mul_"), OpSpec(K.MULTIPLY))
register_op(
    ("div", "divide", "true_divide", "__truediv__", "__rtruediv__", "__rdiv__", "__itruediv__", "div_"),
    OpSpec(K.DIVIDE),
)
register_op(("pow", "__pow__", "__rpow__", "__ipow__", "pow_", "square"), OpSpec(K.POWER))
register_op("maximum", OpSpec(K.MAXIMUM))
register_op("minimum", OpSpec(K.MINIMUM))
register_op(("fmod", "remainder", "__mod__", "__floordiv__", "floor_divide"), OpSpec(K.FLOOR_MOD))
register_op(("lt", "__lt__", "less"), OpSpec(K.LESS))
register_op(("le", "__le__", "less_equal"), OpSpec(K.LESS_EQUAL))
register_op(("gt", "__gt__", "greater"), OpSpec(K.GREATER))
register_op(("ge", "__ge__", "greater_equal"), OpSpec(K.GREATER_EQUAL))
register_op(("eq", "__eq__"), OpSpec(K.EQUAL))
register_op(("ne", "__ne__", "not_equal"), OpSpec(K.NOT_EQUAL))
register_op(("logical_and", "__and__"), OpSpec(K.LOGICAL_AND))
register_op(("logical_or", "__or__"), OpSpec(K.LOGICAL_OR))
register_op(("logical_xor", "__xor__"), OpSpec(K.LOGICAL_XOR))
register_op(("logical_not", "__invert__"), OpSpec(K.LOGICAL_NOT))

# pooling and reductions
for _nd in (1, 2, 3):
    register_op((f"max_pool{_nd}d", f"max_pool{_nd}d_with_indices"), OpSpec(K.MAX_POOL, attrs=_pool_attrs))
    register_op(f"avg_pool{_nd}d", OpSpec(K.AVG_POOL, attrs=_pool_attrs))
    register_op(f"adaptive_avg_pool{_nd}d", OpSpec(K.ADAPTIVE_AVG_POOL, attrs=_adaptive_pool_attrs))
    register_op(
        (f"adaptive_max_pool{_nd}d", f"adaptive_max_pool{_nd}d_with_indices"),
        OpSpec(K.MAX_POOL, attrs=_adaptive_pool_attrs),
    )
register_op("mean", OpSpec(K.REDUCE_MEAN, attrs=_reduce_attrs))
register_op(("sum", "nansum"), OpSpec(K.REDUCE_SUM, attrs=_reduce_attrs))
register_op(("amax", "max"), OpSpec(K.REDUCE_MAX, attrs=_reduce_attrs))
register_op(("amin", "min"), OpSpec(K.REDUCE_MIN, attrs=_reduce_attrs))
register_op("norm", OpSpec(K.REDUCE_L2, attrs=_reduce_attrs))

# data movement
register_op(("reshape", "view", "view_as", "reshape_as", "unflatten"), OpSpec(K.RESHAPE))
register_op("flatten", OpSpec(K.FLATTEN, attrs=_flatten_attrs))
register_op(("squeeze", "squeeze_"), OpSpec(K.SQUEEZE, attrs=_dim_attrs()))
register_op(("unsqueeze", "unsqueeze_"), OpSpec(K.UNSQUEEZE, attrs=_dim_attrs()))
register_op(("transpose", "transpose_", "swapaxes", "swapdims"), OpSpec(K.TRANSPOSE, attrs=_transpose_attrs))
register_op(("permute", "movedim"), OpSpec(K.TRANSPOSE, attrs=_permute_attrs))
register_op(("t", "T", "mT", "H", "mH", "adjoint"), OpSpec(K.TRANSPOSE))
register_op(("contiguous", "clone", "detach", "data", "alias", "real"), OpSpec(K.IDENTITY))
register_op("__getitem__", OpSpec(K.STRIDED_SLICE, attrs=_getitem_attrs, refine=_getitem_kind))
register_op(("narrow", "select", "slice"), OpSpec(K.STRIDED_SLICE))
register_op(("gather", "index_select", "take_along_dim", "take"), OpSpec(K.GATHER))
register_op(("split", "chunk", "tensor_split"), OpSpec(K.SPLIT, attrs=_split_attrs))
register_op(("split_with_sizes", "unbind"), OpSpec(K.VARIADIC_SPLIT, attrs=_split_attrs))
register_op(("cat", "concat", "concatenate"), OpSpec(K.CONCAT, attrs=_dim_attrs(1, "dim", 0)))
register_op("stack", OpSpec(K.CONCAT, attrs=_dim_attrs(1, "dim", 0, stacked=True)))
register_op(("expand", "expand_as", "broadcast_to"), OpSpec(K.BROADCAST))
register_op(("repeat", "tile", "repeat_interleave"), OpSpec(K.TILE))
register_op("pad", OpSpec(K.PAD, attrs=_pad_attrs))
register_op(
    ("to", "float", "half", "double", "bfloat16", "int", "long", "bool", "type", "type_as"),
    OpSpec(K.CONVERT),
)
register_op(
    ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"),
    OpSpec(K.INTERPOLATE, attrs=_interpolate_attrs),
)
register_op("channel_shuffle", OpSpec(K.SHUFFLE_CHANNELS))
register_op(
    ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "dropout_"),
    OpSpec(K.DROPOUT, attrs=_dropout_attrs),
)
register_op("scaled_dot_product_attention", OpSpec(K.SCALED_DOT_PRODUCT_ATTENTION, attrs=_sdpa_attrs))
register_op(
    (
        "arange",
        "zeros",
        "ones",
        "full",
        "empty",
        "eye",
        "tensor",
        "as_tensor",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_like",
        "new_zeros",
        "new_ones",
        "new_full",
        "new_empty",
        "new_tensor",
        "rand",
        "randn",
        "randint",
        "rand_like",
        "randn_like",
    ),
    OpSpec(K.CONSTANT),
)

del _nd, _name
