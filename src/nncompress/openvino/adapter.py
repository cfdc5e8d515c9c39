"""The OpenVINO implementation of ``BackendAdapter``: FakeQuantize models that run in INT8.

- ``build_graph``: ``graph_builder.build_graph`` (names, weights, biases: see there).
- ``collect_statistics``: a clone of the model gets, per tensor asked for, ReduceMin / ReduceMax
  / ReduceMean ops with a ``Result`` for the min / max / abs-max / mean requests (f32 tensors of
  known rank; whole tensors copied out cost 2-3x per item) and a ``Result`` on the tensor for the
  rest (reduced with ``statistics.reduce_batch``); it is compiled for the CPU with
  ``INFERENCE_PRECISION_HINT=f32`` (the CPU would otherwise run float models in bf16) and one CPU
  stream per item in flight (``stat_requests_number``, default 2; ``feeding.run_in_order`` hands
  the items back in order), every value pushed to its sinks at once. In a model made by ``apply`` a
  statistic at a quantized tensor sees the tensor going *into* its FakeQuantize, and each
  inserted FakeQuantize runs as the float ops that define it: the CPU plugin's INT8 execution
  returns wrong values for some extra outputs inside INT8 regions (seen with OpenVINO 2026.4:
  bias correction then made the model worse).
- ``apply``: a clone (``model`` itself when ``inplace``) with

  * activations: ``FakeQuantize(x, input_low, input_high, output_low, output_high, levels)``
    with ``output_* = input_*`` (one value per tensor, or per channel shaped ``[1, C, 1, ...]``);
    ``OUTPUT`` points feed every reader of the tensor, ``INPUT`` points only that input; a
    quantized model output keeps its tensor names;
  * weights of 8 bits or fewer: stored compressed, ``Constant(i8 | u8) -> Convert(f32)
    [-> Subtract(zero point)] -> Multiply(scale)``, the decompression pattern the CPU plugin's
    low-precision transformations fold into INT8 convolutions and MatMuls (wider grids get a
    FakeQuantize on the float constant).

  Every inserted op carries the rt_info key ``nncompress`` and is named
  ``<op>/fq_{input|output|weights}_<port>``; the placement is kept in the model's rt_info
  (``placement_of``).
- weights and biases: the Constants behind weight ports (folded through decompression chains,
  GroupConvolution weights seen as ``[C_out, C_in / groups, k...]``) and the bias Constant of the
  Add after a Convolution/MatMul (``Node.bias``), replaced by a new Constant with the same name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from nncompress.definitions import NNCF_DATASET_RESET_STATE_KEY
from nncompress.errors import DatasetError, GraphError, QuantizationError
from nncompress.graph import Graph
from nncompress.openvino.graph_builder import (
    MARK,
    ModelIndex,
    build_graph,
    constant_value,
    dtype_name,
    fold,
    index_model,
    is_inserted,
    key,
    to_logical,
    to_physical,
)
from nncompress.quantization.backend_api import StatisticRequest
from nncompress.quantization.feeding import (
    cast_input,
    describe_item,
    max_in_flight,
    run_in_order,
    statistics_workers,
)
from nncompress.quantization.params import QuantizerParams
from nncompress.quantization.spec import Placement, QuantizationPoint, TargetPoint, TargetType
from nncompress.quantization.statistics import ABS_MAX, MAX, MEAN, MIN, RAW, reduce_batch, reduction_axes

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
PLACEMENT_RT_INFO = ["nncompress", "placement"]
_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def _np_type(t: ov.Type) -> np.dtype | None:
    try:
        return np.dtype(t.to_dtype())
    except Exception:
        return None


def make_feed(ports: list[ov.Output], item: Any, position: int = 0) -> dict[int, np.ndarray]:
    """One calibration item -> ``{input index: array}`` (array, tuple/list in order, or dict by name)."""
    names = [sorted(p.get_names())[0] if p.get_names() else f"input {i}" for i, p in enumerate(ports)]
    if isinstance(item, Mapping):
        pairs = []
        for k, v in item.items():
            hits = [i for i, p in enumerate(ports) if k in p.get_names()]
            if not hits:
                raise DatasetError(
                    f"Calibration item {position} names input '{k}' the OpenVINO model does not have; inputs: {names}"
                )
            pairs.append((hits[0], v))
    elif isinstance(item, (tuple, list)):
        if len(item) > len(ports):
            raise DatasetError(
                f"Calibration item {position} has {len(item)} values, the OpenVINO model takes {len(ports)} inputs {names}"
            )
        pairs = list(enumerate(item))
    else:
        pairs = [(0, item)]
    missing = [names[i] for i in range(len(ports)) if i not in dict(pairs)]
    if missing:
        raise DatasetError(
            f"Calibration item {position} gives no value for the OpenVINO model inputs {missing}"
        )
    feed = {}
    for i, value in pairs:
        arr = cast_input(value, _np_type(ports[i].get_element_type()), position, names[i], "OpenVINO")
        feed[i] = arr
    return feed


def infer_item(
    request: ov.InferRequest,
    ports: list[ov.Output],
    item: Any,
    position: int,
    stateful: bool,
    during: str = "",
) -> None:
    """Run calibration item ``position`` on ``request``.

    A stateful model (ReadValue/Assign) starts every item from its initial state, as in NNCF,
    unless a dict item has NNCF's key ``nncf_reset_state``: True resets the state before the
    item, False carries the previous item's state on (a sequence cut into items)."""
    reset = stateful
    if isinstance(item, Mapping) and NNCF_DATASET_RESET_STATE_KEY in item:
        reset = bool(item[NNCF_DATASET_RESET_STATE_KEY])
        item = {k: v for k, v in item.items() if k != NNCF_DATASET_RESET_STATE_KEY}
        if reset and not stateful:
            raise DatasetError(
                f"Calibration item {position} sets {NNCF_DATASET_RESET_STATE_KEY}=True, "
                "but the OpenVINO model has no state (no ReadValue/Assign)"
            )
    feed = make_feed(ports, item, position)
    try:
        if reset:
            request.reset_state()
        request.infer(feed)
    except Exception as exc:
        raise DatasetError(
            f"OpenVINO failed on calibration item {position}{during} ({describe_item(item)}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def is_stateful(model: ov.Model) -> bool:
    return len(model.get_sinks()) > 0


def _before_quantizer(out: ov.Output) -> ov.Output:
    """The tensor entering an inserted FakeQuantize that produces ``out`` (else ``out``)."""
    while is_inserted(out.get_node()) and out.get_node().get_type_name() == "FakeQuantize":
        out = out.get_node().input(0).get_source_output()
    return out


def target_output(idx: ModelIndex, target: TargetPoint) -> ov.Output:
    """The tensor a statistic at ``target`` observes in the model of ``idx``."""
    op = idx.op(target.node)
    if target.type is TargetType.OUTPUT:
        if target.port >= op.get_output_size():
            raise GraphError(f"{target}: op '{target.node}' has {op.get_output_size()} outputs")
        return op.output(target.port)
    if target.port >= op.get_input_size():
        raise GraphError(f"{target}: op '{target.node}' has {op.get_input_size()} inputs")
    src = op.input(target.port).get_source_output()
    return src if target.type is TargetType.WEIGHT else _before_quantizer(src)


def _mark(*nodes: ov.Node, role: str) -> None:
    for n in nodes:
        n.get_rt_info()[MARK] = role


class Adapter:
    """OpenVINO backend for the core algorithms (graph, statistics, weights, FakeQuantize).

    ``device`` and ``config`` are what statistics are collected with (default: CPU in f32).
    """

    def __init__(
        self,
        device: str = "CPU",
        config: Mapping[str, Any] | None = None,
        stat_requests_number: int | None = None,
    ) -> None:
        self.graph: Graph | None = None
        self.device = device
        self.config = {**F32_CONFIG, **dict(config or {})}
        # calibration items run at once in a statistics pass, one CPU stream each (None:
        # statistics_workers(), 2 on two cores or more); each holds its own activations
        self.stat_requests_number = stat_requests_number

    # -- graph --------------------------------------------------------------------------------
    def build_graph(self, model: ov.Model, example_input: Any = None) -> Graph:
        if not isinstance(model, ov.Model):
            raise GraphError(f"The OpenVINO backend takes an openvino.Model, got {type(model).__name__}")
        if example_input is not None:
            make_feed(list(model.inputs), example_input)
        self.graph = build_graph(model, warn_unknown=False)  # quantize() names unknown ops
        return self.graph

    def _graph(self, model: ov.Model) -> Graph:
        if self.graph is None:
            self.graph = build_graph(model, warn_unknown=False)  # quantize() names unknown ops
        return self.graph

    # -- If bodies -----------------------------------------------------------------------------
    def quantize_with_bodies(
        self,
        model: ov.Model,
        dataset: Any,
        quantize_graph: Callable[..., ov.Model],
        subset_size: int,
    ) -> ov.Model:
        """``quantize_graph`` on the model and on every ``If`` body (see ``subgraphs``)."""
        from nncompress.openvino.subgraphs import has_if_bodies, quantize_with_if_bodies

        if not isinstance(model, ov.Model) or not has_if_bodies(model):
            return quantize_graph(model, dataset)
        return quantize_with_if_bodies(model, dataset, quantize_graph, subset_size)

    # -- statistics ---------------------------------------------------------------------------
    def collect_statistics(
        self,
        model: ov.Model,
        inputs: Iterable[Any],
        sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]],
    ) -> int:
        return self.prepare_statistics(model, sinks)(inputs)

    def prepare_statistics(
        self, model: ov.Model, sinks: Mapping[StatisticRequest, Callable[[np.ndarray], None]]
    ) -> Callable[[Iterable[Any]], int]:
        """``collect_statistics`` in two steps: the statistics model is built now and compiled in
        a thread; the returned function runs the items (waiting for the compilation first).

        ``StatisticsCollector.collect`` prepares its two passes at once, so the second model
        compiles while the first does (a compilation keeps about one core busy: EfficientNet-
        Lite0, two statistics models, 0.58 s one after the other, 0.44 s side by side)."""
        run_model = model.clone()
        idx = index_model(run_model)
        tensors: dict[tuple[int, int], tuple[ov.Output, list]] = {}
        for request, sink in sinks.items():
            out = target_output(idx, request.target)
            entry = tensors.setdefault((key(out.get_node()), out.get_index()), (out, []))
            entry[1].append((request, sink))
        wanted = [
            (out, reqs)
            for out, reqs in tensors.values()
            if dtype_name(out.get_element_type()).startswith(("float", "bfloat"))
        ]
        # the CPU plugin runs FakeQuantize in INT8 (low-precision transformations), and then gives
        # wrong values for some extra outputs inside INT8 regions: statistics runs use the exact
        # float form of each inserted FakeQuantize instead (the values FakeQuantize defines)
        # and its int8 weights as the f32 constants they stand for (see _fold_inserted_weight)
        for op in run_model.get_ordered_ops():
            if op.get_type_name() == "FakeQuantize" and is_inserted(op):
                _decompose_fake_quantize(op)
            elif op.get_type_name() == "Multiply" and _role(op) == "weight_quantizer":
                _fold_inserted_weight(op)
        first = len(run_model.outputs)
        # small reductions (min, max, abs_max, mean) run in the graph: the CPU plugin then hands
        # back a value or a channel vector instead of the whole tensor; the rest come out whole
        reductions: list[tuple[ov.Node, list]] = []  # (reduction op, its sinks)
        wholes: list[tuple[ov.Output, list]] = []  # (tensor, its (request, sink) pairs)
        for out, reqs in wanted:
            whole, reduced = [], {}
            for req, sink in reqs:
                axes = _in_graph_axes(out, req)
                if axes is None:
                    whole.append((req, sink))
                else:
                    reduced.setdefault((req.reducer, axes), []).append(sink)
            made: dict[tuple[str, tuple[int, ...]], ov.Node] = {}
            for (reducer, axes), sinks_ in reduced.items():
                reductions.append((_reduce(out, reducer, axes, made), sinks_))
            if whole:
                wholes.append((out, whole))
        packed, slices, alone = _pack(reductions)
        results = (
            ([ops.result(packed)] if packed is not None else [])
            + [ops.result(node) for node, _ in alone]
            + [ops.result(out) for out, _ in wholes]
        )
        for i, r in enumerate(results):
            r.set_friendly_name(f"nncompress_statistic_{i}")
        stateful = is_stateful(run_model)
        if results and not stateful:
            # the statistics alone: the ops no statistic depends on are not run (a level of
            # BiasCorrection reads the first layers only); a stateful model keeps its Assigns
            run_model = ov.Model(results, run_model.get_parameters(), run_model.get_friendly_name())
            first = 0
        elif results:
            run_model.add_results(results)
        workers = self.stat_requests_number or statistics_workers()
        if stateful or _has_integer_weights(run_model):
            # a state lives in one request and items may carry it on; the user's own compressed
            # weights run on one stream (see _fold_inserted_weight)
            workers = 1
        config = dict(self.config)
        if workers > 1 and self.device == "CPU":
            config.setdefault("NUM_STREAMS", workers)
        pool = ThreadPoolExecutor(1, thread_name_prefix="nncompress-compile")
        # a list, emptied by run_items: the compiled model is freed when its pass ends
        compiling = [pool.submit(core().compile_model, run_model, self.device, config)]
        pool.shutdown(wait=False)  # the thread ends with the compilation
        del run_model
        n_results = len(results)

        def run_items(inputs: Iterable[Any]) -> int:
            if not compiling:
                raise RuntimeError("a prepared statistics pass runs once")
            compiled = compiling.pop().result()
            if len(compiled.outputs) != first + n_results:
                raise GraphError("OpenVINO dropped statistic outputs while compiling the model")
            # one request per in-flight item: item i's outputs are read before item
            # i + max_in_flight(workers) reuses its request (run_in_order); one item at a time
            # uses one request, which keeps the state of a stateful model from item to item
            in_flight = max_in_flight(workers) if workers > 1 else 1
            requests = [compiled.create_infer_request() for _ in range(in_flight)]
            ports = list(compiled.inputs)

            def run(position: int, item: Any) -> ov.InferRequest:
                request = requests[position % len(requests)]
                infer_item(request, ports, item, position, stateful)
                return request

            return _fetch(run_in_order(inputs, run, workers), first, packed, slices, alone, wholes)

        return run_items

    # -- weights and biases -------------------------------------------------------------------
    def get_weight(self, model: ov.Model, node: str, port: int) -> np.ndarray:
        op = index_model(model).op(node)
        if port >= op.get_input_size():
            raise GraphError(f"Op '{node}' has no input {port}")
        value = to_logical(op, fold(op.input(port).get_source_output()))
        return value if value.dtype.kind == "f" else value.astype(np.float32)

    def set_weight(self, model: ov.Model, node: str, port: int, value: np.ndarray) -> None:
        op = index_model(model).op(node)
        src = op.input(port).get_source_output()
        phys = to_physical(op, port, np.asarray(value))
        new = ops.constant(phys.astype(np.float32), dtype=src.get_element_type())
        new.set_friendly_name(src.get_node().get_friendly_name())
        op.input(port).replace_source_output(new.output(0))

    def _bias_op(self, model: ov.Model, node: str) -> ov.Node | None:
        graph = self._graph(model)
        name = graph.node(node).bias if node in graph else None
        return None if name is None else index_model(model).op(name)

    def get_bias(self, model: ov.Model, node: str) -> np.ndarray | None:
        op = self._bias_op(model, node)
        return None if op is None else constant_value(op)

    def set_bias(self, model: ov.Model, node: str, value: np.ndarray) -> None:
        old = self._bias_op(model, node)
        if old is None:
            raise GraphError(f"Op '{node}' has no bias to correct")
        shape = tuple(old.get_output_shape(0))
        new = ops.constant(
            np.asarray(value, dtype=np.float32).reshape(shape), dtype=old.get_output_element_type(0)
        )
        new.set_friendly_name(old.get_friendly_name())
        for target in list(old.output(0).get_target_inputs()):
            target.replace_source_output(new.output(0))

    def copy_model(self, model: ov.Model) -> ov.Model:
        return model.clone()

    # -- SmoothQuant: scales folded into the producer's constants --------------------------------
    def _affine_constants(
        self, idx: ModelIndex, source: tuple[str, int], consumers: Iterable[tuple[str, int]]
    ) -> tuple[list[ov.Node], str | None]:
        """Constants that scale the output of ``source`` when multiplied (or why there are none):
        ``x * c`` (LayerNorm's gamma after MVN) or ``(x * g) + b`` with constants."""
        op = idx.op(source[0])
        out = op.output(source[1])
        readers = set()
        for t in out.get_target_inputs():
            node = t.get_node()
            readers.add((idx.names.get(key(node), "?"), t.get_index()))
        if readers != set(consumers):
            return [], f"'{source[0]}' also feeds ops outside the group; folding would change them"

        def constant_input(node: ov.Node) -> tuple[ov.Node | None, ov.Output | None]:
            found = [(_through_convert(i.get_source_output().get_node()), i) for i in node.inputs()]
            consts = [n for n, _ in found if n.get_type_name() == "Constant"]
            others = [i.get_source_output() for n, i in found if n.get_type_name() != "Constant"]
            if len(consts) == 1 and len(others) == 1:
                return consts[0], others[0]
            return None, None

        t = op.get_type_name()
        const, x = constant_input(op) if t in ("Multiply", "Add") else (None, None)
        if t == "Multiply" and const is not None:
            return [const], None
        if t == "Add" and const is not None:
            mul = x.get_node()
            gamma, _ = constant_input(mul) if mul.get_type_name() == "Multiply" else (None, None)
            if gamma is not None and len(x.get_target_inputs()) == 1:
                return [gamma, const], None
        return (
            [],
            f"producer '{source[0]}' ({t}) is not a multiplication by a constant to fold the scale into",
        )

    def cannot_scale_activation(
        self, model: ov.Model, source: tuple[str, int], consumers: Iterable[tuple[str, int]]
    ) -> str | None:
        return self._affine_constants(index_model(model), source, consumers)[1]

    def scale_activation(
        self,
        model: ov.Model,
        source: tuple[str, int],
        consumers: Iterable[tuple[str, int]],
        scale: np.ndarray,
        axis: int,
    ) -> ov.Model:
        consts, reason = self._affine_constants(index_model(model), source, consumers)
        if reason:
            raise GraphError(f"Cannot apply a SmoothQuant scale at {source[0]}: {reason}")
        s = np.asarray(scale, dtype=np.float64).ravel()
        for old in consts:
            value = constant_value(old).astype(np.float64)
            if value.size == s.size:
                value = value * s.reshape(value.shape)
            elif value.size == 1:
                value = value.reshape([1] * max(value.ndim - 1, 0) + [1]) * s
            else:
                raise GraphError(
                    f"constant '{old.get_friendly_name()}' of shape {value.shape} cannot take {s.size} scales"
                )
            new = ops.constant(value.astype(np.float32), dtype=old.get_output_element_type(0))
            new.set_friendly_name(old.get_friendly_name())
            for target in list(old.output(0).get_target_inputs()):
                target.replace_source_output(new.output(0))
        model.validate_nodes_and_infer_types()
        return model

    # -- quantizers ---------------------------------------------------------------------------
    def apply(
        self,
        model: ov.Model,
        placement: Placement,
        params: dict[TargetPoint, QuantizerParams],
        inplace: bool = False,
    ) -> ov.Model:
        """A clone of ``model`` (``model`` itself when ``inplace``) with the quantizers inserted."""
        missing = [p.target for p in placement.points if p.target not in params]
        if missing:
            raise GraphError(f"No quantizer parameters were computed for {missing[0]}")
        out = model if inplace else model.clone()
        idx = index_model(out)
        for p in placement.points:
            idx.op(p.target.node)  # every target exists before anything changes
        for p in placement.points:
            op = idx.op(p.target.node)
            if p.is_weight or p.target.type is TargetType.WEIGHT:
                _insert_weight(op, p, params[p.target])
            elif p.target.type is TargetType.OUTPUT:
                src = op.output(p.target.port)
                readers = [t for t in src.get_target_inputs() if not is_inserted(t.get_node())]
                fq = _fake_quantize(src, params[p.target], f"{p.target.node}/fq_output_{p.target.port}")
                for t in readers:
                    t.replace_source_output(fq.output(0))
                _keep_output_names(src, fq, readers)
            else:
                inp = op.input(p.target.port)
                src = inp.get_source_output()
                fq = _fake_quantize(src, params[p.target], f"{p.target.node}/fq_input_{p.target.port}")
                inp.replace_source_output(fq.output(0))
                _keep_output_names(src, fq, [inp])
        out.validate_nodes_and_infer_types()
        out.set_rt_info(json.dumps(placement.to_dict()), PLACEMENT_RT_INFO)
        return out


