"""Statistics reduced inside the OpenVINO model equal ``statistics.reduce_batch`` on the whole
tensor, and fast bias correction reads its output means after the bias Add."""

import numpy as np
import pytest
from backend_models import ConvNet, SeqMLP, build, calibration_data, to_openvino

from nncompress.graph import op_kinds as K
from nncompress.openvino import adapter as ov_adapter
from nncompress.openvino.adapter import Adapter
from nncompress.quantization.algorithms.fast_bias_correction import output_statistic_target
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.quantization.statistics import ABS_MAX, MAX, MEAN, MIN, QUANTILE, RAW, request_for


def _requests(graph):
    out = []
    for n in graph.nodes:
        if n.kind not in (K.CONVOLUTION, K.RELU, K.MATMUL, K.ADD):
            continue
        tp = TargetPoint(TargetType.OUTPUT, n.name, 0)
        for reducer in (MIN, MAX, ABS_MAX, MEAN):
            for keep in (None, 1, -1):
                out.append(request_for(tp, reducer, keep))
        out.append(request_for(tp, QUANTILE, None, (0.1, 0.9)))  # stays in numpy
        out.append(request_for(tp, RAW, 1))
    return out


def _collect(model, data, requests):
    got = {r: [] for r in requests}
    adapter = Adapter()
    adapter.build_graph(model)
    assert adapter.collect_statistics(model, iter(data), {r: got[r].append for r in requests}) == len(data)
    return got


@pytest.mark.parametrize("cls", [ConvNet, SeqMLP])
def test_in_graph_reductions_equal_numpy(cls, monkeypatch):
    """Reductions of static shape come back packed in one output, the others (the test IRs have
    dynamic batch and spatial or sequence sizes) one output each: all equal numpy's."""
    model = to_openvino(build(cls))
    data = calibration_data(build(cls), n=3, batch=2)
    requests = _requests(Adapter().build_graph(model))
    packs = []
    real_pack = ov_adapter._pack

    def spy(reductions):
        packed, slices, alone = real_pack(reductions)
        packs.append((len(slices), len(alone)))
        return packed, slices, alone

    monkeypatch.setattr(ov_adapter, "_pack", spy)
    in_graph = _collect(model, data, requests)
    assert packs and packs[0][0] > 0 and packs[0][1] > 0  # both paths taken
    monkeypatch.setattr(ov_adapter, "_in_graph_axes", lambda out, req: None)
    reference = _collect(model, data, requests)
    for r in requests:
        assert len(in_graph[r]) == len(reference[r]) == len(data), r
        for a, b in zip(in_graph[r], reference[r]):
            assert np.shape(a) == np.shape(b), r
            if r.reducer == MEAN:  # OpenVINO accumulates the mean in f32
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(r))
            else:
                np.testing.assert_array_equal(a, b, err_msg=str(r))


def test_bias_correction_reads_the_output_after_the_bias_add():
    model = to_openvino(build(ConvNet))
    graph = Adapter().build_graph(model)
    biased = [n for n in graph.nodes if n.has_weights and n.bias is not None]
    assert biased
    for node in biased:
        tp = output_statistic_target(graph, node)
        assert tp.node != node.name, node.name  # Convolution/MatMul -> Add(bias) in OpenVINO
        assert graph.node(tp.node).op_type == "Add"
        assert {e.src for e in graph.in_edges(tp.node)} == {node.name, node.bias}
    # the shift fp - q is the same measured before or after the (shared) bias
    data = calibration_data(build(ConvNet), n=2, batch=2)
    node = biased[0]
    before, after = TargetPoint(TargetType.OUTPUT, node.name, 0), output_statistic_target(graph, node)
    got = _collect(model, data, [request_for(before, MEAN, 1), request_for(after, MEAN, 1)])
    bias = Adapter().get_bias(model, node.name).ravel()
    for a, b in zip(got[request_for(before, MEAN, 1)], got[request_for(after, MEAN, 1)]):
        np.testing.assert_allclose(a + bias, b, rtol=1e-5, atol=1e-5)


def test_two_pass_collection_prepares_both_models_before_running_and_gives_the_same_values(monkeypatch):
    """A collector with a companion over the first items runs two statistics models: the
    OpenVINO adapter prepares (and compiles) both before the first item runs; the values equal
    those of the plain ``collect_statistics`` path."""
    from nncompress.quantization.statistics import MAX_OF_MAX, MEAN_OF_MEAN, MIN_OF_MIN, StatisticsCollector

    model = to_openvino(build(ConvNet))
    data = calibration_data(build(ConvNet), n=5, batch=2)
    graph = Adapter().build_graph(model)
    targets = [TargetPoint(TargetType.OUTPUT, n.name, 0) for n in graph.nodes if n.kind == K.CONVOLUTION]

    class Plain(Adapter):
        prepare_statistics = None  # StatisticsCollector.collect falls back to collect_statistics

        def collect_statistics(self, model, inputs, sinks):
            return Adapter.prepare_statistics(self, model, sinks)(inputs)  # one model at a time

    def run(adapter):
        main, early = StatisticsCollector(), StatisticsCollector()
        keys = [main.add(t, spec, None) for t in targets for spec in (MIN_OF_MIN, MAX_OF_MAX)]
        means = [early.add(t, MEAN_OF_MEAN, 1) for t in targets]
        assert main.collect(adapter, model, iter(data), companions=[(early, 2)]) == len(data)
        return [main.result(k) for k in keys] + [early.result(k) for k in means]

    events = []
    real_prepare, real_infer = Adapter.prepare_statistics, ov_adapter.infer_item
    monkeypatch.setattr(
        Adapter, "prepare_statistics", lambda self, m, s: events.append("prepare") or real_prepare(self, m, s)
    )
    monkeypatch.setattr(
        ov_adapter, "infer_item", lambda *a, **k: events.append("infer") or real_infer(*a, **k)
    )
    prepared = run(Adapter())
    assert events[:3] == ["prepare", "prepare", "infer"] and events.count("prepare") == 2
    events.clear()
    plain = run(Plain())
    assert events == ["prepare", "infer", "infer", "prepare", "infer", "infer", "infer"]
    for a, b in zip(prepared, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_statistics_pass_runs_only_what_its_statistics_need(monkeypatch):
    """The statistics model holds the statistics' results only: the ops no statistic depends on
    (everything after the first convolution here) are not compiled nor run; same values."""
    model = to_openvino(build(ConvNet))
    data = calibration_data(build(ConvNet), n=3, batch=2)
    graph = Adapter().build_graph(model)
    first_conv = next(n.name for n in graph.nodes if n.kind == K.CONVOLUTION)
    request = request_for(TargetPoint(TargetType.OUTPUT, first_conv, 0), MEAN, 1)
    compiled = []
    real_core = ov_adapter.core

    class Spy:
        def compile_model(self, run_model, *args):
            compiled.append(len(run_model.get_ops()))
            return real_core().compile_model(run_model, *args)

    monkeypatch.setattr(ov_adapter, "core", Spy)
    pruned = _collect(model, data, [request])[request]
    assert compiled and compiled[0] < len(model.get_ops()) // 2
    monkeypatch.setattr(ov_adapter, "core", real_core)
    raw = request_for(request.target, RAW, 1)
    for a, whole in zip(pruned, _collect(model, data, [raw])[raw], strict=True):
        np.testing.assert_allclose(a, np.asarray(whole).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
