"""One network in torch and in Keras with the same weights: the same tensors get quantizers, same ranges.

The Keras model is the torch one in channels-last layout (kernels transposed, inputs NHWC).
Both backends keep BatchNorm unfolded, place quantizers under the same CPU rules and calibrate
on the same data; quantizers are matched by position (the op kinds they serve, in
topological order) as in the torch/ONNX/OpenVINO cross-backend test.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow is not installed (pip install nncompress[tensorflow])"
)
torch = pytest.importorskip("torch", reason="torch is needed for the cross-backend comparison")

import keras  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tf_models import sqnr  # noqa: E402
from torch import nn  # noqa: E402

import nncompress  # noqa: E402
from nncompress.graph import op_kinds as K  # noqa: E402
from nncompress.hardware.rules import load_rules  # noqa: E402
from nncompress.quantization.advanced_parameters import AdvancedQuantizationParameters  # noqa: E402
from nncompress.quantization.algorithms import MinMaxQuantization  # noqa: E402
from nncompress.quantization.placement import place_quantizers  # noqa: E402
from nncompress.tensorflow import Adapter as KerasAdapter  # noqa: E402
from nncompress.torch.adapter import Adapter as TorchAdapter  # noqa: E402

LAYERS = K.CONVOLUTION_KINDS | {K.MATMUL}


class TorchNet(nn.Module):
    """conv-bn-relu, conv-bn + residual add + relu, max pool, depthwise-relu, pointwise-relu, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        z = F.relu(self.bn2(self.conv2(y)) + y)
        z = self.pool(z)
        z = F.relu(self.dw(z))
        z = F.relu(self.pw(z))
        z = F.adaptive_avg_pool2d(z, 1).flatten(1)
        return self.fc(z)


def build_torch() -> TorchNet:
    torch.manual_seed(0)
    model = TorchNet()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def keras_twin(t: TorchNet) -> keras.Model:
    """The same network in Keras (NHWC), with ``t``'s weights."""

    def conv(w):
        return w.detach().numpy().transpose(2, 3, 1, 0)

    def bn(name, m):
        layer = keras.layers.BatchNormalization(epsilon=m.eps, name=name)
        return layer, [m.weight, m.bias, m.running_mean, m.running_var]

    inp = keras.Input((16, 16, 3), name="x")
    conv1 = keras.layers.Conv2D(8, 3, padding="same", name="conv1")
    bn1, bn1_w = bn("bn1", t.bn1)
    conv2 = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv2")
    bn2, bn2_w = bn("bn2", t.bn2)
    dw = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")
    pw = keras.layers.Conv2D(16, 1, activation="relu", name="pw")
    fc = keras.layers.Dense(10, name="fc")
    y = keras.layers.ReLU(name="relu1")(bn1(conv1(inp)))
    z = keras.layers.ReLU(name="relu2")(keras.layers.Add(name="add")([bn2(conv2(y)), y]))
    z = keras.layers.MaxPooling2D(2, name="pool")(z)
    z = pw(dw(z))
    z = keras.layers.GlobalAveragePooling2D(name="gap")(z)
    model = keras.Model(inp, fc(z))

    conv1.set_weights([conv(t.conv1.weight), t.conv1.bias.detach().numpy()])
    conv2.set_weights([conv(t.conv2.weight)])
    for layer, tensors in ((bn1, bn1_w), (bn2, bn2_w)):
        layer.set_weights([p.detach().numpy() for p in tensors])
    dw.set_weights([t.dw.weight.detach().numpy().transpose(2, 3, 0, 1), t.dw.bias.detach().numpy()])
    pw.set_weights([conv(t.pw.weight), t.pw.bias.detach().numpy()])
    fc.set_weights([t.fc.weight.detach().numpy().T, t.fc.bias.detach().numpy()])
    return model


def calibrate(adapter, model, inputs):
    graph = adapter.build_graph(model, inputs[0])
    placement = place_quantizers(graph, load_rules("CPU"))
    result = MinMaxQuantization(subset_size=len(inputs)).calibrate(model, graph, adapter, inputs, placement)
    return graph, placement, result.params


