"""ONNX backend end to end: ``nncompress.quantize(onnx_model, dataset)`` -> a QDQ ModelProto."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import (
    MLP,
    ConcatNet,
    ConvNet,
    SeqMLP,
    SmallMapConvs,
    TinyBlock,
    build,
    calibration_data,
    export_onnx,
    spy_workers,
    sqnr,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nncompress  # noqa: E402
from nncompress.errors import NNCompressWarning, QuantizationError  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.hardware.rules import load_rules  # noqa: E402
from nncompress.onnx import adapter as onnx_adapter  # noqa: E402
from nncompress.onnx import graph_builder  # noqa: E402
from nncompress.onnx.adapter import Adapter, default_opset, placement_of, qdq_type  # noqa: E402
from nncompress.onnx.model_io import load_model, save_model  # noqa: E402
from nncompress.quantization.advanced_parameters import (  # noqa: E402
    AdvancedQuantizationParameters,
    QuantizationParameters,
)
from nncompress.quantization.algorithms import MinMaxQuantization  # noqa: E402
from nncompress.quantization.params import QuantizerParams  # noqa: E402
from nncompress.quantization.placement import place_quantizers  # noqa: E402
from nncompress.quantization.spec import Placement, TargetPoint, TargetType  # noqa: E402
from nncompress.quantization.statistics import MAX, MEAN, MIN, request_for  # noqa: E402


def quantize(model, data, **advanced):
    return nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=len(data) * 2,
        advanced_parameters=AdvancedQuantizationParameters(show_progress=False, **advanced),
    )


def run(model, data):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: d})[0] for d in data])


def producers(model):
    return {t: n for n in model.graph.node for t in n.output}


def initializers(model):
    return {t.name: t for t in model.graph.initializer}


def attr(node, name, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def quantized_input(model, node, port):
    """The QuantizeLinear of the Q -> DQ pair feeding ``node``'s input ``port`` (or None),
    looking through ops that only move values (a quantizer moves up through them)."""
    prod = producers(model)
    dq = prod.get(node.input[port])
    while dq is not None and dq.op_type in ("Flatten", "Reshape", "Transpose", "MaxPool", "Resize", "Gather"):
        dq = prod.get(dq.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = prod.get(dq.input[0])
    return q if q is not None and q.op_type == "QuantizeLinear" else None


def weight_dq(model, node, port=1):
    dq = producers(model).get(node.input[port])
    return dq if dq is not None and dq.op_type == "DequantizeLinear" else None


@pytest.fixture(scope="module")
def conv_case():
    torch_model = build(ConvNet)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model)
    before = model.SerializeToString()
    q = quantize(model, data)
    assert model.SerializeToString() == before  # the input model is not changed
    return model, data, q


def test_conv_net_gets_qdq_on_every_layer_and_stays_accurate(conv_case):
    model, data, q = conv_case
    assert isinstance(q, onnx.ModelProto) and q is not model
    onnx.checker.check_model(q)
    inits = initializers(q)
    layers = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == 5
    for node in layers:
        assert quantized_input(q, node, 0) is not None, node.name
        dq = weight_dq(q, node)
        assert dq is not None, node.name
        w = inits[dq.input[0]]
        assert w.data_type == TensorProto.INT8 and attr(dq, "axis") == 0  # per output channel
        assert numpy_helper.to_array(inits[dq.input[1]]).shape == (w.dims[0],)
        assert np.all(numpy_helper.to_array(inits[dq.input[2]]) == 0)  # symmetric weights
    # the model input and both residual-add inputs are quantized
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in q.graph.node)
    add = next(n for n in q.graph.node if n.op_type == "Add")
    assert all(producers(q)[t].op_type == "DequantizeLinear" for t in add.input)
    # float weights are gone from the quantized model
    assert "fc.weight" not in inits and "fc.weight" in initializers(model)
    # outputs: close to float at any batch size (dynamic batch)
    assert sqnr(run(model, data), run(q, data)) > 30
    odd_batch = [np.random.default_rng(5).standard_normal((5, 3, 16, 16)).astype(np.float32)]
    assert sqnr(run(model, odd_batch), run(q, odd_batch)) > 30
    # fast bias correction changed some biases; the placement is kept as metadata
    fp_inits = initializers(model)
    changed = [
        n.input[2]
        for n in layers
        if not np.allclose(
            numpy_helper.to_array(inits[n.input[2]]), numpy_helper.to_array(fp_inits[n.input[2]])
        )
    ]
    assert changed
    placement = placement_of(q)
    assert placement is not None and len(placement["points"]) == sum(
        n.op_type == "QuantizeLinear" for n in q.graph.node
    ) + sum(1 for n in layers)


@pytest.mark.parametrize("cls", [MLP, SeqMLP, ConcatNet])
def test_other_models_quantize_accurately(cls):
    torch_model = build(cls)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model)
    q = quantize(model, data)
    assert sqnr(run(model, data), run(q, data)) > 25
    n_layers = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in model.graph.node)
    assert (
        sum(n.op_type == "DequantizeLinear" and n.input[0] in initializers(q) for n in q.graph.node)
        == n_layers
    )
    if cls is ConcatNet:  # concat inputs share one scale
        concat = next(n for n in q.graph.node if n.op_type == "Concat")
        scales = {
            float(numpy_helper.to_array(initializers(q)[quantized_input(q, concat, i).input[1]]))
            for i in range(2)
        }
        assert len(scales) == 1


def test_statistics_of_a_quantized_model_see_the_tensor_entering_the_quantizer(conv_case):
    model, data, q = conv_case
    adapter = Adapter()
    adapter.build_graph(model)
    target = TargetPoint(TargetType.INPUT, "/conv1/Conv", 0)
    got = {}
    sinks = {request_for(target, r): (lambda v, r=r: got.setdefault(r, []).append(v)) for r in (MIN, MAX)}
    assert adapter.collect_statistics(q, iter(data), sinks) == len(data)
    assert np.allclose(got[MAX], [d.max() for d in data]) and np.allclose(got[MIN], [d.min() for d in data])
    # the dequantized tensor would be on the quantizer's grid: the raw input is not
    q_node = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    scale = float(numpy_helper.to_array(initializers(q)[q_node.input[1]]))
    assert not np.allclose(np.asarray(got[MAX]) / scale, np.round(np.asarray(got[MAX]) / scale))


def test_statistics_two_items_at_a_time_equal_one_at_a_time(conv_case, monkeypatch):
    """Items run concurrently on two cores; the values and their order are those of a plain loop."""
    _, data, q = conv_case
    adapter = Adapter()
    graph = adapter.build_graph(q)
    targets = [TargetPoint(TargetType.OUTPUT, n.name, 0) for n in graph.nodes if n.kind == K.CONVOLUTION]

    def collect(workers):
        monkeypatch.setattr(onnx_adapter, "statistics_workers", lambda: workers)
        got = {}
        sinks = {
            request_for(t, r, 1 if r == MEAN else None): (lambda v, k=(t, r): got.setdefault(k, []).append(v))
            for t in targets
            for r in (MIN, MAX, MEAN)
        }
        assert adapter.collect_statistics(q, iter(data), sinks) == len(data)
        return got

    one, two = collect(1), collect(2)
    assert one.keys() == two.keys() and len(one) == 3 * len(targets)
    for k in one:  # same items in the same order; thread counts differ (1 item x all cores vs 2 x half)
        for a, b in zip(one[k], two[k], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=str(k))


def plain_channel_means(model, data, nodes: list[str]) -> list[np.ndarray]:
    """Per-channel output means of ``nodes`` over ``data``: ``model`` itself (a quantized one with
    its int8 weights) run by ONNX Runtime unoptimized, every tensor a graph output."""
    run_model = onnx.ModelProto()
    run_model.CopyFrom(model)
    names = {n.name: n.output[0] for n in run_model.graph.node}
    outputs = [names[n] for n in nodes]
    run_model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(run_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [session.run(outputs, {"x": d}) for d in data]
    return [
        np.mean([r[i].mean(axis=(0, 2, 3) if r[i].ndim == 4 else 0) for r in runs], axis=0)
        for i in range(len(nodes))
    ]


def test_bias_correction_leaves_no_mean_shift_on_the_calibration_data(conv_case):
    """The slow BiasCorrection re-measures after each level: every biased layer of the quantized
    model then has the float model's output means (it gave EfficientNet-Lite0 4.3 dB SQNR while
    ONNX Runtime re-quantized the weights of its statistics copy)."""
    model, data, _ = conv_case
    q = nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=len(data) * 2,
        fast_bias_correction=False,
        advanced_parameters=AdvancedQuantizationParameters(show_progress=False),
    )
    biased = [n.name for n in Adapter().build_graph(model).nodes if n.bias]
    assert len(biased) >= 4
    for name, fp, qm in zip(
        biased, plain_channel_means(model, data, biased), plain_channel_means(q, data, biased)
    ):
        np.testing.assert_allclose(qm, fp, atol=1e-5, err_msg=name)


def test_many_statistics_of_a_quantized_model_at_once_are_right(conv_case):
    """Each tensor's mean, read alone or with the others, is the quantized model's own value.

    The statistics copy holds the weights as float constants; ONNX Runtime's
    WeightBiasQuantization would quantize them again, per tensor, wherever a layer's output is
    not read (off by up to 9e-4 here, by 8.6 on EfficientNet-Lite0) unless it is disabled."""
    model, data, q = conv_case
    adapter = Adapter()
    graph = adapter.build_graph(model)
    layers = [n for n in graph.nodes if n.kind in (K.CONVOLUTION, K.DEPTHWISE_CONVOLUTION, K.MATMUL, K.RELU)]
    targets = [TargetPoint(TargetType.OUTPUT, n.name, 0) for n in layers]
    assert len(targets) >= 5

    def means(model, targets):
        got = {t: [] for t in targets}
        adapter.collect_statistics(
            model, iter(data), {request_for(t, MEAN, 1): got[t].append for t in targets}
        )
        return {t: np.mean(v, axis=0) for t, v in got.items()}

    reference = dict(zip(targets, plain_channel_means(q, data, [t.node for t in targets]), strict=True))
    together = means(q, targets)
    float_means = means(model, targets)
    for t in targets:
        np.testing.assert_allclose(together[t], reference[t], atol=1e-5, err_msg=str(t))
        np.testing.assert_allclose(means(q, [t])[t], reference[t], atol=1e-5, err_msg=str(t))
        assert np.allclose(together[t], float_means[t], atol=0.02), t


def test_quantized_graph_output_keeps_its_name():
    torch_model = build(MLP)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model)
    q = quantize(model, data, quantize_outputs=True)
    assert [o.name for o in q.graph.output] == ["y"]
    assert producers(q)["y"].op_type == "DequantizeLinear"
    # the output range is the mean of per-batch ranges (NNCF's default), so its tails are clipped
    assert sqnr(run(model, data), run(q, data)) > 18


def _weights_only(model):
    """Graph, placement with the weight quantizers only, and their parameters (no data needed)."""
    adapter = Adapter()
    graph = adapter.build_graph(model)
    placement = place_quantizers(graph, load_rules("CPU"))
    placement = Placement(points=placement.weight_points)
    params = MinMaxQuantization().apply(model, graph, adapter, None, placement)
    return adapter, placement, params


def test_old_opset_is_upgraded_for_per_channel_weights_or_refused():
    torch_model = build(ConvNet)
    model = export_onnx(torch_model, opset=11)
    data = calibration_data(torch_model)
    q = quantize(model, data)
    assert default_opset(model) == 11 and default_opset(q) >= 13
    assert sqnr(run(model, data), run(q, data)) > 30
    # per-tensor weights need no upgrade
    per_tensor = quantize(model, data, weights_quantization_params=QuantizationParameters(per_channel=False))
    assert default_opset(per_tensor) == 11
    assert all(attr(n, "axis") is None for n in per_tensor.graph.node if n.op_type == "DequantizeLinear")

    adapter, placement, params = _weights_only(model)
    adapter.upgrade_opset = False
    with pytest.raises(QuantizationError, match="opset 11.*opset >= 13"):
        adapter.apply(model, placement, params)


def test_opset_that_cannot_be_converted_is_a_clear_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w"
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("ImageScaler", ["c"], ["y"], scale=2.0),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 8)]
    )
    adapter, placement, params = _weights_only(model)  # ImageScaler is unknown: left in float
    with pytest.raises(QuantizationError, match="opset 8.*converting it to opset 13 failed"):
        adapter.apply(model, placement, params)


def test_unknown_op_stays_float_with_a_warning_and_the_rest_is_quantized():
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1"),
        helper.make_node("Gelu", ["c"], ["g"], name="ms_gelu", domain="com.microsoft"),
        helper.make_node("Conv", ["g", "w2"], ["y"], name="conv2"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w1, w2]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    data = [rng.standard_normal((2, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    with pytest.warns(NNCompressWarning, match=r"'ms_gelu' \(com\.microsoft::Gelu\)"):
        q = quantize(model, data)
    gelu = next(n for n in q.graph.node if n.name == "ms_gelu")
    assert gelu.input[0] == "c"  # the unknown op reads the float tensor
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert quantized_input(q, conv2, 0) is not None
    assert sqnr(run(model, data), run(q, data)) > 25


def test_if_node_is_skipped_and_integer_inputs_are_not_quantized():
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    branch = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Relu", ["c"], ["b"])], "then", [], [branch])
    else_g = helper.make_graph([helper.make_node("Neg", ["c"], ["b"])], "else", [], [branch])
    w1 = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1"),
        helper.make_node("If", ["flag"], ["i"], name="choose", then_branch=then_g, else_branch=else_g),
        helper.make_node("Gather", ["i", "idx"], ["g"], name="pick", axis=1),
        helper.make_node("Conv", ["g", "w2"], ["y"], name="conv2"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x, flag, idx], [y], [w1, w2]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    data = [
        {
            "x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
            "flag": np.array(k % 2 == 0),
            "idx": np.array([0, 2, 5]),
        }
        for k in range(4)
    ]
    with pytest.warns(NNCompressWarning) as record:
        q = quantize(model, data)
    messages = " ".join(str(w.message) for w in record)
    # the If op itself stays float (its branches hold no quantizable op: see test_onnx_real_models)
    assert "'choose' (If)" in messages
    readers = {t for n in q.graph.node if n.op_type == "QuantizeLinear" for t in n.input[:1]}
    assert "flag" not in readers and "idx" not in readers
    assert next(n for n in q.graph.node if n.name == "choose").input[0] == "flag"
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert quantized_input(q, conv2, 0) is not None
    session0 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session1 = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    for item in data:
        assert sqnr(session0.run(None, item)[0], session1.run(None, item)[0]) > 20


def test_model_with_external_data(tmp_path, monkeypatch):
    torch_model = build(ConvNet)
    data = calibration_data(torch_model, n=4)
    path = save_model(export_onnx(torch_model), tmp_path / "float.onnx", external_data=True)
    on_disk = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in on_disk.graph.initializer)
    model = load_model(path)
    # treat it as a "large" model: sessions from files, shape inference on a skeleton
    monkeypatch.setattr(onnx_adapter, "LARGE_MODEL_BYTES", 0)
    monkeypatch.setattr(graph_builder, "LARGE_MODEL_BYTES", 0)
    calls = []

    def spy(run_model, large_model_bytes, *args):
        calls.append(large_model_bytes)
        return session_for(run_model, large_model_bytes, *args)

    session_for = onnx_adapter.inference_session
    monkeypatch.setattr(onnx_adapter, "inference_session", spy)
    q = quantize(model, data)
    assert calls and set(calls) == {0}  # statistics ran from files (float and quantized model)
    out = save_model(q, tmp_path / "int8.onnx", external_data=True, size_threshold=256)
    assert (tmp_path / "int8.onnx.data").exists()
    assert len(initializers(q)["fc.bias"].raw_data) > 0  # saving did not empty the model in memory
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"x": d})[0] for d in data])
    assert sqnr(run(model, data), got) > 30


def test_bias_and_weight_access():
    model = export_onnx(build(ConvNet))
    adapter = Adapter()
    adapter.build_graph(model)
    bias = adapter.get_bias(model, "/fc/Gemm")
    assert np.array_equal(bias, numpy_helper.to_array(initializers(model)["fc.bias"]))
    adapter.set_bias(model, "/fc/Gemm", bias + 1)
    assert np.allclose(numpy_helper.to_array(initializers(model)["fc.bias"]), bias + 1)
    w = adapter.get_weight(model, "/dw/Conv", 1)
    assert w.shape == (8, 1, 3, 3)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    b = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "b")
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    gemm = helper.make_model(
        helper.make_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", beta=0.5)], "g", [x], [y], [w, b]
        )
    )
    adapter = Adapter()
    adapter.build_graph(gemm)
    assert np.allclose(adapter.get_bias(gemm, "gemm"), [0.5, 1.0, 1.5])  # the effective bias
    adapter.set_bias(gemm, "gemm", np.array([1.0, 1.0, 1.0]))
    assert np.allclose(numpy_helper.to_array(gemm.graph.initializer[1]), [2.0, 2.0, 2.0])


def _params(qmin, qmax):
    return QuantizerParams(np.array(0.1), np.array(0), qmin, qmax)


@pytest.mark.parametrize(
    "qmin, qmax, is_weight, expected",
    [
        (-128, 127, False, TensorProto.INT8),
        (0, 255, False, TensorProto.UINT8),
        (-127, 127, True, TensorProto.INT8),  # narrow range
        (-127, 127, False, TensorProto.INT8),
        (-64, 63, True, TensorProto.INT8),  # overflow fix: 7 of 8 bits
        (-8, 7, True, TensorProto.INT4),
        (-32768, 32767, False, TensorProto.INT16),
    ],
)
def test_qdq_types(qmin, qmax, is_weight, expected):
    assert qdq_type(_params(qmin, qmax), is_weight).onnx_type == expected


def test_activation_grid_narrower_than_its_type_is_refused():
    with pytest.raises(QuantizationError, match="saturates"):
        qdq_type(_params(-64, 63), is_weight=False)


def test_onnx_runtime_executes_the_convolutions_in_int8(conv_case, tmp_path):
    _, _, q = conv_case
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(q.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("QLinearConv") == 4 and "Conv" not in optimized


def test_calibration_items_may_be_torch_tensors_tuples_or_dicts():
    torch = pytest.importorskip("torch")
    torch_model = build(MLP)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model, n=4)
    reference = run(model, data)
    for items in (
        [torch.from_numpy(d) for d in data],
        [(d,) for d in data],
        [{"x": d.astype(np.float64)} for d in data],
    ):
        assert sqnr(reference, run(quantize(model, items), data)) > 25


def test_a_generator_of_items_quantizes_like_a_list(conv_case):
    """NNCF reads calibration items once, so ``nncf.Dataset(generator)`` works there; our fast
    bias correction reads the first items again, from the Dataset's replay of the generator."""
    model, data, q = conv_case
    from_generator = nncompress.quantize(
        model,
        nncompress.Dataset(d for d in data),
        subset_size=len(data) * 2,
        advanced_parameters=AdvancedQuantizationParameters(show_progress=False),
    )
    assert from_generator.SerializeToString() == q.SerializeToString()