def placement_of(model: ov.Model) -> dict | None:
    """The placement ``apply`` recorded in ``model`` (``Placement.to_dict()`` form), or None."""
    if not model.has_rt_info(PLACEMENT_RT_INFO):
        return None
    return json.loads(model.get_rt_info(PLACEMENT_RT_INFO).astype(str))


def _through_convert(node: ov.Node) -> ov.Node:
    """The Constant behind a decompression ``Convert`` (FP16 models), else ``node``."""
    if node.get_type_name() == "Convert":
        src = node.input(0).get_source_output().get_node()
        if src.get_type_name() == "Constant" and len(node.output(0).get_target_inputs()) == 1:
            return src
    return node


_IN_GRAPH_REDUCERS = frozenset({MIN, MAX, ABS_MAX, MEAN})


def _in_graph_axes(out: ov.Output, req: StatisticRequest) -> tuple[int, ...] | None:
    """The axes to reduce ``out`` over in the graph for ``req``, or None to reduce in numpy
    (quantiles, raw tensors, non-f32 tensors, unknown or zero rank)."""
    if req.reducer not in _IN_GRAPH_REDUCERS or out.get_element_type() != ov.Type.f32:
        return None
    rank = out.get_partial_shape().rank
    if not rank.is_static or rank.get_length() == 0:
        return None
    n = rank.get_length()
    if req.keep_axis is not None and not -n <= req.keep_axis < n:
        return None  # numpy raises the error naming the axis
    return reduction_axes(n, req.keep_axis)


