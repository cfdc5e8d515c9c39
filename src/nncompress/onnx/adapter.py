"""The ONNX implementation of ``BackendAdapter``: QuantizeLinear/DequantizeLinear (QDQ) models.

- ``build_graph``: ``graph_builder.build_graph`` (names, weights, biases: see there).
- ``collect_statistics``: a private copy of the model gets, per tensor asked for, Reduce nodes
  for the min / max / abs-max / mean requests (float32 tensors of known rank: ONNX Runtime hands
  back a value or a channel vector) and an extra output for the rest (quantiles, raw tensors),
  reduced with ``statistics.reduce_batch``; it runs once per calibration item and pushes every
  value to its sinks at once (nothing per item is kept). In a
  model made by ``apply`` a statistic at a quantized tensor sees the tensor going *into* its
  QuantizeLinear (the pair is walked back).
- ``apply``: a new ModelProto with a QuantizeLinear -> DequantizeLinear pair at every target
  point: ``OUTPUT`` after the producer, read by every node that read the tensor (a graph output
  keeps the float tensor); ``INPUT`` only for that consumer (a quantized graph output keeps its
  name); ``WEIGHT``: the initializer is stored as integers (int8/uint8, int4 at opset 21) and a
  DequantizeLinear (per-channel with ``axis``) feeds the op.
- weights and biases are initializers (or Constant ops), read and written by name.

QDQ zero-point types: uint8 for ``[0, 255]`` grids, int8 for ``[-128, 127]`` and narrow
``[-127, 127]`` grids; 4-bit grids use int4/uint4 and 16-bit grids int16/uint16 (both need opset
21). Per-channel quantizers need opset 13. A model below the opset it needs is converted with
``onnx.version_converter``, or a ``QuantizationError`` names the opset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nncompress.errors import DatasetError, GraphError, QuantizationError
from nncompress.graph import Graph
from nncompress.onnx.graph_builder import (
    LARGE_MODEL_BYTES,
    ModelIndex,
    build_graph,
    constant_node_value,
    dtype_name,
    index_model,
    model_bytes,
    outer_inputs,
    tensor_infos,
)
from nncompress.onnx.model_io import inference_session
from nncompress.quantization.backend_api import StatisticRequest
from nncompress.quantization.feeding import (
    cast_input,
    describe_item,
    run_in_order,
    statistics_workers,
    threads_per_worker,
)
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, QuantizationPoint, TargetPoint, TargetType
from nncompress.quantization.statistics import ABS_MAX, MAX, MEAN, MIN, reduce_batch, reduction_axes

PLACEMENT_METADATA_KEY = "nncompress.placement"

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


# ---------------------------------------------------------------------------------------------
# integer types of QDQ
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _QType:
    onnx_type: int
    low: int
    high: int
    opset: int  # first opset where QuantizeLinear/DequantizeLinear take it

    @property
    def name(self) -> str:
        return onnx.TensorProto.DataType.Name(self.onnx_type).lower()


_QTYPES = tuple(
    _QType(getattr(onnx.TensorProto, name), low, high, opset)
    for name, low, high, opset in (
        ("UINT4", 0, 15, 21),
        ("INT4", -8, 7, 21),
        ("UINT8", 0, 255, 10),
        ("INT8", -128, 127, 10),
        ("UINT16", 0, 65535, 21),
        ("INT16", -32768, 32767, 21),
    )
    if hasattr(onnx.TensorProto, name)  # int4 arrived in onnx 1.16
)


def qdq_type(params: QuantizerParams, is_weight: bool, where: object = "") -> _QType:
    """The smallest QDQ integer type holding ``params``' grid.

    QuantizeLinear saturates to its type's full range, so an activation grid must be that range
    (or the narrow range, one level less). Weights are stored as integers already clipped to
    their grid, so any grid inside the type works (e.g. the 7-bit overflow-fix grid in int8).
    """
    qmin, qmax = int(params.quant_min), int(params.quant_max)
    for t in _QTYPES:
        if t.low <= qmin and qmax <= t.high:
            if is_weight or (qmax - qmin) >= (t.high - t.low) - 1:
                return t
            raise QuantizationError(
                f"{where}: ONNX QuantizeLinear saturates to the whole {t.name} range [{t.low}, {t.high}], so the "
                f"{params.levels}-level activation grid [{qmin}, {qmax}] cannot be expressed in QDQ; use 8-bit "
                "(or 4/16-bit) activations for ONNX models"
            )
    raise QuantizationError(f"{where}: no ONNX integer type holds the quantization grid [{qmin}, {qmax}]")


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise QuantizationError("The ONNX model imports no default-domain opset")


# ---------------------------------------------------------------------------------------------
# calibration inputs
# ---------------------------------------------------------------------------------------------
def model_inputs(model: onnx.ModelProto) -> list[tuple[str, np.dtype | None]]:
    """(name, numpy dtype) of the graph inputs a caller feeds (initializers excluded)."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = None
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            except Exception:
                dtype = None
        out.append((vi.name, dtype))
    return out


