"""OpenVINO graph builder: friendly names, op kinds, weights behind decompression chains, biases."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import ConvNet, build, to_openvino

ov = pytest.importorskip("openvino")
import openvino.opset13 as ops  # noqa: E402

from nncompress.errors import NNCompressWarning  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.openvino.adapter import Adapter  # noqa: E402
from nncompress.openvino.graph_builder import build_graph  # noqa: E402


def _const(shape, seed=0):
    return ops.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_conv_net_names_kinds_weights_and_biases():
    model = to_openvino(build(ConvNet))
    graph = build_graph(model)
    friendly = {op.get_friendly_name() for op in model.get_ordered_ops()}
    assert all(n.name in friendly for n in graph.nodes)
    convs = graph.nodes_of_kind(K.CONVOLUTION, K.DEPTHWISE_CONVOLUTION)
    assert [n.kind for n in convs] == [K.CONVOLUTION, K.CONVOLUTION, K.DEPTHWISE_CONVOLUTION, K.CONVOLUTION]
    for node in convs:
        ((port, w),) = node.weights.items()
        assert port == 1 and (w.out_channel_axis, w.in_channel_axis) == (0, 1)
        assert w.name not in graph  # the weight constant is not a graph node
        # the bias is the constant of the Add that follows the convolution
        add = graph.successors(node.name)[0]
        assert add.kind == K.ADD and node.bias in {e.src for e in graph.in_edges(add.name)}
        assert graph.node(node.bias).kind == K.CONSTANT
    dw = graph.nodes_of_kind(K.DEPTHWISE_CONVOLUTION)[0]
    assert (
        dw.op_type == "GroupConvolution" and dw.weights[1].shape == (8, 1, 3, 3) and dw.attrs["groups"] == 8
    )
    fc = graph.nodes_of_kind(K.MATMUL)[0]
    assert fc.weights[1].shape == (10, 16) and (
        fc.weights[1].out_channel_axis,
        fc.weights[1].in_channel_axis,
    ) == (0, 1)
    first = graph.in_edges(convs[0].name)
    assert first[0].src == "x" and first[0].tensor.shape == (None, 3, None, None)


def test_group_convolution_weights_have_the_logical_layout():
    x = ops.parameter([-1, 8, 6, 6], np.float32, name="x")
    conv = ops.group_convolution(x, _const((2, 3, 4, 3, 3)), [1, 1], [1, 1], [1, 1], [1, 1])
    conv.set_friendly_name("gconv")
    model = ov.Model([ops.relu(conv)], [x])
    adapter = Adapter()
    graph = adapter.build_graph(model)
    node = graph.node("gconv")
    assert node.kind == K.GROUP_CONVOLUTION and node.attrs["groups"] == 2
    assert node.weights[1].shape == (6, 4, 3, 3) and node.attrs["out_channels"] == 6
    w = adapter.get_weight(model, "gconv", 1)
    assert w.shape == (6, 4, 3, 3)
    assert np.array_equal(
        w[3:], conv.input(1).get_source_output().get_node().get_data()[1].reshape(3, 4, 3, 3)
    )


def test_fp16_compressed_weights_and_biases(tmp_path):
    model = to_openvino(build(ConvNet))
    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=True)
    fp16 = ov.Core().read_model(tmp_path / "m.xml")
    graph = build_graph(fp16)
    fc = graph.nodes_of_kind(K.MATMUL)[0]
    assert fc.weights[1].dtype == "float32" and fc.weights[1].name.endswith("_compressed")
    assert all(n.name != fc.weights[1].name for n in graph.nodes)  # Constant -> Convert chain folded
    adapter = Adapter()
    adapter.build_graph(fp16)
    bias = adapter.get_bias(fp16, fc.name)
    assert bias.dtype == np.float16 and bias.size == 10
    adapter.set_bias(fp16, fc.name, bias.astype(np.float32) + 1)
    assert np.allclose(adapter.get_bias(fp16, fc.name), bias.astype(np.float32) + 1, atol=1e-2)
    assert np.allclose(adapter.get_weight(fp16, fc.name, 1), adapter.get_weight(model, fc.name, 1), atol=1e-2)


def test_matmul_layouts_and_embedding():
    x = ops.parameter([-1, 8], np.float32, name="x")
    ids = ops.parameter([-1], np.int64, name="ids")
    mm = ops.matmul(x, _const((8, 5)), False, False)
    mm.set_friendly_name("mm")
    emb = ops.gather(_const((20, 5), 1), ids, ops.constant(np.int64(0)))
    emb.set_friendly_name("emb")
    model = ov.Model([ops.add(mm, emb)], [x, ids])
    graph = build_graph(model)
    w = graph.node("mm").weights[1]
    assert w.shape == (8, 5) and (w.out_channel_axis, w.in_channel_axis) == (1, 0)
    assert graph.node("emb").kind == K.EMBEDDING and graph.node("emb").weights[0].shape == (20, 5)
    assert [e.tensor.dtype for e in graph.in_edges("emb")] == ["int64", "int64"]


def test_unknown_ops_and_bodies_warn(tmp_path):
    x = ops.parameter([-1, 8], np.float32, name="x")
    spectrum = ops.rdft(x, ops.constant(np.array([1], np.int64)))
    back = ops.irdft(spectrum, ops.constant(np.array([1], np.int64)), ops.constant(np.array([8], np.int64)))
    back.set_friendly_name("inverse")
    model = ov.Model([back], [x])
    with pytest.warns(NNCompressWarning, match=r"unknown to nncompress.*IRDFT \(inverse\)"):
        graph = build_graph(model)
    assert graph.node("inverse").kind == K.UNKNOWN

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    branch = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])
    then_g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "then", [], [branch])
    else_g = helper.make_graph([helper.make_node("Neg", ["a"], ["b"])], "else", [], [branch])
    graph_proto = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then_g, else_branch=else_g)],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(
        helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "if.onnx"
    )
    with pytest.warns(NNCompressWarning, match="subgraph not quantized"):
        graph = build_graph(ov.convert_model(tmp_path / "if.onnx"))
    assert graph.nodes_of_kind(K.UNKNOWN)