def _reduce(
    out: ov.Output, reducer: str, axes: tuple[int, ...], made: dict[tuple[str, tuple[int, ...]], ov.Node]
) -> ov.Node:
    """``statistics.reduce_batch`` as OpenVINO ops (same values; the mean accumulates in f32).

    Abs-max is ``max(-min, max)`` of a ReduceMin and a ReduceMax, shared with a min request on
    the same tensor and axes (``made``): no Abs copy of the tensor (0.8 of 11.9 ms per item,
    EfficientNet-Lite0 statistics, CPU plugin profile)."""
    key_ = (reducer, axes)
    if key_ in made:
        return made[key_]
    ax = ops.constant(np.asarray(axes, dtype=np.int64))
    if reducer == MIN:
        node = ops.reduce_min(out, ax, False)
    elif reducer == MAX:
        node = ops.reduce_max(out, ax, False)
    elif reducer == ABS_MAX:
        node = ops.maximum(ops.negative(_reduce(out, MIN, axes, made)), _reduce(out, MAX, axes, made))
    else:
        node = ops.reduce_mean(out, ax, False)
    made[key_] = node
    return node


def _role(op: ov.Node) -> str | None:
    info = op.get_rt_info()
    return info[MARK].astype(str) if MARK in info else None


def _fold_inserted_weight(mul: ov.Node) -> None:
    """Replace an inserted weight decompression chain, ending in ``mul``, by its f32 value.

    With int8 weight decompression compiled into two CPU streams, the CPU plugin (OpenVINO
    2026.4) now and then gave wrong outputs for every item of a statistics pass when the
    machine was loaded (a test ConvNet: its pointwise convolution off by up to 89, in 2-3 of 4
    quantizations); with f32 constants the results matched one-stream runs in 10 of 10."""
    value = ops.constant(fold(mul.output(0)).astype(np.float32))
    for target in list(mul.output(0).get_target_inputs()):
        target.replace_source_output(value.output(0))