def activation_rows(graph, placement, params):
    """(kinds served, low, high, levels) of every activation quantizer, in order of its first consumer."""
    order = {n.name: i for i, n in enumerate(graph.topological_order())}
    rows = []
    for p in placement.activation_points:
        first = min(order[c] for c, _ in p.consumers)
        kinds = tuple(sorted(graph.node(c).kind for c, _ in p.consumers))
        qp = params[p.target]
        rows.append((first, kinds, float(np.min(qp.input_low)), float(np.max(qp.input_high)), qp.levels))
    return [row[1:] for row in sorted(rows)]


def weight_rows(graph, placement, params):
    """(kind, number of output channels, scales) of every weight quantizer, in topological order."""
    order = {n.name: i for i, n in enumerate(graph.topological_order())}
    rows = []
    for p in placement.weight_points:
        node = graph.node(p.target.node)
        if node.kind in LAYERS:
            w = node.weights[p.target.port]
            rows.append(
                (order[node.name], node.kind, w.shape[w.out_channel_axis], np.asarray(params[p.target].scale))
            )
    return [row[1:] for row in sorted(rows, key=lambda r: r[0])]


def test_same_quantizers_and_ranges_in_torch_and_keras():
    t = build_torch()
    k = keras_twin(t)
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(4, 3, 16, 16)).astype("float32") for _ in range(6)]
    with torch.no_grad():
        ref = np.concatenate([t(torch.from_numpy(d)).numpy() for d in data])
    nhwc = [d.transpose(0, 2, 3, 1) for d in data]
    assert np.allclose(np.concatenate([k(d).numpy() for d in nhwc]), ref, atol=1e-4)  # the same network

    runs = {
        "torch": calibrate(TorchAdapter(), t, [torch.from_numpy(d) for d in data]),
        "keras": calibrate(KerasAdapter(), k, nhwc),
    }
    acts = {name: activation_rows(*run) for name, run in runs.items()}
    assert len(acts["torch"]) >= 5
    assert [r[0] for r in acts["keras"]] == [r[0] for r in acts["torch"]]  # same tensors, same consumers
    assert [r[3] for r in acts["keras"]] == [r[3] for r in acts["torch"]]
    got = np.array([r[1:3] for r in acts["keras"]])
    want = np.array([r[1:3] for r in acts["torch"]])
    assert np.allclose(got, want, rtol=1e-3, atol=1e-5)

    weights = {name: weight_rows(*run) for name, run in runs.items()}
    assert [(kind, c) for kind, c, _ in weights["keras"]] == [(kind, c) for kind, c, _ in weights["torch"]]
    assert len(weights["keras"]) == 5
    for (_, _, a), (_, _, b) in zip(weights["keras"], weights["torch"]):
        assert np.allclose(a, b, rtol=1e-5)


def test_quantized_torch_and_keras_models_agree():
    t = build_torch()
    k = keras_twin(t)
    rng = np.random.default_rng(1)
    data = [rng.normal(size=(4, 3, 16, 16)).astype("float32") for _ in range(6)]
    nhwc = [d.transpose(0, 2, 3, 1) for d in data]
    quiet = AdvancedQuantizationParameters(show_progress=False)
    q_t = nncompress.quantize(
        t, nncompress.Dataset([torch.from_numpy(d) for d in data]), advanced_parameters=quiet
    )
    q_k = nncompress.quantize(k, nncompress.Dataset(nhwc), advanced_parameters=quiet)
    with torch.no_grad():
        ref = np.concatenate([t(torch.from_numpy(d)).numpy() for d in data])
        out_t = np.concatenate([q_t(torch.from_numpy(d)).numpy() for d in data])
    out_k = np.concatenate([q_k(d).numpy() for d in nhwc])
    assert sqnr(ref, out_t) > 25 and sqnr(ref, out_k) > 25
    # the two quantized models are closer to one another than to the float model
    assert sqnr(out_t, out_k) > max(sqnr(ref, out_t), sqnr(ref, out_k))