def test_four_bit_weights_are_int4_at_opset_21():
    torch_model = build(MLP)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model, n=4)
    adapter = Adapter()
    graph = adapter.build_graph(model)
    placement = place_quantizers(graph, load_rules("TRIAL"), weight_bits=4)
    params = MinMaxQuantization().apply(model, graph, adapter, data, placement)
    q = adapter.apply(model, placement, params)
    assert default_opset(q) == 21 and q.ir_version >= 10
    onnx.checker.check_model(q)
    weights = [t for t in q.graph.initializer if t.name.endswith("weight_quantized")]
    assert len(weights) == 3 and {t.data_type for t in weights} == {TensorProto.INT4}
    assert sqnr(run(model, data), run(q, data)) > 15  # 4-bit weights: coarser, still the same function


def test_smooth_quant_scales_fold_into_the_layer_norm():
    torch_model = build(TinyBlock)
    model = export_onnx(torch_model)
    data = calibration_data(torch_model)
    before = model.SerializeToString()
    results = {}
    for alpha in (None, -1.0):  # default SmoothQuant, and SmoothQuant off
        results[alpha] = nncompress.quantize(
            model,
            nncompress.Dataset(data),
            model_type=nncompress.ModelType.TRANSFORMER,
            advanced_parameters=AdvancedQuantizationParameters(show_progress=False, smooth_quant_alpha=alpha),
        )
    assert model.SerializeToString() == before
    gamma = numpy_helper.to_array(initializers(model)["ln.weight"])
    smoothed = numpy_helper.to_array(initializers(results[None])["ln.weight"])
    assert (
        not np.allclose(smoothed, gamma) and np.argmax(gamma / smoothed) == 3
    )  # the outlier channel shrank most
    assert np.allclose(numpy_helper.to_array(initializers(results[-1.0])["ln.weight"]), gamma)
    reference = run(model, data)
    assert sqnr(reference, run(results[None], data)) > sqnr(reference, run(results[-1.0], data)) + 3


