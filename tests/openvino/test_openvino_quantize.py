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
    spy_workers,
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


def test_stat_requests_number_sets_the_cpu_streams_and_not_the_result(conv_case, monkeypatch):
    """NNCF's ``backend_params['stat_requests_number']``: 1 runs the statistics one item at a time
    on one CPU stream; the default runs two at a time on two streams and gives the same model,
    bit for bit (the items are handed back in order)."""
    from nncompress.openvino import adapter as ov_adapter

    model, data, default = conv_case
    seen = spy_workers(monkeypatch, ov_adapter)
    real_compile = ov.Core.compile_model
    streams = []

    def spy_compile(self, m, device="CPU", config=None):
        streams.append((config or {}).get("NUM_STREAMS", 1))
        return real_compile(self, m, device, config or {})

    monkeypatch.setattr(ov.Core, "compile_model", spy_compile)
    one = quantize(model, data, backend_params={"stat_requests_number": 1})
    assert seen and set(seen) == {1} and set(streams) == {1}
    seen.clear()
    streams.clear()
    two = quantize(model, data, backend_params={"stat_requests_number": 2})
    assert seen and set(seen) == {2} and set(streams) == {2}
    for q in (one, two):
        constants = [op.get_data() for op in q.get_ordered_ops() if op.get_type_name() == "Constant"]
        expected = [op.get_data() for op in default.get_ordered_ops() if op.get_type_name() == "Constant"]
        assert len(constants) == len(expected)
        for a, b in zip(constants, expected):
            assert np.array_equal(a, b)


def test_statistics_of_a_model_with_its_own_int8_weights_run_on_one_stream(monkeypatch):
    """Integer weights the model decompresses itself (not ours, which statistics fold to f32)
    make the statistics pass run one item at a time: with two CPU streams the plugin gave
    wrong outputs for int8 decompression when the machine was loaded."""
    from nncompress.openvino import adapter as ov_adapter

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(3, 4)).astype(np.int8)
    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    weight = ops.multiply(ops.convert(ops.constant(w), ov.Type.f32), ops.constant(np.float32(0.01)))
    y = ops.matmul(x, weight, False, True)
    model = ov.Model([y], [x], "int8_weights")
    seen = spy_workers(monkeypatch, ov_adapter)
    data = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(4)]
    got = []
    target = TargetPoint(TargetType.OUTPUT, y.get_friendly_name(), 0)
    adapter = Adapter(stat_requests_number=2)
    assert adapter.collect_statistics(model, iter(data), {request_for(target, MAX): got.append}) == 4
    assert seen == [1]
    expected = [float((d @ (w.astype(np.float32) * np.float32(0.01)).T).max()) for d in data]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def _accumulator():
    """``y = x @ W + state; state <- y``: a stateful model (ReadValue/Assign)."""
    import openvino.opset6 as op6
    from openvino.op.util import Variable, VariableInfo

    info = VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1, 4]), ov.Type.f32, "acc"
    variable = Variable(info)
    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    w = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)
    y = ops.add(
        ops.matmul(x, ops.constant(w), False, False),
        op6.read_value(ops.constant(np.zeros((1, 4), np.float32)), variable),
    )
    y.set_friendly_name("acc")
    return ov.Model([ops.result(y)], [op6.assign(y, variable)], [x], "accumulator"), w, y


def test_stateful_model_items_start_from_the_initial_state_unless_they_say_otherwise():
    """As NNCF: each item starts from the initial state; a dict item with
    ``nncf_reset_state=False`` carries the previous item's state on, ``True`` resets it."""
    from nncompress.definitions import NNCF_DATASET_RESET_STATE_KEY as RESET

    model, w, y = _accumulator()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(4)]
    target = TargetPoint(TargetType.OUTPUT, y.get_friendly_name(), 0)

    def maxima(items):
        got = []
        assert Adapter().collect_statistics(model, iter(items), {request_for(target, MAX): got.append}) == 4
        return np.array(got)

    alone = np.array([float((x @ w).max()) for x in xs])
    np.testing.assert_allclose(maxima(xs), alone, rtol=1e-5)
    carried = [{"x": xs[0], RESET: True}] + [{"x": x, RESET: False} for x in xs[1:]]
    running = np.array([float((sum(xs[: i + 1]) @ w).max()) for i in range(4)])
    np.testing.assert_allclose(maxima(carried), running, rtol=1e-5)
    q = quantize(model, xs)
    assert len(q.get_sinks()) == 1 and any(op.get_type_name() == "FakeQuantize" for op in q.get_ordered_ops())
    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    stateless = ov.Model([ops.result(ops.relu(x))], [x], "stateless")
    with pytest.raises(nncompress.errors.DatasetError, match="item 0 sets nncf_reset_state=True.*no state"):
        Adapter().collect_statistics(stateless, iter([{"x": xs[0], RESET: True}]), {})
