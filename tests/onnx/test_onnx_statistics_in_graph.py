"""Statistics reduced inside the ONNX graph equal ``statistics.reduce_batch`` on the whole tensor."""

import numpy as np
import onnx
import pytest
from backend_models import ConvNet, SeqMLP, build, calibration_data, export_onnx

from nncompress.graph import op_kinds as K
from nncompress.onnx import adapter as onnx_adapter
from nncompress.onnx.adapter import Adapter
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.quantization.statistics import ABS_MAX, MAX, MEAN, MIN, QUANTILE, request_for


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
    inp = TargetPoint(
        TargetType.INPUT,
        next(n.name for n in graph.nodes if n.kind == K.CONVOLUTION or n.kind == K.MATMUL),
        0,
    )
    out.append(request_for(inp, MAX, None))  # a graph input: read from the feed
    return out


def _collect(model, data, requests):
    got = {r: [] for r in requests}
    adapter = Adapter()
    adapter.build_graph(model)
    n = adapter.collect_statistics(model, iter(data), {r: got[r].append for r in requests})
    assert n == len(data)
    return got


@pytest.mark.parametrize("cls,opset", [(ConvNet, 17), (ConvNet, 18), (SeqMLP, 17)])
def test_in_graph_reductions_equal_numpy(cls, opset, monkeypatch):
    model = export_onnx(build(cls), opset=opset)
    data = calibration_data(build(cls), n=3, batch=2)
    graph = Adapter().build_graph(model)
    requests = _requests(graph)
    in_graph = _collect(model, data, requests)
    # the reference: every tensor fetched whole and reduced by reduce_batch
    monkeypatch.setattr(onnx_adapter, "_add_reductions", lambda m, b, s: onnx_adapter._Reductions({}, set()))
    reference = _collect(model, data, requests)
    for r in requests:
        assert len(in_graph[r]) == len(reference[r]) == len(data), r
        for a, b in zip(in_graph[r], reference[r]):
            assert np.shape(a) == np.shape(b), r
            if r.reducer == MEAN:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(r))  # f32 accumulation
            else:
                np.testing.assert_array_equal(a, b, err_msg=str(r))


def test_reduce_nodes_are_added_once_per_tensor_reducer_and_axes():
    model = export_onnx(build(ConvNet), opset=17)
    adapter = Adapter()
    graph = adapter.build_graph(model)
    conv = next(n for n in graph.nodes if n.kind == K.CONVOLUTION)
    tp = TargetPoint(TargetType.OUTPUT, conv.name, 0)
    tensor = onnx_adapter.target_tensor(onnx_adapter.index_model(model), tp)
    sinks = [lambda v: None for _ in range(5)]
    reqs = [
        (request_for(tp, MIN, 1), sinks[0]),
        (request_for(tp, MIN, -3), sinks[1]),  # the same axes as keep_axis 1 on a 4-D tensor
        (request_for(tp, ABS_MAX, None), sinks[2]),
        (request_for(tp, QUANTILE, None, (0.5,)), sinks[3]),
        (request_for(tp, MEAN, 7), sinks[4]),  # out of range: left to numpy, which names the axis
    ]
    run = onnx.ModelProto()
    run.CopyFrom(model)
    done = onnx_adapter._add_reductions(run, {tensor: reqs}, set())
    # MIN over (0, 2, 3) serves two requests; ABS_MAX over everything is max(-min, max) of a
    # ReduceMin and a ReduceMax over all axes (no Abs copy of the tensor)
    assert len(done.sinks) == 3
    assert sorted(len(v) for v in done.sinks.values()) == [0, 0, 2]
    assert len(done.abs_max) == 1 and done.abs_max[0][2] is sinks[2]
    assert {r.reducer for _, r in done.requests} == {MIN, ABS_MAX}
    added = [n.op_type for n in run.graph.node[len(model.graph.node) :]]
    assert sorted(added) == ["ReduceMax", "ReduceMin", "ReduceMin"]
    onnx.checker.check_model(run)
    # the abs-max sink gets max |x| from the two reductions
    got = []
    done.abs_max[0] = (*done.abs_max[0][:2], got.append)
    lo, hi = done.abs_max[0][:2]
    done.feed({**{k: np.zeros(1) for k in done.sinks}, lo: np.float32(-3.5), hi: np.float32(2.0)})
    assert got == [np.float32(3.5)]


def test_a_statistics_pass_runs_only_what_its_statistics_need(monkeypatch):
    """ONNX Runtime runs every node of a graph whatever is fetched: the statistics copy keeps
    only the nodes (and initializers) the statistics depend on, with the same values."""
    model = export_onnx(build(ConvNet))
    data = calibration_data(build(ConvNet), n=3, batch=2)
    graph = Adapter().build_graph(model)
    first_conv = next(n.name for n in graph.nodes if n.kind == K.CONVOLUTION)
    request = request_for(TargetPoint(TargetType.OUTPUT, first_conv, 0), MEAN, 1)
    sessions = []
    real = onnx_adapter.inference_session

    def spy(run_model, *args, **kwargs):
        sessions.append(onnx.ModelProto.FromString(run_model.SerializeToString()))
        return real(run_model, *args, **kwargs)

    monkeypatch.setattr(onnx_adapter, "inference_session", spy)
    pruned = _collect(model, data, [request])[request]
    (run_model,) = sessions
    assert len(run_model.graph.node) < len(model.graph.node) // 2
    assert [i.name for i in run_model.graph.input] == [i.name for i in model.graph.input]
    used = {t for n in run_model.graph.node for t in n.input}
    assert {t.name for t in run_model.graph.initializer} <= used

    def unpruned(m, outputs):  # the statistics added as outputs, the whole model kept
        present = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in outputs if t not in present)

    monkeypatch.setattr(onnx_adapter, "_outputs_only", unpruned)
    whole = _collect(model, data, [request])[request]
    for a, b in zip(pruned, whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pruning_keeps_what_an_if_branch_reads_from_outside():
    """A tensor read only inside an If branch (outer scope) keeps its producer."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    then = helper.make_graph(
        [helper.make_node("Identity", ["outer"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["outer"], name="producer"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other),
        helper.make_node("Sigmoid", ["x"], ["unused"], name="dead"),
    ]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y", "unused")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, cond], out))
    onnx_adapter._outputs_only(model, ["y"])
    assert [n.name for n in model.graph.node] == ["producer", "if"]
    assert [o.name for o in model.graph.output] == ["y"]
