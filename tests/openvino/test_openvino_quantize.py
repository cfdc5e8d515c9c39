"""OpenVINO backend end to end: ``nncompress.quantize(ov_model, dataset)`` -> an INT8 ov.Model."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import (
    MLP,
    ConcatNet,
    ConvNet,
    SeqMLP,
    TinyBlock,
    build,
    calibration_data,
    sqnr,
    to_openvino,
)

ov = pytest.importorskip("openvino")
import openvino.opset13 as ops  # noqa: E402

import nncompress  # noqa: E402
from nncompress.errors import NNCompressWarning  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.openvino.adapter import Adapter, placement_of  # noqa: E402
from nncompress.openvino.graph_builder import is_inserted  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402
from nncompress.quantization.spec import TargetPoint, TargetType  # noqa: E402
from nncompress.quantization.statistics import MAX, MEAN, MIN, request_for  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
INT8 = {"i8", "u8"}


def quantize(model, data, **advanced):
    return nncompress.quantize(
        model,
        nncompress.Dataset(data),
        subset_size=len(data) * 2,
        advanced_parameters=AdvancedQuantizationParameters(show_progress=False, **advanced),
    )


def run(model, data, config=None):
    compiled = ov.Core().compile_model(model, "CPU", config or {})
    return np.concatenate([compiled(d)[0] for d in data])


def snapshot(model):
    return [
        (op.get_friendly_name(), op.get_type_name(), str(op.get_output_partial_shape(0)))
        for op in model.get_ordered_ops()
    ]


def runtime_precisions(model):
    """{layer type: set of executed precisions} of the compiled model's weighted layers."""
    runtime = ov.Core().compile_model(model, "CPU").get_runtime_model()
    out: dict[str, set[str]] = {}
    for op in runtime.get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in ("Convolution", "FullyConnected", "MatMul"):
            out.setdefault(layer, set()).add(info["runtimePrecision"].astype(str))
    return out


def fake_quantize_before(op):
    """The FakeQuantize feeding ``op``'s input 0, looking through ops that only move values."""
    src = op.input(0).get_source_output().get_node()
    while src.get_type_name() in ("Reshape", "MaxPool", "Interpolate", "Transpose", "Gather"):
        src = src.input(0).get_source_output().get_node()
    return src if src.get_type_name() == "FakeQuantize" else None


@pytest.fixture(scope="module")
def conv_case():
    torch_model = build(ConvNet)
    model = to_openvino(torch_model)
    data = calibration_data(torch_model)
    before = snapshot(model)
    reference = run(model, data, F32)
    q = quantize(model, data)
    assert snapshot(model) == before  # the input model is not changed
    assert np.array_equal(run(model, data, F32), reference)
    return model, data, q


def test_conv_net_runs_in_int8_and_stays_accurate(conv_case):
    model, data, q = conv_case
    assert isinstance(q, ov.Model) and q is not model
    layers = [
        op
        for op in q.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    ]
    assert len(layers) == 5
    for op in layers:
        fq = fake_quantize_before(op)
        assert fq is not None and is_inserted(fq) and fq.get_attributes()["levels"] == 256, (
            op.get_friendly_name()
        )
        # weights: Constant(int8) -> Convert -> Multiply(scale), per output channel
        mul = op.input(1).get_source_output().get_node()
        assert mul.get_type_name() == "Multiply" and is_inserted(mul)
        convert = mul.input(0).get_source_output().get_node()
        const = convert.input(0).get_source_output().get_node()
        assert convert.get_type_name() == "Convert" and const.get_element_type() == ov.Type.i8
        scale = mul.input(1).get_source_output().get_node().get_data()
        assert (
            scale.size
            == op.get_output_partial_shape(0)[-1 if op.get_type_name() == "MatMul" else 1].get_length()
        )
    # the residual Add reads two quantized tensors
    add = next(op for op in q.get_ordered_ops() if op.get_friendly_name() == "aten::add/Add")
    assert all(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in add.inputs())
    precisions = runtime_precisions(q)
    assert precisions["Convolution"] <= INT8 and precisions["FullyConnected"] <= INT8
    assert sqnr(run(model, data, F32), run(q, data)) > 30
    odd_batch = [np.random.default_rng(5).standard_normal((5, 3, 16, 16)).astype(np.float32)]
    assert sqnr(run(model, odd_batch, F32), run(q, odd_batch)) > 30
    placement = placement_of(q)
    assert placement is not None and len(placement["points"]) == 5 + sum(
        op.get_type_name() == "FakeQuantize" for op in q.get_ordered_ops()
    )


