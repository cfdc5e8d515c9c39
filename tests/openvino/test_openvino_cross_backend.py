"""One torch model, three backends: the same tensors get quantizers, with the same ranges.

The model is exported to ONNX and converted to OpenVINO; each backend builds its own graph
(ONNX and OpenVINO fold BatchNorm into the convolutions, torch keeps it), places quantizers
under the same CPU rules and calibrates on the same data. Quantizers are matched between
backends by position: the op kinds they serve, in topological order.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import ConcatNet, ConvNet, build, calibration_data, export_onnx, sqnr, to_openvino

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")

import nncompress  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.hardware.rules import load_rules  # noqa: E402
from nncompress.onnx.adapter import Adapter as OnnxAdapter  # noqa: E402
from nncompress.openvino.adapter import Adapter as OVAdapter  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402
from nncompress.quantization.algorithms import MinMaxQuantization  # noqa: E402
from nncompress.quantization.placement import place_quantizers  # noqa: E402
from nncompress.torch.adapter import Adapter as TorchAdapter  # noqa: E402

LAYERS = K.CONVOLUTION_KINDS | {K.MATMUL}
# the same op seen by different frontends (global average pooling: OpenVINO makes it ReduceMean)
SAME_KIND = {K.REDUCE_MEAN: K.AVG_POOL}


def calibrate(adapter, model, inputs):
    graph = adapter.build_graph(model, inputs[0])
    placement = place_quantizers(graph, load_rules("CPU"))
    result = MinMaxQuantization(subset_size=len(inputs)).calibrate(model, graph, adapter, inputs, placement)
    return graph, placement, result.params


def activation_rows(graph, placement, params):
    """(kinds served, low, high) of every activation quantizer, in order of its first consumer."""
    order = {n.name: i for i, n in enumerate(graph.topological_order())}
    rows = []
    for p in placement.activation_points:
        first = min(order[c] for c, _ in p.consumers)
        kinds = tuple(sorted(SAME_KIND.get(graph.node(c).kind, graph.node(c).kind) for c, _ in p.consumers))
        qp = params[p.target]
        rows.append((first, kinds, float(np.min(qp.input_low)), float(np.max(qp.input_high)), qp.levels))
    return [row[1:] for row in sorted(rows)]


def weight_rows(graph, placement, params):
    """(kind, logical weight shape, scales) of every weight quantizer, in topological order."""
    order = {n.name: i for i, n in enumerate(graph.topological_order())}
    rows = []
    for p in placement.weight_points:
        node = graph.node(p.target.node)
        if node.kind in LAYERS:
            rows.append(
                (
                    order[node.name],
                    node.kind,
                    node.weights[p.target.port].shape,
                    np.asarray(params[p.target].scale),
                )
            )
    return [row[1:] for row in sorted(rows, key=lambda r: r[0])]


@pytest.mark.parametrize("cls", [ConvNet, ConcatNet])
def test_same_quantizers_and_ranges_in_torch_onnx_and_openvino(cls):
    torch_model = build(cls)
    data = calibration_data(torch_model, n=6)
    runs = {
        "torch": calibrate(TorchAdapter(), torch_model, [torch.from_numpy(d) for d in data]),
        "onnx": calibrate(OnnxAdapter(), export_onnx(torch_model), data),
        "openvino": calibrate(OVAdapter(), to_openvino(torch_model), data),
    }
    acts = {name: activation_rows(*run) for name, run in runs.items()}
    ref = acts["onnx"]
    assert len(ref) >= 4
    for name in ("torch", "openvino"):
        assert [r[0] for r in acts[name]] == [r[0] for r in ref], name  # same tensors, same consumers
        assert [r[3] for r in acts[name]] == [r[3] for r in ref], name
        got = np.array([r[1:3] for r in acts[name]])
        want = np.array([r[1:3] for r in ref])
        assert np.allclose(got, want, rtol=1e-3, atol=1e-5), name

    weights = {name: weight_rows(*run) for name, run in runs.items()}
    assert [(k, s) for k, s, _ in weights["onnx"]] == [(k, s) for k, s, _ in weights["openvino"]]
    assert [(k, s) for k, s, _ in weights["onnx"]] == [(k, s) for k, s, _ in weights["torch"]]
    for (_, _, a), (_, _, b) in zip(weights["onnx"], weights["openvino"]):  # both fold BatchNorm
        assert np.allclose(a, b, rtol=1e-4)
    torch_graph = runs["torch"][0]
    folded = {
        i
        for i, n in enumerate(n for n in torch_graph.topological_order() if n.kind in LAYERS and n.weights)
        if any(s.kind == K.BATCH_NORM for s in torch_graph.successors(n.name))
    }
    for i, ((_, _, a), (_, _, b)) in enumerate(zip(weights["onnx"], weights["torch"])):
        if i not in folded:  # layers without BatchNorm have the same weights everywhere
            assert np.allclose(a, b, rtol=1e-5), i


def test_quantized_models_of_the_three_backends_agree():
    torch_model = build(ConvNet)
    data = calibration_data(torch_model, n=6)
    advanced = AdvancedQuantizationParameters(show_progress=False)
    dataset = nncompress.Dataset(data)
    q_torch = nncompress.quantize(
        torch_model, nncompress.Dataset([torch.from_numpy(d) for d in data]), advanced_parameters=advanced
    )
    q_onnx = nncompress.quantize(export_onnx(torch_model), dataset, advanced_parameters=advanced)
    q_ov = nncompress.quantize(to_openvino(torch_model), dataset, advanced_parameters=advanced)

    with torch.no_grad():
        reference = np.concatenate([torch_model(torch.from_numpy(d)).numpy() for d in data])
        out_torch = np.concatenate([q_torch(torch.from_numpy(d)).numpy() for d in data])
    session = ort.InferenceSession(q_onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    out_onnx = np.concatenate([session.run(None, {"x": d})[0] for d in data])
    compiled = ov.Core().compile_model(q_ov, "CPU")
    out_ov = np.concatenate([compiled(d)[0] for d in data])
    for out in (out_torch, out_onnx, out_ov):
        assert sqnr(reference, out) > 30
    # the three quantized models are closer to one another than to the float model
    assert sqnr(out_onnx, out_ov) > 45 and sqnr(out_torch, out_onnx) > 45


class _FreshItems:
    """A re-iterable source that makes every item anew: nothing but the pipeline can hold them."""

    def __init__(self, n: int, shape: tuple[int, ...]):
        self.n, self.shape = n, shape

    def __iter__(self):
        rng = np.random.default_rng(0)
        for _ in range(self.n):
            yield rng.standard_normal(self.shape).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_statistics_stream_memory_does_not_grow_with_subset_size(backend):
    import tracemalloc

    torch_model = build(ConvNet)
    model = {
        "torch": lambda: torch_model,
        "onnx": lambda: export_onnx(torch_model),
        "openvino": lambda: to_openvino(torch_model),
    }[backend]()
    shape = (64, *ConvNet.input_shape)  # 0.19 MiB per item: 64 items held would be 12 MiB
    transform = torch.from_numpy if backend == "torch" else None

    def peak_mib(items: int) -> float:
        tracemalloc.start()
        nncompress.quantize(
            model,
            nncompress.Dataset(_FreshItems(items, shape), transform),
            subset_size=items * shape[0],
            advanced_parameters=AdvancedQuantizationParameters(show_progress=False),
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20

    peak_mib(2)  # first-call caches (imports, compiled kernels) out of the measurement
    few, many = peak_mib(8), peak_mib(64)
    assert many < few + 2.0, (few, many)