def make_feed(
    inputs: list[tuple[str, np.dtype | None]], item: Any, position: int = 0
) -> dict[str, np.ndarray]:
    """One calibration item -> ``{input name: array}``.

    An item is an array (the first input), a tuple/list (inputs in order) or a dict (by name);
    torch tensors are converted. Floats are cast to the input's float type, integers to its
    integer type; other mismatches are errors.
    """
    names = [n for n, _ in inputs]
    dtypes = dict(inputs)
    if isinstance(item, Mapping):
        unknown = [k for k in item if k not in dtypes]
        if unknown:
            raise DatasetError(
                f"Calibration item {position} names inputs {unknown} the ONNX model does not have; inputs: {names}"
            )
        pairs = list(item.items())
    elif isinstance(item, (tuple, list)):
        if len(item) > len(names):
            raise DatasetError(
                f"Calibration item {position} has {len(item)} values, the ONNX model takes {len(names)} inputs {names}"
            )
        pairs = list(zip(names, item))
    else:
        if not names:
            raise DatasetError("The ONNX model has no inputs to feed")
        pairs = [(names[0], item)]
    missing = [n for n in names if n not in dict(pairs)]
    if missing:
        raise DatasetError(f"Calibration item {position} gives no value for the ONNX model inputs {missing}")
    feed = {}
    for name, value in pairs:
        arr = cast_input(value, dtypes.get(name), position, f"'{name}'", "ONNX")
        feed[name] = arr
    return feed


# ---------------------------------------------------------------------------------------------
# target points -> tensors
# ---------------------------------------------------------------------------------------------
def _before_quantizer(idx: ModelIndex, tensor: str) -> str:
    """The tensor entering the QuantizeLinear of a Q -> DQ pair producing ``tensor`` (else itself)."""
    seen = 0
    while tensor in idx.producer and seen < 4:
        dq = idx.graph.node[idx.producer[tensor][0]]
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in idx.producer:
            break
        q = idx.graph.node[idx.producer[dq.input[0]][0]]
        if q.op_type != "QuantizeLinear":
            break
        tensor = q.input[0]
        seen += 1
    return tensor


def target_tensor(idx: ModelIndex, target: TargetPoint) -> str:
    """The tensor a statistic at ``target`` observes in the model of ``idx``."""
    ref = idx.ref(target.node)
    if target.type is TargetType.OUTPUT:
        if ref.kind == "node":
            outs = idx.graph.node[ref.index].output
            if target.port >= len(outs):
                raise GraphError(f"{target}: node '{target.node}' has {len(outs)} outputs")
            return outs[target.port]
        if ref.kind in ("input", "const"):
            return ref.tensor
        raise GraphError(f"{target}: a graph output has no output port")
    if ref.kind == "output":
        return _before_quantizer(idx, ref.tensor)
    if ref.kind != "node":
        raise GraphError(f"{target}: graph {ref.kind} '{target.node}' has no input port")
    ins = idx.graph.node[ref.index].input
    if target.port >= len(ins) or not ins[target.port]:
        raise GraphError(f"{target}: node '{target.node}' has no input {target.port}")
    t = ins[target.port]
    return t if target.type is TargetType.WEIGHT else _before_quantizer(idx, t)