_INTEGER_TYPES = frozenset({"i8", "u8", "i4", "u4", "nf4", "u1"})


def _has_integer_weights(model: ov.Model) -> bool:
    """Whether ``model`` still decompresses integer constants (compressed weights of its own)."""
    return any(
        op.get_type_name() == "Constant"
        and op.get_output_element_type(0).get_type_name() in _INTEGER_TYPES
        and any(t.get_node().get_type_name() == "Convert" for t in op.output(0).get_target_inputs())
        for op in model.get_ordered_ops()
    )


def _fetch(
    done: Iterable[tuple[int, Any, ov.InferRequest]],
    first: int,
    packed: ov.Node | None,
    slices: list,
    alone: list,
    wholes: list,
) -> int:
    """Hand every statistic of every finished item to its sinks; the number of items."""
    count = 0
    for _, _, request in done:
        at = first
        if packed is not None:
            flat = np.array(request.get_output_tensor(at).data, copy=True)
            at += 1
            for start, stop, shape, targets in slices:
                value = flat[start:stop].reshape(shape)
                for sink in targets:
                    sink(value)
        for _, targets in alone:
            value = np.array(request.get_output_tensor(at).data, copy=True)
            at += 1
            for sink in targets:
                sink(value)
        for _, targets in wholes:
            x = request.get_output_tensor(at).data
            at += 1
            for req, sink in targets:
                value = reduce_batch(x, req.reducer, req.keep_axis, req.q)
                sink(np.array(value, copy=True) if req.reducer == RAW else value)
        count += 1
    return count