def test_bias_correction_changed_the_bias_constants(conv_case):
    model, _, q = conv_case
    adapter = Adapter()
    graph = adapter.build_graph(model)
    changed = [
        n.name
        for n in graph.nodes
        if n.bias is not None
        and not np.allclose(adapter.get_bias(model, n.name), adapter.get_bias(q, n.name))
    ]
    assert changed


@pytest.mark.parametrize("cls", [MLP, SeqMLP, ConcatNet])
def test_other_models_quantize_accurately(cls):
    torch_model = build(cls)
    model = to_openvino(torch_model)
    data = calibration_data(torch_model)
    q = quantize(model, data)
    assert sqnr(run(model, data, F32), run(q, data)) > 25
    assert all(p <= INT8 for p in runtime_precisions(q).values())
    if cls is ConcatNet:  # concat inputs share one range
        concat = next(op for op in q.get_ordered_ops() if op.get_type_name() == "Concat")
        fqs = [i.get_source_output().get_node() for i in concat.inputs()]
        assert all(fq.get_type_name() == "FakeQuantize" for fq in fqs)
        ranges = {
            tuple(float(fq.input(k).get_source_output().get_node().get_data()) for k in (1, 2)) for fq in fqs
        }
        assert len(ranges) == 1


def test_fp16_compressed_model(tmp_path):
    torch_model = build(ConvNet)
    ov.save_model(to_openvino(torch_model), tmp_path / "m.xml", compress_to_fp16=True)
    model = ov.Core().read_model(tmp_path / "m.xml")
    data = calibration_data(torch_model, n=4)
    q = quantize(model, data)
    assert runtime_precisions(q)["Convolution"] <= INT8
    assert sqnr(run(model, data, F32), run(q, data)) > 30
    ov.save_model(q, tmp_path / "q.xml")
    assert sqnr(run(model, data, F32), run(ov.Core().read_model(tmp_path / "q.xml"), data)) > 30


def test_statistics_of_a_quantized_model_see_the_tensor_entering_the_fake_quantize(conv_case):
    model, data, q = conv_case
    adapter = Adapter()
    graph = adapter.build_graph(model)
    first_conv = graph.successors("x")[0].name
    target = TargetPoint(TargetType.INPUT, first_conv, 0)
    got = {}
    sinks = {request_for(target, r): (lambda v, r=r: got.setdefault(r, []).append(v)) for r in (MIN, MAX)}
    assert adapter.collect_statistics(q, iter(data), sinks) == len(data)
    assert np.allclose(got[MAX], [d.max() for d in data]) and np.allclose(got[MIN], [d.min() for d in data])


def test_many_statistics_of_a_quantized_model_at_once_are_right(conv_case):
    """The CPU plugin's INT8 execution returns wrong values for some extra outputs of a quantized
    model; statistics runs must give what each tensor holds (as when asked for alone)."""
    model, data, q = conv_case
    adapter = Adapter()
    graph = adapter.build_graph(model)
    targets = [
        TargetPoint(TargetType.OUTPUT, n.name, 0) for n in graph.nodes if n.kind in (K.CONVOLUTION, K.RELU)
    ]
    assert len(targets) >= 5

    def means(model, targets):
        got = {t: [] for t in targets}
        adapter.collect_statistics(
            model, iter(data), {request_for(t, MEAN, 1): got[t].append for t in targets}
        )
        return {t: np.mean(v, axis=0) for t, v in got.items()}

    together = means(q, targets)
    float_means = means(model, targets)
    for t in targets:
        assert np.allclose(together[t], means(q, [t])[t], atol=1e-6), t
        assert np.allclose(together[t], float_means[t], atol=0.02), t