def test_quantization_report_reads_the_placement_stored_in_the_model(conv_case):
    from nncompress.quantization.quantize import quantization_report

    model, _, q = conv_case
    report = quantization_report(q)
    assert "Quantizers: 5 on weights" in report
    with pytest.raises(QuantizationError, match="not produced by nncompress.quantize"):
        quantization_report(model)


def test_stat_requests_number_sets_the_items_in_flight(conv_case, monkeypatch):
    """NNCF's ``backend_params['stat_requests_number']``: 1 runs the statistics one item at a time
    (lowest peak memory), with the same result; a bad value is a ConfigError naming the key."""
    model, data, _ = conv_case
    seen = spy_workers(monkeypatch, onnx_adapter)
    one = quantize(model, data, backend_params={"stat_requests_number": 1})
    assert seen and set(seen) == {1}
    seen.clear()
    default = quantize(model, data)
    assert seen and set(seen) == {onnx_adapter.statistics_workers()}
    for a, b in zip(one.graph.initializer, default.graph.initializer, strict=True):
        assert a.name == b.name
        np.testing.assert_allclose(
            numpy_helper.to_array(a), numpy_helper.to_array(b), rtol=1e-5, err_msg=a.name
        )
    with pytest.raises(nncompress.errors.ConfigError, match="stat_requests_number"):
        quantize(model, data, backend_params={"stat_requests_number": 0})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_correction_accounts_for_padding_on_small_maps(seed, monkeypatch):
    from nncompress.quantization.algorithms import FastBiasCorrection, base

    # the first stage alone: the residual pass would take what is left at the last layer either way
    monkeypatch.setattr(FastBiasCorrection, "_correct_output_residual", lambda *args: None)
    torch_model = build(SmallMapConvs, seed)
    model = export_onnx(torch_model)  # static 4x4 maps: the graph knows where padding is read
    data = [d + 1.0 for d in calibration_data(torch_model, n=16, seed=seed)]
    ref = run(model, data)

    def residual_mean_shift() -> float:
        out = run(quantize(model, data), data)
        return float(np.abs((out - ref).mean(axis=(0, 2, 3))).max())

    padding_aware = residual_mean_shift()
    monkeypatch.setattr(base, "conv_tap_coverage", lambda *args: None)  # every tap counts fully
    taps_summed = residual_mean_shift()
    assert padding_aware < 0.6 * taps_summed
