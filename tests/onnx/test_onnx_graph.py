"""ONNX graph builder: names, op kinds, weights, biases, shapes, unknown ops."""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import ConvNet, SeqMLP, build, export_onnx

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nncompress.errors import NNCompressWarning  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.onnx.graph_builder import build_graph, index_model  # noqa: E402


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *domains])


def _init(name, shape, seed=0):
    return numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name
    )


def test_conv_net_nodes_weights_biases_and_shapes():
    model = export_onnx(build(ConvNet))
    graph = build_graph(model)
    onnx_names = [n.name for n in model.graph.node]
    op_nodes = [n.name for n in graph.nodes if n.kind not in (K.INPUT, K.OUTPUT, K.CONSTANT)]
    assert op_nodes == onnx_names  # ONNX node names, in order
    assert graph.node("x").kind == K.INPUT and graph.node("y").kind == K.OUTPUT

    convs = graph.nodes_of_kind(K.CONVOLUTION, K.DEPTHWISE_CONVOLUTION)
    assert [n.kind for n in convs] == [K.CONVOLUTION, K.CONVOLUTION, K.DEPTHWISE_CONVOLUTION, K.CONVOLUTION]
    inits = {t.name: t for t in model.graph.initializer}
    for node in convs:
        w = node.weights[1]
        assert w.name in inits and w.shape == tuple(inits[w.name].dims)
        assert (w.out_channel_axis, w.in_channel_axis) == (0, 1)
        assert node.bias in inits  # BN folded into the conv: every conv has a bias
    assert graph.node("/dw/Conv").attrs["groups"] == 8

    fc = graph.node("/fc/Gemm")
    assert fc.kind == K.MATMUL and fc.weights[1].name == "fc.weight" and fc.bias == "fc.bias"
    assert (fc.weights[1].out_channel_axis, fc.weights[1].in_channel_axis) == (0, 1)  # transB=1

    # weights are not edges; activations are, with the dynamic batch as None
    first = graph.in_edges("/conv1/Conv")
    assert [(e.src, e.dst_port) for e in first] == [("x", 0)]
    assert first[0].tensor.shape == (None, 3, 16, 16) and first[0].tensor.dtype == "float32"
    assert graph.in_edges("y")[0].tensor.shape == (None, 10)


def test_matmul_with_bias_add_and_gemm_without_transpose():
    model = export_onnx(build(SeqMLP))
    graph = build_graph(model)
    matmuls = graph.nodes_of_kind(K.MATMUL)
    assert len(matmuls) == 2
    assert [n.weights[1].shape for n in matmuls] == [(16, 32), (32, 16)]  # stored as [in, out]
    for node in matmuls:
        w = node.weights[1]
        assert (w.out_channel_axis, w.in_channel_axis) == (1, 0)
        add = graph.successors(node.name)[0]
        assert add.kind == K.ADD
        const = [e.src for e in graph.in_edges(add.name) if graph.node(e.src).kind == K.CONSTANT]
        assert const == [node.bias]  # the bias is the Add's constant

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", beta=0.5)
    g = build_graph(_model([gemm], [x], [y], [_init("w", (4, 3)), _init("b", (3,))]))
    w = g.node("gemm").weights[1]
    assert (w.out_channel_axis, w.in_channel_axis) == (1, 0) and g.node("gemm").bias == "b"


def test_constant_op_weights_unnamed_nodes_and_kinds():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "wc")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=w),
        helper.make_node("Conv", ["x", "wc"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Relu", ["r"], ["r2"], name="Relu_1"),  # collides with a generated name
        helper.make_node("Resize", ["r2", "", "scales"], ["up"], mode="linear"),
        helper.make_node("LayerNormalization", ["up", "gamma"], ["ln"], axis=-1),
        helper.make_node("Shape", ["ln"], ["s"]),
        helper.make_node("Reshape", ["ln", "s"], ["y"]),
    ]
    model = _model(nodes, [x], [y], [scales, _init("gamma", (16,))])
    graph = build_graph(model)
    names = index_model(model).node_names
    assert names == [
        "Constant_0",
        "Conv_1",
        "Relu_2",
        "Relu_1",
        "Resize_4",
        "LayerNormalization_5",
        "Shape_6",
        "Reshape_7",
    ]
    conv = graph.node("Conv_1")
    assert conv.weights[1].name == "wc" and conv.weights[1].shape == (4, 3, 1, 1)
    assert "Constant_0" not in graph  # a Constant read only as a weight is folded into it
    assert graph.node("Resize_4").kind == K.INTERPOLATE and graph.node("Resize_4").attrs["mode"] == "linear"
    assert graph.node("LayerNormalization_5").kind == K.LAYER_NORM
    assert graph.node("Shape_6").kind == K.SHAPE_OF
    assert graph.node("scales").kind == K.CONSTANT  # an initializer at a non-weight port is a node
    assert graph.in_edges("Reshape_7")[1].tensor.dtype == "int64"


def test_unknown_ops_and_subgraphs_are_unknown_with_a_warning():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Foo", ["x"], ["a"], name="foo", domain="my.ops"),
        helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    model = _model(nodes, [x, flag], [y], domains=[helper.make_opsetid("my.ops", 1)])
    with pytest.warns(NNCompressWarning) as record:
        graph = build_graph(model)
    text = " ".join(str(w.message) for w in record)
    assert "my.ops::Foo (foo)" in text and "subgraph not quantized" in text and "branch" in text
    assert graph.node("foo").kind == K.UNKNOWN and graph.node("branch").kind == K.UNKNOWN
    # the tensor read inside the branches is an edge into the If node
    assert ("foo", 0) in {(e.src, e.src_port) for e in graph.in_edges("branch")}
    assert graph.in_edges("branch")[0].tensor.dtype == "bool"