def test_quantized_output_keeps_its_tensor_names():
    torch_model = build(MLP)
    model = to_openvino(torch_model)
    model.outputs[0].get_tensor().set_names({"logits"})
    data = calibration_data(torch_model)
    q = quantize(model, data, quantize_outputs=True)
    result = q.get_results()[0]
    assert result.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize"
    assert "logits" in q.outputs[0].get_names()
    compiled = ov.Core().compile_model(q, "CPU")
    assert compiled(data[0])["logits"].shape == (2, 8)


def test_unknown_ops_stay_float_and_integer_inputs_are_not_quantized():
    rng = np.random.default_rng(0)
    x = ops.parameter([-1, 8], np.float32, name="x")
    idx = ops.parameter([3], np.int64, name="idx")
    h = ops.matmul(x, ops.constant(rng.standard_normal((16, 8)).astype(np.float32)), False, True)
    axes = ops.constant(np.array([1], np.int64))
    back = ops.irdft(ops.rdft(h, axes), axes, ops.constant(np.array([16], np.int64)))
    back.set_friendly_name("inverse")
    picked = ops.gather(ops.add(h, back), idx, ops.constant(np.int64(1)))
    y = ops.matmul(picked, ops.constant(rng.standard_normal((4, 3)).astype(np.float32)), False, True)
    model = ov.Model([y], [x, idx])
    data = [(rng.standard_normal((2, 8)).astype(np.float32), np.array([0, 5, 9])) for _ in range(4)]
    with pytest.warns(NNCompressWarning, match=r"\(RDFT\).*'inverse' \(IRDFT\)"):
        q = quantize(model, data)
    fq_inputs = {
        op.input(0).get_source_output().get_node().get_friendly_name()
        for op in q.get_ordered_ops()
        if op.get_type_name() == "FakeQuantize"
    }
    assert "idx" not in fq_inputs and "x" in fq_inputs
    inverse = next(op for op in q.get_ordered_ops() if op.get_friendly_name() == "inverse")
    assert inverse.input(0).get_source_output().get_node().get_type_name() == "RDFT"  # left in float
    last = q.get_results()[0].input(0).get_source_output().get_node()
    assert fake_quantize_before(last) is not None  # the MatMul after them is quantized
    compiled_fp = ov.Core().compile_model(model, "CPU", F32)
    compiled_q = ov.Core().compile_model(q, "CPU")
    for item in data:
        assert sqnr(compiled_fp(list(item))[0], compiled_q(list(item))[0]) > 20


def test_calibration_items_may_be_torch_tensors_tuples_or_dicts():
    torch = pytest.importorskip("torch")
    torch_model = build(MLP)
    model = to_openvino(torch_model)
    name = next(iter(model.inputs[0].get_names()))
    data = calibration_data(torch_model, n=4)
    reference = run(model, data, F32)
    for items in (
        [torch.from_numpy(d) for d in data],
        [(d,) for d in data],
        [{name: d.astype(np.float64)} for d in data],
    ):
        assert sqnr(reference, run(quantize(model, items), data)) > 25


def test_smooth_quant_scales_fold_into_the_layer_norm_gamma():
    torch_model = build(TinyBlock)
    model = to_openvino(torch_model)
    data = calibration_data(torch_model)
    reference = run(model, data, F32)
    gammas = {}
    scores = {}
    for alpha in (None, -1.0):  # default SmoothQuant, and SmoothQuant off
        q = nncompress.quantize(
            model,
            nncompress.Dataset(data),
            model_type=nncompress.ModelType.TRANSFORMER,
            advanced_parameters=AdvancedQuantizationParameters(show_progress=False, smooth_quant_alpha=alpha),
        )
        mvn = next(op for op in q.get_ordered_ops() if op.get_type_name() == "MVN")
        mul = next(iter(mvn.output(0).get_target_inputs())).get_node()
        gammas[alpha] = next(
            i.get_source_output().get_node().get_data()
            for i in mul.inputs()
            if i.get_source_output().get_node().get_type_name() == "Constant"
        ).ravel()
        scores[alpha] = sqnr(reference, run(q, data))
    assert np.array_equal(run(model, data, F32), reference)  # the input model is not changed
    assert np.argmax(gammas[-1.0] / gammas[None]) == 3  # the outlier channel shrank most
    assert scores[None] > scores[-1.0] + 3
