"""Quantization of the branches of ONNX ``If`` ops, each as a model of its own.

Exporters put whole networks inside ``If`` branches (silero-vad's ONNX files pick a 16 kHz or an
8 kHz network by the sample-rate input). Like NNCF's ONNX backend we quantize the main graph,
then every branch of every ``If`` of it:

1. the float parent model runs on the calibration items with the ``If`` condition and the outer
   tensors the branches read as extra outputs; each item goes to the branch its condition picks;
2. a branch becomes a standalone model: outer tensors it reads become graph inputs, outer
   constants (weights defined outside the branch) are copied in as initializers;
3. that model is quantized by the same pipeline (recursively: ``If`` ops inside a branch too),
   with the items of step 1 as its calibration data;
4. the quantized graph goes back into the ``If`` (added inputs and unchanged copied constants
   removed, new tensor names made unique in the whole model).

A branch no calibration item takes stays in float and is named in one ``NNCompressWarning`` (a
branch with no quantizable op, such as an Identity, is left as it is, silently). Ignored-scope
entries are matched in every graph; for such models one that matches no node is not reported.
``Loop`` and ``Scan`` bodies are not quantized (the graph builder warns).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nncompress.data import Dataset
from nncompress.errors import DatasetError, NNCompressWarning, QuantizationError
from nncompress.onnx.graph_builder import constant_node_value, outer_inputs
from nncompress.onnx.model_io import inference_session

# (model, calibration data, one_of_many: an ignored scope may name nodes of other graphs only)
QuantizeGraph = Callable[[onnx.ModelProto, Dataset, bool], onnx.ModelProto]

_BRANCHES = ("then_branch", "else_branch")
_NOTHING = "nothing to quantize"
_UNTAKEN = "no calibration item takes it"


def has_if_bodies(model: onnx.ModelProto) -> bool:
    """True when the main graph has an ``If`` op (whose branches can be quantized)."""
    return any(n.op_type == "If" for n in model.graph.node)


def quantize_with_if_bodies(
    model: onnx.ModelProto,
    calibration_dataset: Dataset,
    quantize_graph: QuantizeGraph,
    subset_size: int = 300,
) -> onnx.ModelProto:
    """``quantize_graph`` on the main graph and on every ``If`` branch (see the module docstring).

    Raises ``QuantizationError`` only when nothing at all, main graph or branch, was quantized.
    """
    left_float: list[str] = []
    quantized, count = _quantize(model, calibration_dataset, quantize_graph, subset_size, left_float, "")
    untaken = [s for s in left_float if s.endswith(_UNTAKEN)]
    if untaken:
        warnings.warn(
            "ONNX If branches left in float: " + "; ".join(untaken),
            NNCompressWarning,
            stacklevel=3,
        )
    if count == 0:
        raise QuantizationError(
            "nothing to quantize: neither the main graph nor any If branch of the ONNX model got a "
            "quantizer (" + "; ".join(left_float) + ")"
        )
    return quantized


def _quantize(
    model: onnx.ModelProto,
    dataset: Dataset,
    quantize_graph: QuantizeGraph,
    subset_size: int,
    left_float: list[str],
    where: str,
) -> tuple[onnx.ModelProto, int]:
    """(quantized model, number of graphs that got quantizers) for ``model`` and its branches."""
    ifs = [i for i, n in enumerate(model.graph.node) if n.op_type == "If"]
    count = 0
    with warnings.catch_warnings():
        # the builder's "subgraph not quantized" is not true here: the branches are quantized below
        warnings.filterwarnings("ignore", message="ONNX ops with subgraphs are left in float")
        try:
            quantized = quantize_graph(model, dataset, True)
            count += 1
        except QuantizationError as exc:
            if not ifs or not str(exc).startswith(_NOTHING):
                raise
            quantized = onnx.ModelProto()
            quantized.CopyFrom(model)
    if not ifs:
        return quantized, count
    items = _branch_items(model, dataset, ifs, subset_size)
    taken = _all_names(quantized.graph)
    for i in ifs:
        node = model.graph.node[i]
        label = f"{where}{node.name or node.output[0]}"
        target = _find_if(quantized, node)
        for branch in _BRANCHES:
            feeds = items[(i, branch)]
            body = _attribute(node, branch).g
            if not feeds:
                left_float.append(f"'{label}' {branch}: {_UNTAKEN}")
                continue
            sub, constants = _standalone(model, body, feeds[0])
            try:
                qsub, n = _quantize(
                    sub,
                    Dataset(feeds),
                    quantize_graph,
                    subset_size,
                    left_float,
                    f"{label}/{branch}/",
                )
            except QuantizationError as exc:
                if not str(exc).startswith(_NOTHING):
                    raise
                left_float.append(f"'{label}' {branch}: no op in it gets a quantizer")
                continue
            if n == 0:
                left_float.append(f"'{label}' {branch}: no op in it gets a quantizer")
                continue
            new_body = _back_into_branch(qsub.graph, body, constants, taken)
            _attribute(target, branch).g.CopyFrom(new_body)
            _raise_opset(quantized, qsub)
            count += n
    _drop_dead_constants(quantized)
    return quantized, count


# ---------------------------------------------------------------------------------------------
# calibration data of the branches
# ---------------------------------------------------------------------------------------------
def _branch_items(
    model: onnx.ModelProto, dataset: Dataset, ifs: list[int], subset_size: int
) -> dict[tuple[int, str], list[dict[str, np.ndarray]]]:
    """The feeds of every branch: outer tensors it reads, for each item whose condition picks it."""
    from nncompress.onnx.adapter import make_feed, model_inputs

    consts = _constants(model.graph)
    wanted: dict[tuple[int, str], list[str]] = {}
    fetch: dict[str, None] = {}
    for i in ifs:
        node = model.graph.node[i]
        fetch.setdefault(node.input[0], None)
        for branch in _BRANCHES:
            free = [t for t in _free(_attribute(node, branch).g) if t not in consts]
            wanted[(i, branch)] = free
            for t in free:
                fetch.setdefault(t, None)
    feeds_of = model_inputs(model)
    feed_names = {n for n, _ in feeds_of}
    outputs = [t for t in fetch if t not in feed_names and t not in consts]
    run_model = onnx.ModelProto()
    run_model.CopyFrom(model)
    present = {o.name for o in run_model.graph.output}
    for t in outputs:
        if t not in present:
            run_model.graph.output.append(onnx.ValueInfoProto(name=t))
    result: dict[tuple[int, str], list[dict[str, np.ndarray]]] = {key: [] for key in wanted}
    with inference_session(run_model) as session:
        for pos, item in enumerate(dataset.get_inference_data()):
            if pos >= subset_size:
                break
            feed = make_feed(feeds_of, item, pos)
            try:
                values = dict(zip(outputs, session.run(outputs, feed))) if outputs else {}
            except Exception as exc:
                raise DatasetError(
                    f"ONNX Runtime failed on calibration item {pos} while collecting the inputs of If "
                    f"branches: {type(exc).__name__}: {exc}"
                ) from exc
            values.update(feed)
            for i in ifs:
                node = model.graph.node[i]
                cond = values.get(node.input[0])
                if cond is None:
                    cond = _constant_value(model.graph, node.input[0])
                branch = _BRANCHES[0] if bool(np.asarray(cond).reshape(-1)[0]) else _BRANCHES[1]
                result[(i, branch)].append({t: np.asarray(values[t]) for t in wanted[(i, branch)]})
    return result


# ---------------------------------------------------------------------------------------------
# a branch as a model, and back
# ---------------------------------------------------------------------------------------------
def _standalone(
    parent: onnx.ModelProto, body: onnx.GraphProto, example: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """``body`` as a model: outer tensors -> inputs (typed by ``example``), outer constants copied."""
    consts = _constants(parent.graph)
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    copied: dict[str, onnx.TensorProto] = {}
    for t in _free(body):
        if t in consts:
            copied[t] = consts[t]
            graph.initializer.append(consts[t])
        elif t in example:
            value = example[t]
            shape: list[Any] = [f"{t}_dim{d}" for d in range(value.ndim)]
            elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
            graph.input.append(onnx.helper.make_tensor_value_info(t, elem, shape))
        else:
            raise QuantizationError(
                f"If branch '{body.name}' reads '{t}', which its parent graph does not define"
            )
    graph.name = graph.name or "if_branch"
    model = onnx.helper.make_model(graph, opset_imports=list(parent.opset_import))
    model.ir_version = parent.ir_version
    return model, copied


def _back_into_branch(
    quantized: onnx.GraphProto,
    original: onnx.GraphProto,
    copied: dict[str, onnx.TensorProto],
    taken: set[str],
) -> onnx.GraphProto:
    """The quantized branch graph without the added inputs; new names unique in the whole model."""
    g = onnx.GraphProto()
    g.CopyFrom(quantized)
    added = {i.name for i in g.input} - {i.name for i in original.input}
    kept_inputs = [i for i in g.input if i.name not in added]
    del g.input[:]
    g.input.extend(kept_inputs)
    inits = []
    for t in g.initializer:
        if t.name in copied and t.SerializeToString() == copied[t.name].SerializeToString():
            continue  # unchanged: the branch reads the parent's tensor again
        inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    before = _all_names(original) | set(copied)
    renames: dict[str, str] = {}
    for name in sorted(_defined(g) - before):
        if name in taken:
            renames[name] = _unique(name, taken)
        else:
            taken.add(name)
    for t in g.initializer:
        if t.name in copied:  # changed (bias correction): a branch-local copy under a new name
            renames[t.name] = _unique(t.name, taken)
    if renames:
        _rename(g, renames)
    taken.update(_all_names(g))
    return g


def _rename(g: onnx.GraphProto, renames: dict[str, str]) -> None:
    for t in g.initializer:
        t.name = renames.get(t.name, t.name)
    for n in g.node:
        for k, t in enumerate(n.input):
            n.input[k] = renames.get(t, t)
        for k, t in enumerate(n.output):
            n.output[k] = renames.get(t, t)
        for a in n.attribute:
            for sub in _subgraphs(a):
                shadowed = _defined(sub) | {i.name for i in sub.input}
                inner = {k: v for k, v in renames.items() if k not in shadowed}
                if inner:
                    _rename(sub, inner)
    for vi in [*g.value_info, *g.output]:
        vi.name = renames.get(vi.name, vi.name)


def _raise_opset(parent: onnx.ModelProto, body: onnx.ModelProto) -> None:
    """A branch converted to a higher opset (per-channel QDQ needs 13) cannot go back silently."""
    from nncompress.onnx.adapter import default_opset

    if default_opset(body) > default_opset(parent):
        raise QuantizationError(
            f"An If branch needs opset {default_opset(body)} for its quantizers but the ONNX model has opset "
            f"{default_opset(parent)}: re-export the model with opset_version >= {default_opset(body)}"
        )


def _drop_dead_constants(model: onnx.ModelProto) -> None:
    """Outer initializers / Constant ops no node, branch or output reads any more."""
    g = model.graph
    read = {o.name for o in g.output}
    for n in g.node:
        read.update(n.input)
        if any(_subgraphs(a) for a in n.attribute):
            read.update(outer_inputs(n))
    kept = [t for t in g.initializer if t.name in read or t.name in {i.name for i in g.input}]
    if len(kept) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(kept)
    nodes = [n for n in g.node if not (n.op_type == "Constant" and n.output and n.output[0] not in read)]
    if len(nodes) != len(g.node):
        del g.node[:]
        g.node.extend(nodes)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto:
    for a in node.attribute:
        if a.name == name:
            return a
    raise QuantizationError(f"If node '{node.name}' has no {name}")


def _find_if(quantized: onnx.ModelProto, node: onnx.NodeProto) -> onnx.NodeProto:
    """The ``If`` of the quantized model that is ``node`` of the float one (same outputs)."""
    for n in quantized.graph.node:
        if n.op_type == "If" and list(n.output) == list(node.output):
            return n
    raise QuantizationError(f"The If node '{node.name}' was lost while quantizing the main graph")


def _subgraphs(a: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if a.type == onnx.AttributeProto.GRAPH:
        return [a.g]
    if a.type == onnx.AttributeProto.GRAPHS:
        return list(a.graphs)
    return []


def _free(g: onnx.GraphProto) -> list[str]:
    """Tensors ``g`` (and its subgraphs) read but do not define."""
    holder = onnx.helper.make_node("If", ["cond"], [], then_branch=g)
    return outer_inputs(holder)


def _constants(g: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-op outputs of ``g`` as tensors named like the tensor they define."""
    out = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            try:
                out[n.output[0]] = numpy_helper.from_array(constant_node_value(n), n.output[0])
            except Exception:  # sparse or unreadable constants stay outer tensors fed at run time
                continue
    return out


def _constant_value(g: onnx.GraphProto, name: str) -> np.ndarray:
    tensor = _constants(g).get(name)
    if tensor is None:
        raise QuantizationError(f"The condition '{name}' of an If op could not be computed")
    return numpy_helper.to_array(tensor)


def _defined(g: onnx.GraphProto) -> set[str]:
    return {t.name for t in g.initializer} | {o for n in g.node for o in n.output if o}


def _all_names(g: onnx.GraphProto) -> set[str]:
    """Every tensor name defined anywhere in ``g`` and its subgraphs."""
    names = _defined(g) | {i.name for i in g.input}
    for n in g.node:
        for a in n.attribute:
            for sub in _subgraphs(a):
                names |= _all_names(sub)
    return names


def _unique(base: str, taken: set[str]) -> str:
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    taken.add(f"{base}_{k}")
    return f"{base}_{k}"


__all__ = ["has_if_bodies", "quantize_with_if_bodies"]