def _dequantize(idx: ModelIndex, dq: onnx.NodeProto) -> np.ndarray:
    x = idx.constant_value(dq.input[0]).astype(np.float64)
    scale = idx.constant_value(dq.input[1])
    zp = idx.constant_value(dq.input[2]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = int(next((onnx.helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1))
    if np.ndim(scale) == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
    return ((x - zp) * scale.astype(np.float64)).astype(scale.dtype)


def _fold_weight_dequantize(model: onnx.ModelProto) -> None:
    """Replace every DequantizeLinear of constants (the int8 weights of a quantized model) by a
    float initializer with its value, in a statistics copy of ``model``. Reading a quantized
    model's intermediate tensors stops ONNX Runtime fusing DQ -> Conv -> Q; the Conv then gets
    its weight from a DQ node recomputed on every run, and a weight that is not a constant is
    not prepacked. The weights are the values the DQ node computes, exactly; the convolutions
    then run in float, where ONNX Runtime ran some of them through its int8 kernels before (a
    different rounding: output means moved by up to 1.7% on EfficientNet-Lite0, the SQNR of the
    quantized model went from 19.71 to 19.76 dB). Whole PTQ of EfficientNet-Lite0: 4.8 -> 4.5 s."""
    idx = index_model(model)
    folded = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not all(idx.is_constant(t) for t in node.input if t):
            continue
        if any(a.name == "block_size" for a in node.attribute):
            continue  # blocked (int4) scales: left to ONNX Runtime
        value = _dequantize(idx, node)
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)


def _outputs_only(model: onnx.ModelProto, outputs: list[str]) -> None:
    """Make ``outputs`` the graph outputs of a statistics copy and drop the nodes none of them
    depends on, and the initializers only those read: ONNX Runtime runs every node of a graph,
    whatever is fetched, so a pass that reads early tensors (a level of ``BiasCorrection``) ran
    the whole model (EfficientNet-Lite0: 5.9 ms per item to read its first convolution; 0.14 ms
    on the pruned graph). Graph inputs stay: every item feeds them all."""
    graph = model.graph
    declared = {o.name: o for o in graph.output}
    kept_outputs = [declared[t] if t in declared else onnx.ValueInfoProto(name=t) for t in outputs]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(_reads(node))
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(reversed(kept))
        # deleted in place: copying the kept ones would hold the weights twice (a model over 2 GB)
        for i in reversed([i for i, t in enumerate(graph.initializer) if t.name not in needed]):
            del graph.initializer[i]


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name ``node`` reads, with the outer-scope names its subgraphs (If, Loop,
    Scan bodies) may read (all names their nodes read: a superset, which keeps too much at worst)."""
    names = {t for t in node.input if t}
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            for inner in body.node:
                names |= _reads(inner)
    return names


# ---------------------------------------------------------------------------------------------
# statistics reduced inside the graph
# ---------------------------------------------------------------------------------------------
_IN_GRAPH_REDUCERS = {MIN: "ReduceMin", MAX: "ReduceMax", MEAN: "ReduceMean"}


@dataclass
class _Reductions:
    """What ``_add_reductions`` added: output tensor -> sinks, the (tensor, request) it serves,
    and abs-max sinks fed ``max(-min, max)`` of a ReduceMin and a ReduceMax output (no ``Abs``
    copy of the tensor: a symmetric quantizer asks for abs-max and min of the same tensor)."""

    sinks: dict[str, list[Callable[[np.ndarray], None]]]
    requests: set[tuple[str, StatisticRequest]]
    abs_max: list[tuple[str, str, Callable[[np.ndarray], None]]] = field(default_factory=list)

    def feed(self, values: Mapping[str, Any]) -> None:
        """Hand one item's reduced values to their sinks."""
        for out, out_sinks in self.sinks.items():
            value = np.asarray(values[out])
            for sink in out_sinks:
                sink(value)
        for lo, hi, sink in self.abs_max:
            sink(np.maximum(-np.asarray(values[lo]), np.asarray(values[hi])))


def _add_reductions(
    model: onnx.ModelProto,
    by_tensor: Mapping[str, list[tuple[StatisticRequest, Callable[[np.ndarray], None]]]],
    skip: set[str],
) -> _Reductions:
    """Append to ``model`` a Reduce node per distinct (tensor, reducer, axes) that
    ``statistics.reduce_batch`` would compute on a float32 tensor of known rank >= 1 (the same
    values; a mean accumulates in float32, ~1e-7 relative: a cast to float64 first made every
    item several times slower). Tensors in ``skip`` (inputs, constants) are left out."""
    done = _Reductions({}, set())
    candidates = {
        t: reqs
        for t, reqs in by_tensor.items()
        if t not in skip and any(r.reducer in _IN_GRAPH_REDUCERS or r.reducer == ABS_MAX for r, _ in reqs)
    }
    if not candidates:
        return done
    infos = tensor_infos(model)
    opset = default_opset(model)
    g = model.graph
    used = {t for n in g.node for t in (*n.input, *n.output)} | {t.name for t in g.initializer}
    used |= {v.name for v in (*g.input, *g.output)}
    made: dict[tuple[str, str, tuple[int, ...]], str] = {}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def reduce(t: str, reducer: str, axes: tuple[int, ...]) -> str:
        key_ = (t, reducer, axes)
        if key_ not in made:
            made[key_] = _reduce_node(g, t, reducer, axes, opset, fresh)
            done.sinks[made[key_]] = []
        return made[key_]

    for t, reqs in candidates.items():
        info = infos.get(t)
        if info is None or info.shape is None or info.dtype != "float32" or len(info.shape) == 0:
            continue
        rank = len(info.shape)
        for req, sink in reqs:
            if req.reducer not in _IN_GRAPH_REDUCERS and req.reducer != ABS_MAX:
                continue
            if req.keep_axis is not None and not -rank <= req.keep_axis < rank:
                continue  # numpy raises the error naming the axis
            axes = reduction_axes(rank, req.keep_axis)
            if req.reducer == ABS_MAX:
                done.abs_max.append((reduce(t, MIN, axes), reduce(t, MAX, axes), sink))
            else:
                done.sinks[reduce(t, req.reducer, axes)].append(sink)
            done.requests.add((t, req))
    return done


def _reduce_node(
    g: onnx.GraphProto,
    tensor: str,
    reducer: str,
    axes: tuple[int, ...],
    opset: int,
    fresh: Callable[[str], str],
) -> str:
    src = tensor
    out = fresh(f"{tensor}/nncompress_{reducer}")
    op = _IN_GRAPH_REDUCERS[reducer]
    if opset >= 18:  # axes became an input of every Reduce op in opset 18
        axes_name = fresh(f"{out}_axes")
        g.initializer.append(numpy_helper.from_array(np.asarray(axes, dtype=np.int64), axes_name))
        g.node.append(onnx.helper.make_node(op, [src, axes_name], [out], name=out, keepdims=0))
    else:
        g.node.append(onnx.helper.make_node(op, [src], [out], name=out, keepdims=0, axes=list(axes)))
    return out


# ---------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------
class Adapter:
    """ONNX backend for the core algorithms (graph, statistics, weights, QDQ insertion).

    ``upgrade_opset``: convert models below the opset the quantizers need (13 for per-channel,
    21 for 4/16-bit) with ``onnx.version_converter``; False raises instead. Models over
    ``large_model_bytes`` run from a temporary file with external data.
    """

    def __init__(
        self,
        upgrade_opset: bool = True,
        large_model_bytes: int | None = None,
        providers: list[str] | None = None,
        stat_requests_number: int | None = None,
    ) -> None:
        self.graph: Graph | None = None
        self.upgrade_opset = upgrade_opset
        self.large_model_bytes = LARGE_MODEL_BYTES if large_model_bytes is None else large_model_bytes
        self.providers = providers
        # calibration items run at once in a statistics pass (None: statistics_workers(), 2 on
        # two cores or more); each one holds its own activations, so 1 lowers peak memory
        self.stat_requests_number = stat_requests_number

    # -- graph --------------------------------------------------------------------------------
    def build_graph(self, model: onnx.ModelProto, example_input: Any = None) -> Graph:
        if not isinstance(model, onnx.ModelProto):
            raise GraphError(f"The ONNX backend takes an onnx.ModelProto, got {type(model).__name__}")
        if example_input is not None:
            make_feed(model_inputs(model), example_input)  # the structure must fit the inputs
        self.graph = build_graph(model, warn_unknown=False)  # quantize() names unknown ops
        return self.graph

    def _graph(self, model: onnx.ModelProto) -> Graph:
        if self.graph is None:
            self.graph = build_graph(model, warn_unknown=False)  # quantize() names unknown ops
        return self.graph

    # -- If branches ---------------------------------------------------------------------------
    def quantize_with_bodies(
        self,
        model: onnx.ModelProto,
        dataset: Any,
        quantize_graph: Callable[..., onnx.ModelProto],
        subset_size: int,
    ) -> onnx.ModelProto:
        """``quantize_graph`` on the main graph and on every ``If`` branch (see ``subgraphs``)."""
        from nncompress.onnx.subgraphs import has_if_bodies, quantize_with_if_bodies

        if not isinstance(model, onnx.ModelProto) or not has_if_bodies(model):
            return quantize_graph(model, dataset)
        return quantize_with_if_bodies(model, dataset, quantize_graph, subset_size)

    # -- statistics ---------------------------------------------------------------------------
    def collect_statistics(
        self,
        model: onnx.ModelProto,
        inputs: Iterable[Any],
        sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]],
    ) -> int:
        idx = index_model(model)
        by_tensor: dict[str, list[tuple[StatisticRequest, Callable[[np.ndarray], None]]]] = {}
        for request, sink in sinks.items():
            by_tensor.setdefault(target_tensor(idx, request.target), []).append((request, sink))
        feeds = model_inputs(model)
        feed_names = {n for n, _ in feeds}
        constants = {
            t: idx.constant_value(t) for t in by_tensor if t not in feed_names and idx.is_constant(t)
        }
        run_model = onnx.ModelProto()
        run_model.CopyFrom(model)
        _fold_weight_dequantize(run_model)
        # min, max, abs_max and mean of float32 tensors run in the graph (ONNX Runtime hands back
        # a value or a channel vector); the rest come out whole and are reduced in numpy
        reduced = _add_reductions(run_model, by_tensor, feed_names | set(constants))
        whole = {
            t: [(r, s) for r, s in reqs if (t, r) not in reduced.requests] for t, reqs in by_tensor.items()
        }
        whole = {t: reqs for t, reqs in whole.items() if reqs}
        fetch = [t for t in whole if t not in feed_names and t not in constants] + list(reduced.sinks)
        if fetch:
            _outputs_only(run_model, fetch)
        count = 0
        workers = self.stat_requests_number or statistics_workers()
        with inference_session(
            run_model, self.large_model_bytes, self.providers, threads_per_worker(workers)
        ) as session:
            del run_model

            def run(position: int, item: Any) -> tuple[dict, list]:
                feed = make_feed(feeds, item, position)
                try:
                    return feed, session.run(fetch, feed) if fetch else []
                except Exception as exc:
                    raise DatasetError(
                        f"ONNX Runtime failed on calibration item {position} ({describe_item(item)}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc

            for _, _, (feed, outs) in run_in_order(inputs, run, workers):
                values: dict[str, np.ndarray] = dict(zip(fetch, outs))
                reduced.feed(values)
                for t, reqs in whole.items():
                    x = values[t] if t in values else feed[t] if t in feed else constants[t]
                    x = np.asarray(x)
                    if x.dtype.kind != "f":
                        continue
                    for request, sink in reqs:
                        sink(reduce_batch(x, request.reducer, request.keep_axis, request.q))
                del values, outs
                count += 1
        return count

    # -- weights and biases -------------------------------------------------------------------
    def get_weight(self, model: onnx.ModelProto, node: str, port: int) -> np.ndarray:
        idx = index_model(model)
        t = idx.node(node).input[port] if port < len(idx.node(node).input) else ""
        if not t:
            raise GraphError(f"Node '{node}' has no input {port}")
        if idx.is_constant(t):
            value = idx.constant_value(t)
        elif t in idx.producer and idx.graph.node[idx.producer[t][0]].op_type == "DequantizeLinear":
            value = _dequantize(idx, idx.graph.node[idx.producer[t][0]])
        else:
            raise GraphError(f"Input {port} of node '{node}' is not a constant weight")
        return value if value.dtype.kind == "f" else value.astype(np.float32)

    def set_weight(self, model: onnx.ModelProto, node: str, port: int, value: np.ndarray) -> None:
        idx = index_model(model)
        t = idx.node(node).input[port]
        if not idx.is_constant(t):
            raise GraphError(
                f"Input {port} of node '{node}' is not a float constant weight (quantized already?)"
            )
        _set_constant(idx, t, value)

    def _bias(self, model: onnx.ModelProto, idx: ModelIndex, node: str) -> tuple[str | None, float]:
        name = self._graph(model).node(node).bias if node in self._graph(model) else None
        beta = 1.0
        ref = idx.names.get(node)
        if ref is not None and ref.kind == "node":
            onode = idx.graph.node[ref.index]
            if onode.op_type == "Gemm":
                beta = float(
                    next(
                        (onnx.helper.get_attribute_value(a) for a in onode.attribute if a.name == "beta"), 1.0
                    )
                )
        return name, beta

    def get_bias(self, model: onnx.ModelProto, node: str) -> np.ndarray | None:
        idx = index_model(model)
        name, beta = self._bias(model, idx, node)
        if name is None:
            return None
        if not idx.is_constant(name):
            raise GraphError(f"The bias '{name}' of node '{node}' is not a constant of this model")
        value = idx.constant_value(name)
        return value * value.dtype.type(beta) if beta != 1.0 else value

    def set_bias(self, model: onnx.ModelProto, node: str, value: np.ndarray) -> None:
        idx = index_model(model)
        name, beta = self._bias(model, idx, node)
        if name is None:
            raise GraphError(f"Node '{node}' has no bias to correct")
        value = np.asarray(value)
        _set_constant(idx, name, value / beta if beta != 1.0 else value)

    def copy_model(self, model: onnx.ModelProto) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out

    # -- SmoothQuant: scales folded into the producer's affine constants -------------------------
    def _affine_constants(
        self, idx: ModelIndex, source: tuple[str, int], consumers: Iterable[tuple[str, int]]
    ) -> tuple[list[str], str | None]:
        """Constants that scale the output of ``source`` when multiplied (or why there are none).

        A LayerNormalization (scale, bias), ``x * c`` or ``(x * g) + b`` with constants: the scale
        is folded into them, so the graph keeps its structure and the placement stays valid.
        """
        ref = idx.names.get(source[0])
        if ref is None or ref.kind != "node":
            return [], f"'{source[0]}' is not an op whose output can be rescaled"
        node = idx.graph.node[ref.index]
        tensor = node.output[source[1]]
        readers = {(idx.node_names[ci], port) for ci, port in idx.consumers.get(tensor, [])}
        if tensor in idx.outputs or readers != set(consumers):
            return [], f"'{source[0]}' also feeds ops outside the group; folding would change them"
        consts = [t for t in node.input if t and idx.is_constant(t)]
        if node.op_type == "LayerNormalization" and len(node.input) > 1 and idx.is_constant(node.input[1]):
            return [t for t in node.input[1:3] if t], None
        if node.op_type == "Mul" and len(consts) == 1:
            return consts, None
        if node.op_type == "Add" and len(consts) == 1:
            x = next(t for t in node.input if not idx.is_constant(t))
            mul = idx.graph.node[idx.producer[x][0]] if x in idx.producer else None
            gamma = (
                [t for t in mul.input if idx.is_constant(t)]
                if mul is not None and mul.op_type == "Mul"
                else []
            )
            if len(gamma) == 1 and len(idx.consumers.get(x, [])) == 1 and x not in idx.outputs:
                return [gamma[0], consts[0]], None
        return [], (
            f"producer '{source[0]}' ({node.op_type}) is not a LayerNormalization or a multiplication by a "
            "constant to fold the scale into"
        )

    def cannot_scale_activation(
        self, model: onnx.ModelProto, source: tuple[str, int], consumers: Iterable[tuple[str, int]]
    ) -> str | None:
        return self._affine_constants(index_model(model), source, consumers)[1]

    def scale_activation(
        self,
        model: onnx.ModelProto,
        source: tuple[str, int],
        consumers: Iterable[tuple[str, int]],
        scale: np.ndarray,
        axis: int,
    ) -> onnx.ModelProto:
        idx = index_model(model)
        names, reason = self._affine_constants(idx, source, consumers)
        if reason:
            raise GraphError(f"Cannot apply a SmoothQuant scale at {source[0]}: {reason}")
        s = np.asarray(scale, dtype=np.float64).ravel()
        for name in names:
            _set_constant(idx, name, _scaled(idx.constant_value(name), s), reshape=False)
        return model

    # -- quantizers ---------------------------------------------------------------------------
    def apply(
        self,
        model: onnx.ModelProto,
        placement: Placement,
        params: dict[TargetPoint, QuantizerParams],
        inplace: bool = False,
    ) -> onnx.ModelProto:
        """A new ModelProto (``model`` itself when ``inplace``) with QDQ pairs at every point."""
        out = model
        if not inplace:
            out = onnx.ModelProto()
            out.CopyFrom(model)
        missing = [p.target for p in placement.points if p.target not in params]
        if missing:
            raise GraphError(f"No quantizer parameters were computed for {missing[0]}")
        idx = index_model(out)
        for i, node in enumerate(out.graph.node):  # the names the graph uses, written down
            node.name = idx.node_names[i]
        qtypes = {p.target: qdq_type(params[p.target], p.is_weight, where=p.target) for p in placement.points}
        needed = max(
            [10]
            + [t.opset for t in qtypes.values()]
            + [13 for p in placement.points if params[p.target].per_channel]
        )
        self._ensure_opset(out, needed, placement)
        if any(t.opset >= 21 for t in qtypes.values()) and out.ir_version < 10:
            out.ir_version = 10  # int4 / int16 tensors need IR version 10
        _Inserter(out, placement, params, qtypes).run()
        _remember(out, placement)
        return out

    def _ensure_opset(self, model: onnx.ModelProto, needed: int, placement: Placement) -> None:
        current = default_opset(model)
        if current >= needed:
            return
        why = (
            "per-channel QuantizeLinear/DequantizeLinear need opset >= 13"
            if needed == 13
            else (f"the quantizers need opset >= {needed}")
        )
        if needed == 21:
            why = "4-bit and 16-bit QuantizeLinear/DequantizeLinear need opset >= 21"
        advice = f"re-export the model with opset_version >= {needed}" + (
            " or quantize weights per tensor" if needed == 13 else ""
        )
        if not self.upgrade_opset:
            raise QuantizationError(f"The ONNX model has opset {current}; {why}: {advice}")
        if model_bytes(model) > self.large_model_bytes:
            raise QuantizationError(
                f"The ONNX model has opset {current}; {why}, and a model this large cannot be converted in "
                f"memory: {advice}"
            )
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(model, needed)
        except Exception as exc:
            raise QuantizationError(
                f"The ONNX model has opset {current}; {why}, and converting it to opset {needed} failed "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}): {advice}"
            ) from exc
        names = {n.name for n in converted.graph.node} | {i.name for i in converted.graph.input}
        names |= {o.name for o in converted.graph.output} | {t.name for t in converted.graph.initializer}
        lost = sorted({p.target.node for p in placement.points} - names)
        if lost:
            raise QuantizationError(
                f"The ONNX model has opset {current}; {why}; converting it to opset {needed} replaced the "
                f"nodes {lost[:5]} the quantizers are placed on: {advice}"
            )
        model.CopyFrom(converted)