def _pack(
    reductions: list[tuple[ov.Node, list]],
) -> tuple[ov.Node | None, list[tuple[int, int, tuple[int, ...], list]], list[tuple[ov.Node, list]]]:
    """One f32 vector of every reduction of static shape, and where each one lies in it: one
    output per item instead of hundreds (EfficientNet-Lite0: 213), whose fetching and copying
    took about a quarter of the Python time of a statistics pass (cProfile, 0.18 of 0.75 s).

    Returns ``(concat or None, [(start, stop, shape, sinks)], [(reduction, sinks)])``, the last
    list for reductions of dynamic shape, which stay outputs of their own."""
    parts, slices, alone, offset = [], [], [], 0
    for node, sinks in reductions:
        shape = node.get_output_partial_shape(0)
        if not shape.is_static or node.get_output_element_type(0) != ov.Type.f32:
            alone.append((node, sinks))
            continue
        dims = tuple(int(d) for d in shape.to_shape())
        size = int(np.prod(dims))
        parts.append(ops.reshape(node, ops.constant(np.array([-1], np.int64)), False))
        slices.append((offset, offset + size, dims, sinks))
        offset += size
    if not parts:
        return None, [], alone
    return (parts[0] if len(parts) == 1 else ops.concat(parts, 0)), slices, alone


