"""Keras models -> backend-neutral Graph: kinds, weights, fused activations, nesting, refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)

import keras  # noqa: E402
from tf_models import digits_cnn, mobilenet_like, resnet_like  # noqa: E402

from nncompress.backends import detect_backend, get_adapter  # noqa: E402
from nncompress.errors import GraphError, NNCompressWarning  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.tensorflow import build_graph  # noqa: E402


def kinds(graph):
    return {n.name: n.kind for n in graph.nodes}


def test_resnet_like_graph_has_layers_as_nodes_and_edges_as_in_keras():
    g = build_graph(resnet_like())
    k = kinds(g)
    assert k["image"] == K.INPUT and k["output_0"] == K.OUTPUT
    assert k["b1_conv1"] == K.CONVOLUTION and k["b1_bn1"] == K.BATCH_NORM and k["b1_relu1"] == K.RELU
    assert k["b2_add"] == K.ADD and k["pool"] == K.ADAPTIVE_AVG_POOL and k["fc"] == K.MATMUL
    # the fused activation of the stem is its own node, after the convolution
    assert k["stem/relu"] == K.RELU
    assert [e.src for e in g.in_edges("stem/relu")] == ["stem"]
    assert [e.src for e in g.in_edges("b1_conv1")] == ["stem/relu"]
    # residual add: both branches, in call order
    assert [e.src for e in g.in_edges("b2_add")] == ["b2_bn2", "b2_proj"]
    assert [n.name for n in g.topological_order()][0] == "image"
    edge = g.in_edges("b1_conv1")[0]
    assert edge.tensor.shape == (None, 16, 16, 8) and edge.tensor.dtype == "float32"


def test_weights_biases_and_conv_attributes():
    g = build_graph(mobilenet_like())
    stem = g.node("stem")
    (port, w) = next(iter(stem.weights.items()))
    assert port == 1 and w.shape == (3, 3, 3, 8) and w.out_channel_axis == 3 and w.in_channel_axis == 2
    assert stem.bias is None and stem.attrs["channel_axis"] == -1
    assert stem.attrs["in_channels"] == 3 and stem.attrs["out_channels"] == 8
    dw = g.node("ir0_dw")
    assert dw.kind == K.DEPTHWISE_CONVOLUTION
    assert dw.weights[1].shape == (3, 3, 1, 16)  # [k, k, C_in, M] seen as [k, k, 1, C_in * M]
    assert dw.attrs["groups"] == 16 and dw.attrs["in_channels"] == 16 and dw.attrs["out_channels"] == 16
    assert g.node("stem_relu6").kind == K.CLAMP
    fc = g.node("fc")
    assert fc.weights[1].shape == (12, 10) and fc.weights[1].out_channel_axis == 1
    assert fc.bias == "fc/bias"


def test_sequential_and_nested_models_are_flattened():
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(4, name="d2"),
        ],
        name="inner",
    )
    inp = keras.Input((8,), name="x")
    out = keras.layers.Dense(3, name="head")(inner(inp))
    g = build_graph(keras.Model(inp, out))
    assert [n.name for n in g.topological_order()] == [
        "x",
        "inner/d1",
        "inner/d1/relu",
        "inner/d2",
        "head",
        "output_0",
    ]
    assert [e.src for e in g.in_edges("head")] == ["inner/d2"]
    seq = build_graph(digits_cnn())
    assert [n.kind for n in seq.topological_order()][:4] == [K.INPUT, K.CONVOLUTION, K.RELU, K.CONVOLUTION]


def test_keras_ops_in_functional_models_are_nodes():
    inp = keras.Input((4, 4, 2), name="x")
    a = keras.layers.Conv2D(2, 1, name="c")(inp)
    y = keras.ops.add(a, inp)
    y = keras.ops.reshape(y, (-1, 32))
    g = build_graph(keras.Model(inp, y))
    order = [n.kind for n in g.topological_order()]
    assert order == [K.INPUT, K.CONVOLUTION, K.ADD, K.RESHAPE, K.OUTPUT]


def test_shared_layer_calls_get_numbered_names():
    inp = keras.Input((4,), name="x")
    d = keras.layers.Dense(4, name="shared")
    out = d(d(inp))
    g = build_graph(keras.Model(inp, out))
    assert [n.name for n in g.topological_order()] == ["x", "shared", "shared_1", "output_0"]
    assert g.node("shared").weights[1].name == g.node("shared_1").weights[1].name


def test_unknown_layers_are_named_in_a_warning():
    inp = keras.Input((4,), name="x")
    y = keras.layers.Dense(4, name="d")(inp)
    y = keras.layers.UnitNormalization(name="unit")(y)
    with pytest.warns(NNCompressWarning, match="UnitNormalization"):
        g = build_graph(keras.Model(inp, y))
    assert g.node("unit").kind == K.UNKNOWN


def test_subclassed_and_unbuilt_models_are_refused_clearly():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(GraphError, match="subclassed"):
        build_graph(net)
    with pytest.raises(GraphError, match="no known input shape"):
        build_graph(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(GraphError, match="keras.Model"):
        build_graph(object())


def test_backend_detection_and_adapter():
    model = resnet_like()
    assert detect_backend(model) == "tensorflow"
    adapter = get_adapter("tensorflow")
    graph = adapter.build_graph(model, np.zeros((1, 16, 16, 3), "float32"))
    assert "b1_conv1" in graph
    w = adapter.get_weight(model, "b1_conv1", 1)
    assert np.array_equal(w, model.get_layer("b1_conv1").kernel.numpy())
    assert adapter.get_bias(model, "fc").shape == (10,)
    assert adapter.get_bias(model, "b1_conv1") is None


def test_import_nncompress_tensorflow_package_does_not_import_tensorflow():
    code = "import nncompress, nncompress.tensorflow, sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
