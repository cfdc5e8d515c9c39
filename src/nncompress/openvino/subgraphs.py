"""Quantization of the bodies of OpenVINO ``If`` ops, each as a model of its own.

The OpenVINO counterpart of ``nncompress.onnx.subgraphs`` (silero-vad read by OpenVINO keeps its
``If`` ops; NNCF's OpenVINO backend quantizes their bodies the same way):

1. the float parent model runs on the calibration items with every input of every ``If`` as an
   extra result; each item goes to the body its condition picks, as the tuple of that body's
   Parameters (``get_input_descriptions`` maps ``If`` inputs to body Parameters);
2. the body (an ``ov.Model``) is quantized by the same pipeline, recursively;
3. the quantized body replaces the float one (``set_function``); Parameters and Results keep
   their order, so the ``If``'s input and output descriptions stay valid.

A body no calibration item takes stays in float and is named in one ``NNCompressWarning``; a body
with no quantizable op is left as it is. ``Loop`` / ``TensorIterator`` bodies are not quantized.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from nncompress.data import Dataset
from nncompress.errors import NNCompressWarning, QuantizationError

# (model, calibration data, one_of_many: an ignored scope may name nodes of other graphs only)
QuantizeGraph = Callable[[ov.Model, Dataset, bool], ov.Model]

_BODIES = ("then body", "else body")  # get_function(0) / get_function(1)
_NOTHING = "nothing to quantize"
_UNTAKEN = "no calibration item takes it"


def has_if_bodies(model: ov.Model) -> bool:
    """True when the model has an ``If`` op (whose bodies can be quantized)."""
    return any(op.get_type_name() == "If" for op in model.get_ordered_ops())


def quantize_with_if_bodies(
    model: ov.Model, calibration_dataset: Dataset, quantize_graph: QuantizeGraph, subset_size: int = 300
) -> ov.Model:
    """``quantize_graph`` on the model and on every ``If`` body (see the module docstring).

    Raises ``QuantizationError`` only when nothing at all, model or body, was quantized.
    """
    left_float: list[str] = []
    quantized, count = _quantize(model, calibration_dataset, quantize_graph, subset_size, left_float, "")
    untaken = [s for s in left_float if s.endswith(_UNTAKEN)]
    if untaken:
        warnings.warn(
            "OpenVINO If bodies left in float: " + "; ".join(untaken), NNCompressWarning, stacklevel=3
        )
    if count == 0:
        raise QuantizationError(
            "nothing to quantize: neither the OpenVINO model nor any If body got a quantizer ("
            + "; ".join(left_float)
            + ")"
        )
    return quantized


def _ifs(model: ov.Model) -> list[ov.Node]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() == "If"]


def _quantize(
    model: ov.Model,
    dataset: Dataset,
    quantize_graph: QuantizeGraph,
    subset_size: int,
    left_float: list[str],
    where: str,
) -> tuple[ov.Model, int]:
    ifs = _ifs(model)
    count = 0
    with warnings.catch_warnings():
        # the builder's "subgraph not quantized" is not true here: the bodies are quantized below
        warnings.filterwarnings("ignore", message="OpenVINO ops with bodies are left in float")
        try:
            quantized = quantize_graph(model, dataset, True)
            count += 1
        except QuantizationError as exc:
            if not ifs or not str(exc).startswith(_NOTHING):
                raise
            quantized = model.clone()
    if not ifs:
        return quantized, count
    items = _body_items(model, dataset, ifs, subset_size)
    targets = {op.get_friendly_name(): op for op in _ifs(quantized)}
    for op in ifs:
        name = op.get_friendly_name()
        target = targets.get(name)
        if target is None:
            raise QuantizationError(f"The If op '{name}' was lost while quantizing the OpenVINO model")
        for branch, label in enumerate(_BODIES):
            feeds = items[(name, branch)]
            if not feeds:
                left_float.append(f"'{where}{name}' {label}: {_UNTAKEN}")
                continue
            body = op.get_function(branch)
            try:
                qbody, n = _quantize(
                    body, Dataset(feeds), quantize_graph, subset_size, left_float, f"{where}{name}/{label}/"
                )
            except QuantizationError as exc:
                if not str(exc).startswith(_NOTHING):
                    raise
                continue  # no quantizable op in this body
            if n == 0:
                continue
            _check_interface(body, qbody, name, label)
            target.set_function(branch, qbody)
            count += n
        target.validate_and_infer_types()
    quantized.validate_nodes_and_infer_types()
    return quantized, count


def _check_interface(body: ov.Model, qbody: ov.Model, name: str, label: str) -> None:
    """The If's descriptions index Parameters and Results: the quantized body must keep them."""
    same = len(body.get_parameters()) == len(qbody.get_parameters()) and len(body.outputs) == len(
        qbody.outputs
    )
    if not same:
        raise QuantizationError(f"Quantizing the {label} of If '{name}' changed its parameters or results")


def _body_items(
    model: ov.Model, dataset: Dataset, ifs: list[ov.Node], subset_size: int
) -> dict[tuple[str, int], list[tuple[np.ndarray, ...]]]:
    """Per (If name, body): for each item whose condition picks the body, its Parameter values."""
    from nncompress.openvino.adapter import F32_CONFIG, core, infer_item, is_stateful

    run_model = model.clone()
    by_name = {op.get_friendly_name(): op for op in _ifs(run_model)}
    first = len(run_model.outputs)
    slots: dict[tuple[str, int], int] = {}
    results = []
    for op in ifs:
        clone = by_name[op.get_friendly_name()]
        for i in range(clone.get_input_size()):
            slots[(op.get_friendly_name(), i)] = first + len(results)
            r = ops.result(clone.input_value(i))
            r.set_friendly_name(f"nncompress_if_input_{len(results)}")
            results.append(r)
    run_model.add_results(results)
    compiled = core().compile_model(run_model, "CPU", F32_CONFIG)
    request = compiled.create_infer_request()
    ports = list(compiled.inputs)
    stateful = is_stateful(run_model)
    out: dict[tuple[str, int], list[tuple[np.ndarray, ...]]] = {
        (op.get_friendly_name(), b): [] for op in ifs for b in range(2)
    }
    for pos, item in enumerate(dataset.get_inference_data()):
        if pos >= subset_size:
            break
        infer_item(request, ports, item, pos, stateful, " while collecting the inputs of If bodies")
        for op in ifs:
            name = op.get_friendly_name()
            cond = request.get_output_tensor(slots[(name, 0)]).data
            branch = 0 if bool(np.asarray(cond).reshape(-1)[0]) else 1
            body = op.get_function(branch)
            values: list[Any] = [None] * len(body.get_parameters())
            for d in op.get_input_descriptions(branch):
                values[d.body_parameter_index] = np.array(
                    request.get_output_tensor(slots[(name, d.input_index)]).data, copy=True
                )
            if any(v is None for v in values):
                raise QuantizationError(
                    f"A Parameter of the {_BODIES[branch]} of If '{name}' is fed by no If input"
                )
            out[(name, branch)].append(tuple(values))
    return out


__all__ = ["has_if_bodies", "quantize_with_if_bodies"]