def _decompose_fake_quantize(fq: ov.Node) -> None:
    """Replace ``fq`` by the float ops computing the same values (no INT8 execution)."""
    x = fq.input(0).get_source_output()
    il, ih, ol, oh = (fold(fq.input(i).get_source_output()).astype(np.float64) for i in range(1, 5))
    steps = float(int(fq.get_attributes()["levels"]) - 1)
    width = ih - il
    scale_in = np.where(width > 0, steps / np.where(width > 0, width, 1.0), 0.0)
    t = x.get_element_type()

    def const(v: np.ndarray) -> ov.Output:
        return _const(v, t, "").output(0)

    clamped = ops.minimum(ops.maximum(x, const(il)), const(ih))
    q = ops.round(ops.multiply(ops.subtract(clamped, const(il)), const(scale_in)), "half_to_even")
    y = ops.add(ops.multiply(q, const((oh - ol) / steps)), const(ol))
    for target in list(fq.output(0).get_target_inputs()):
        target.replace_source_output(y.output(0))


def _keep_output_names(src: ov.Output, fq: ov.Node, readers: list) -> None:
    """A model output now read through ``fq`` keeps the tensor names users call it by."""
    if any(t.get_node().get_type_name() == "Result" for t in readers) and src.get_names():
        names = set(src.get_names())
        src.set_names(set())
        fq.output(0).set_names(names)