def _scaled(value: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A per-channel constant (channels last) times ``s``; a single value becomes a vector."""
    v = np.asarray(value)
    if v.size == s.size:
        return (v.astype(np.float64) * s.reshape(v.shape)).astype(v.dtype)
    if v.size == 1:
        return (v.astype(np.float64).reshape([1] * max(v.ndim - 1, 0) + [1]) * s).astype(v.dtype)
    raise GraphError(f"a constant of shape {v.shape} cannot take a scale of {s.size} channels")


def _set_constant(idx: ModelIndex, tensor: str, value: np.ndarray, reshape: bool = True) -> None:
    """Write ``value`` into an initializer or Constant op (in its dtype; its shape unless not ``reshape``)."""
    if tensor in idx.initializers:
        init = idx.initializers[tensor]
        old_dtype = dtype_name(init.data_type)
        value = np.asarray(value).astype(old_dtype)
        if reshape:
            value = value.reshape(tuple(int(d) for d in init.dims))
        init.CopyFrom(numpy_helper.from_array(value, tensor))
        return
    node = idx.graph.node[idx.constant_nodes[tensor]]
    old = constant_node_value(node)
    value = np.asarray(value).astype(old.dtype)
    new = numpy_helper.from_array(value.reshape(old.shape) if reshape else value, tensor)
    del node.attribute[:]
    node.attribute.append(onnx.helper.make_attribute("value", new))


def _remember(model: onnx.ModelProto, placement: Placement) -> None:
    """The placement (where quantizers went and why) as model metadata."""
    for prop in list(model.metadata_props):
        if prop.key == PLACEMENT_METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = PLACEMENT_METADATA_KEY
    entry.value = json.dumps(placement.to_dict())


def placement_of(model: onnx.ModelProto) -> dict | None:
    """The placement ``apply`` recorded in ``model`` (``Placement.to_dict()`` form), or None."""
    for prop in model.metadata_props:
        if prop.key == PLACEMENT_METADATA_KEY:
            return json.loads(prop.value)
    return None


class _Inserter:
    """Builds the QDQ model: nodes to put before / after each node, inputs to rewire."""

    def __init__(
        self,
        model: onnx.ModelProto,
        placement: Placement,
        params: dict[TargetPoint, QuantizerParams],
        qtypes: dict[TargetPoint, _QType],
    ) -> None:
        self.model = model
        self.placement = placement
        self.params = params
        self.qtypes = qtypes
        self.used: set[str] = set()
        g = model.graph
        for n in g.node:
            self.used.add(n.name)
            self.used.update(n.input)
            self.used.update(n.output)
        self.used.update(t.name for t in g.initializer)
        self.used.update(v.name for v in [*g.input, *g.output, *g.value_info])
        self.head: list[onnx.NodeProto] = []
        self.before: dict[int, list[onnx.NodeProto]] = {}
        self.after: dict[int, list[onnx.NodeProto]] = {}
        self.initializers: list[onnx.TensorProto] = []
        self.replaced_weights: set[str] = set()

    def unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def run(self) -> None:
        points = self.placement.points
        self.infos = tensor_infos(self.model)
        # graph outputs first: they rename tensors, which the other points then resolve through
        done: set[TargetPoint] = set()
        idx = index_model(self.model)
        for p in points:
            if p.is_weight or p.target.type is TargetType.WEIGHT:
                continue
            ref = idx.ref(p.target.node)
            if p.target.type is TargetType.INPUT and ref.kind == "output":
                self._graph_output(p, ref.tensor, consumers_read_quantized=False)
                done.add(p.target)
            elif p.target.type is TargetType.OUTPUT:
                tensor = target_tensor(idx, p.target)
                if tensor in idx.outputs:  # every reader, the graph output too, gets the quantized value
                    self._graph_output(p, tensor, consumers_read_quantized=True)
                    done.add(p.target)
        self.idx = index_model(self.model)
        for p in points:
            if p.target in done:
                continue
            ref = self.idx.ref(p.target.node)
            if p.is_weight or p.target.type is TargetType.WEIGHT:
                self._weight(p)
            elif p.target.type is TargetType.OUTPUT:
                self._output(p)
            elif ref.kind == "node":
                self._input(p, ref.index)
        self._assemble()

    # -- one QDQ pair ---------------------------------------------------------------------------
    def _float_type(self, tensor: str) -> np.dtype:
        info = self.infos.get(tensor)
        if info is not None and info.dtype in ("float16", "float64", "float32"):
            return np.dtype(info.dtype)
        return np.dtype(np.float32)

    def _scale_zp(self, p: QuantizationPoint, base: str, float_type: np.dtype) -> tuple[str, str, dict]:
        params, qt = self.params[p.target], self.qtypes[p.target]
        scale = np.asarray(params.scale, dtype=np.float64).astype(float_type)
        zp = np.rint(np.asarray(params.zero_point, dtype=np.float64)).astype(np.int64)
        scale_name, zp_name = self.unique(f"{base}_scale"), self.unique(f"{base}_zero_point")
        self.initializers.append(numpy_helper.from_array(scale, scale_name))
        self.initializers.append(_int_tensor(zp_name, zp, qt))
        attrs = {"axis": int(params.channel_axis)} if params.per_channel else {}
        return scale_name, zp_name, attrs

    def _qdq(
        self, p: QuantizationPoint, tensor: str, out: str | None = None, typed_as: str | None = None
    ) -> tuple[list[onnx.NodeProto], str]:
        base = f"{tensor}"
        scale, zp, attrs = self._scale_zp(p, base, self._float_type(typed_as or tensor))
        q_out = self.unique(f"{base}_quantized")
        dq_out = out or self.unique(f"{base}_dequantized")
        where = str(p.target)
        q = onnx.helper.make_node(
            "QuantizeLinear",
            [tensor, scale, zp],
            [q_out],
            name=self.unique(f"{where}/QuantizeLinear"),
            **attrs,
        )
        dq = onnx.helper.make_node(
            "DequantizeLinear",
            [q_out, scale, zp],
            [dq_out],
            name=self.unique(f"{where}/DequantizeLinear"),
            **attrs,
        )
        return [q, dq], dq_out

    def _place_after(self, tensor: str, nodes: list[onnx.NodeProto]) -> None:
        if tensor in self.idx.producer:
            self.after.setdefault(self.idx.producer[tensor][0], []).extend(nodes)
        else:
            self.head.extend(nodes)

    # -- the three kinds of points --------------------------------------------------------------
    def _output(self, p: QuantizationPoint) -> None:
        tensor = target_tensor(self.idx, p.target)
        nodes, dq_out = self._qdq(p, tensor)
        for ci, port in self.idx.consumers.get(tensor, []):
            self.model.graph.node[ci].input[port] = dq_out
        self._place_after(tensor, nodes)

    def _input(self, p: QuantizationPoint, node_index: int) -> None:
        node = self.model.graph.node[node_index]
        tensor = node.input[p.target.port]
        nodes, dq_out = self._qdq(p, tensor)
        node.input[p.target.port] = dq_out
        self.before.setdefault(node_index, []).extend(nodes)

    def _graph_output(self, p: QuantizationPoint, tensor: str, consumers_read_quantized: bool) -> None:
        """Quantize graph output ``tensor`` keeping its name: its producer writes a new tensor.

        The nodes that read ``tensor`` keep reading it (then quantized) for an ``OUTPUT`` point,
        or move to the float tensor for an ``INPUT`` point of the graph output alone.
        """
        idx = index_model(self.model)
        if tensor not in idx.producer:
            raise QuantizationError(
                f"{p.target}: graph output '{tensor}' is a graph input or constant; not quantized"
            )
        pre = self.unique(f"{tensor}_float")
        ni, port = idx.producer[tensor]
        self.model.graph.node[ni].output[port] = pre
        if not consumers_read_quantized:
            for ci, cport in idx.consumers.get(tensor, []):
                self.model.graph.node[ci].input[cport] = pre
        self.idx = idx
        nodes, _ = self._qdq(p, pre, out=tensor, typed_as=tensor)
        self.after.setdefault(ni, []).extend(nodes)

    def _weight(self, p: QuantizationPoint) -> None:
        node_index = self.idx.ref(p.target.node).index
        node = self.model.graph.node[node_index]
        tensor = node.input[p.target.port]
        if not self.idx.is_constant(tensor):
            raise QuantizationError(f"{p.target}: the weight '{tensor}' is not a constant of the model")
        w = self.idx.constant_value(tensor)
        if w.dtype.kind != "f":
            raise QuantizationError(f"{p.target}: the weight '{tensor}' is {w.dtype}, not float")
        params, qt = self.params[p.target], self.qtypes[p.target]
        scale, zp = np.asarray(params.scale, np.float64), np.asarray(params.zero_point, np.float64)
        if params.per_channel:
            shape = [1] * w.ndim
            shape[params.channel_axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        q = np.clip(np.rint(w.astype(np.float64) / scale) + zp, params.quant_min, params.quant_max).astype(
            np.int64
        )
        q_name = self.unique(f"{tensor}_quantized")
        self.initializers.append(_int_tensor(q_name, q, qt))
        scale_name, zp_name, attrs = self._scale_zp(p, tensor, w.dtype)
        dq_out = self.unique(f"{tensor}_dequantized")
        dq = onnx.helper.make_node(
            "DequantizeLinear",
            [q_name, scale_name, zp_name],
            [dq_out],
            name=self.unique(f"{p.target}/DequantizeLinear"),
            **attrs,
        )
        node.input[p.target.port] = dq_out
        self.before.setdefault(node_index, []).append(dq)
        self.replaced_weights.add(tensor)

    # -- the new graph ------------------------------------------------------------------------------
    def _assemble(self) -> None:
        g = self.model.graph
        nodes = list(self.head)
        for i, node in enumerate(g.node):
            nodes.extend(self.before.get(i, ()))
            nodes.append(node)
            nodes.extend(self.after.get(i, ()))
        still_read = {t for n in nodes for t in n.input} | {o.name for o in g.output}
        still_read |= {t for n in nodes if n.op_type in ("If", "Loop", "Scan") for t in outer_inputs(n)}
        dead = {t for t in self.replaced_weights if t not in still_read}
        nodes = [n for n in nodes if not (n.op_type == "Constant" and n.output and n.output[0] in dead)]
        kept = [t for t in g.initializer if t.name not in dead]
        del g.node[:]
        g.node.extend(nodes)
        del g.initializer[:]
        g.initializer.extend(kept + self.initializers)
        dead_inputs = [vi for vi in g.input if vi.name in dead]
        for vi in dead_inputs:
            g.input.remove(vi)


def _int_tensor(name: str, values: np.ndarray, qt: _QType) -> onnx.TensorProto:
    """An integer initializer of QDQ type ``qt`` (int4/uint4 are packed by onnx.helper)."""
    values = np.asarray(values)
    if qt.onnx_type in (getattr(onnx.TensorProto, "INT4", -1), getattr(onnx.TensorProto, "UINT4", -1)):
        return onnx.helper.make_tensor(
            name, qt.onnx_type, list(values.shape), values.astype(np.int64).ravel().tolist()
        )
    np_type = onnx.helper.tensor_dtype_to_np_dtype(qt.onnx_type)
    return numpy_helper.from_array(values.astype(np_type), name)