def _const(value: np.ndarray, t: ov.Type, name: str) -> ov.Node:
    c = ops.constant(np.asarray(value, dtype=np.float32), dtype=t)
    c.set_friendly_name(name)
    return c


def _channel_shape(params: QuantizerParams, rank: int) -> list[int]:
    shape = [1] * rank
    shape[params.channel_axis % rank] = -1
    return shape


def _fake_quantize(src: ov.Output, params: QuantizerParams, name: str) -> ov.Node:
    t = src.get_element_type()
    lo, hi = np.asarray(params.input_low, np.float64), np.asarray(params.input_high, np.float64)
    if params.per_channel:
        rank = src.get_partial_shape().rank
        if not rank.is_static:
            raise QuantizationError(f"{name}: a per-channel quantizer needs a tensor of known rank")
        shape = _channel_shape(params, rank.get_length())
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    consts = [
        _const(v, t, f"{name}/{what}")
        for v, what in ((lo, "input_low"), (hi, "input_high"), (lo, "output_low"), (hi, "output_high"))
    ]
    fq = ops.fake_quantize(src, *consts, int(params.levels))
    fq.set_friendly_name(name)
    _mark(fq, *consts, role="activation_quantizer")
    return fq


def _insert_weight(op: ov.Node, point: QuantizationPoint, params: QuantizerParams) -> None:
    port = point.target.port
    name = f"{point.target.node}/fq_weights_{port}"
    src = op.input(port).get_source_output()
    float_type = src.get_element_type()
    logical = to_logical(op, fold(src)).astype(np.float64)
    scale = np.asarray(params.scale, np.float64)
    zp = np.rint(np.asarray(params.zero_point, np.float64))
    if params.per_channel:
        shape = _channel_shape(params, logical.ndim)
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:
        scale, zp = scale.reshape([1] * logical.ndim), zp.reshape([1] * logical.ndim)
    qmin, qmax = int(params.quant_min), int(params.quant_max)
    if qmin >= -128 and qmax <= 127:
        int_type = np.int8
    elif qmin >= 0 and qmax <= 255:
        int_type = np.uint8
    else:  # wider grids: a FakeQuantize on the float constant
        fq = _fake_quantize(src, _physical_params(op, params, logical.ndim), name)
        op.input(port).replace_source_output(fq.output(0))
        return
    q = np.clip(np.rint(logical / scale) + zp, qmin, qmax)
    q_const = ops.constant(to_physical(op, port, q.astype(int_type)))
    q_const.set_friendly_name(f"{name}/{np.dtype(int_type).name}")
    convert = ops.convert(q_const, float_type)
    convert.set_friendly_name(f"{name}/convert")
    nodes = [q_const, convert]
    x = convert
    if np.any(zp != 0):
        zp_const = _const(_physical_factor(op, port, zp), float_type, f"{name}/zero_point")
        x = ops.subtract(convert, zp_const)
        x.set_friendly_name(f"{name}/subtract")
        nodes += [zp_const, x]
    scale_const = _const(_physical_factor(op, port, scale), float_type, f"{name}/scale")
    mul = ops.multiply(x, scale_const)
    mul.set_friendly_name(name)
    nodes += [scale_const, mul]
    _mark(*nodes, role="weight_quantizer")
    op.input(port).replace_source_output(mul.output(0))


def _physical_factor(op: ov.Node, port: int, factor: np.ndarray) -> np.ndarray:
    """A per-channel factor of the logical weight layout, shaped for the stored layout."""
    if op.get_type_name() != "GroupConvolution":
        return factor
    phys = tuple(op.input(port).get_source_output().get_shape())
    if factor.size == 1:
        return factor.reshape([1] * len(phys))
    return factor.reshape((phys[0], phys[1], *([1] * (len(phys) - 2))))


def _physical_params(op: ov.Node, params: QuantizerParams, logical_rank: int) -> QuantizerParams:
    """Params for a FakeQuantize on a GroupConvolution's stored weight (per-channel over 2 axes)."""
    if op.get_type_name() != "GroupConvolution" or not params.per_channel:
        return params
    raise QuantizationError(
        f"{op.get_friendly_name()}: per-channel {params.levels}-level weights of a GroupConvolution need an 8-bit grid"
    )
